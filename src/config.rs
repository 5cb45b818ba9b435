//! Gateway configuration: a TOML file deserialized into [`RawConfig`] (unknown keys refused),
//! then validated into [`Config`]. Every error names the key it is about, and all of it happens
//! before any port is bound.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::domain::{Federation, MembershipError};
use crate::identity::tls::TlsPaths;
use crate::store::StoreConfig;

/// The trust domain of the SPIFFE ids when the config names none.
pub const DEFAULT_TRUST_DOMAIN: &str = "yrd-huzhou";

/// Largest gRPC message accepted when the config sets no limit (4 MiB, tonic's own default).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Admin HTTP address (metrics, status page) when the config names none: loopback only.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

/// A configuration problem, always naming the key (or the file) it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl From<MembershipError> for ConfigError {
    fn from(e: MembershipError) -> Self {
        ConfigError::invalid(e.key, e.message)
    }
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

mod crypto;
mod raw;
mod template;

pub use crypto::{RawCrypto, RawIntlClients, RawKeys, RawPkcs11, RawTls};
pub use raw::{
    RawAccess, RawAdmin, RawAudit, RawConfig, RawLimits, RawListen, RawLog, RawParty, RawPeer,
    RawSharing, RawStore,
};
pub use template::{ConfigTemplate, party_table};

/// Where a configuration was read from, so a running gateway can read it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSource {
    pub path: PathBuf,
    /// The environment overrides it was read with (kept for every later reading).
    pub env: HashMap<String, String>,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The party this gateway serves; always a member of `federation`.
    pub party: String,
    pub trust_domain: String,
    pub federation: Federation,
    pub listen_grpc: SocketAddr,
    pub tls: TlsPaths,
    pub store: StoreConfig,
    /// Keys of data at rest (`[keys]`); `None`: records are stored in clear.
    pub keys: Option<crate::vault::KeysConfig>,
    pub log: LogConfig,
    /// Client systems of this party limited to reads.
    pub read_only_systems: BTreeSet<String>,
    pub max_message_bytes: usize,
    pub limits: Limits,
    /// Admin HTTP listener: Prometheus metrics, status page.
    pub admin_listen: SocketAddr,
    /// How often the signed audit chain head is sent to peers.
    pub witness_interval: std::time::Duration,
    /// When providers must answer access requests filed here (`[sharing]`).
    pub deadlines: crate::workdays::Deadlines,
    /// The coordinating party (`[sharing] coordinator`): receives every access request and
    /// answer, and escalated disputes.
    pub coordinator: String,
    /// Peers whose change logs this gateway pulls.
    pub peers: Vec<PeerConfig>,
    /// Publish the default catalog at start for record kinds this party has no entry for
    /// (`[sharing] default_catalog`, default true; see [`crate::sharing::default_catalog`]).
    pub default_catalog: bool,
    /// The file it was read from; None when built from text (then it is never read again).
    pub source: Option<ConfigSource>,
}

/// A peer gateway to pull from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub party: String,
    pub address: String,
    pub server_name: String,
}

/// Protective limits, applied to every call by one tower layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Unary calls taking longer get DEADLINE_EXCEEDED (streams are not cut).
    pub call_timeout: std::time::Duration,
    /// Unary calls in progress at once; more get RESOURCE_EXHAUSTED at once.
    pub max_concurrent_calls: usize,
    /// Streams (Watch, peers' PullChanges) open at once, counted apart from unary calls: a
    /// federation of N parties holds N−1 peer streams open at every gateway all the time.
    pub max_open_streams: usize,
    /// Sustained calls per second one caller identity may make (0: unlimited).
    pub calls_per_second_per_caller: u32,
    /// Calls one caller may make in a burst above the sustained rate.
    pub burst_per_caller: u32,
    /// How long SIGTERM waits for in-flight calls before exiting anyway.
    pub shutdown_grace: std::time::Duration,
    /// What a connection may hold before its TLS handshake is done.
    pub handshakes: crate::identity::tls::HandshakeLimits,
    /// A peer stream silent for this long is closed and opened again.
    pub peer_idle_timeout: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout: std::time::Duration::from_secs(30),
            max_concurrent_calls: 256,
            max_open_streams: 1024,
            calls_per_second_per_caller: 1000,
            burst_per_caller: 2000,
            shutdown_grace: std::time::Duration::from_secs(10),
            handshakes: crate::identity::tls::HandshakeLimits::default(),
            peer_idle_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// Connections a PostgreSQL store keeps open unless `store.pool_size` says otherwise.
pub const DEFAULT_POOL_SIZE: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter directive, e.g. "info" or "yrd_gateway=debug,info".
    pub level: String,
}

impl Config {
    /// Reads and validates a config file. `env` holds environment overrides (`YRD_LOG_FORMAT`,
    /// `YRD_LOG_LEVEL`, `YRD_LISTEN_GRPC`, `YRD_LISTEN_ADMIN`, `YRD_CRYPTO_PROFILE`, and
    /// `YRD_STORE_URL` with
    /// `YRD_STORE_PASSWORD_FILE`, which switch the store to PostgreSQL); it is passed in so
    /// tests never touch the process env.
    pub fn load(path: &Path, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::from_toml(&text, path, env)?;
        config.source = Some(ConfigSource {
            path: path.to_owned(),
            env: env.clone(),
        });
        Ok(config)
    }

    /// Parses and validates TOML text; relative paths resolve against `path`'s folder.
    pub fn from_toml(
        text: &str,
        path: &Path,
        env: &HashMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        raw.validate(&base, env)
    }
}

#[cfg(test)]
mod tests;
