//! Gateway configuration: a TOML file deserialized into [`RawConfig`] (unknown keys refused),
//! then validated into [`Config`]. Every error names the key it is about, and all of it happens
//! before any port is bound.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The trust domain of the SPIFFE ids when the config names none.
pub const DEFAULT_TRUST_DOMAIN: &str = "yrd-huzhou";

/// Largest gRPC message accepted when the config sets no limit (4 MiB, tonic's own default).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

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

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The file as written. Every table refuses keys it does not know.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Party id of the party this gateway serves.
    pub party: String,
    pub trust_domain: Option<String>,
    pub listen: RawListen,
    pub tls: RawTls,
    pub store: RawStore,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub access: RawAccess,
    #[serde(default)]
    pub limits: RawLimits,
    /// The federation's members, in party order.
    #[serde(default)]
    pub parties: Vec<RawParty>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub grpc: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub backend: String,
    pub path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccess {
    /// Client systems of this party that may only read.
    #[serde(default)]
    pub read_only_systems: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_message_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawParty {
    pub id: String,
    pub display_name: String,
    pub province: String,
    #[serde(default)]
    pub division_code: String,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The party this gateway serves; always a member of `federation`.
    pub party: String,
    pub trust_domain: String,
    pub federation: Federation,
    pub listen_grpc: SocketAddr,
    pub tls: TlsPaths,
    pub store: StoreConfig,
    pub log: LogConfig,
    /// Client systems of this party limited to reads.
    pub read_only_systems: BTreeSet<String>,
    pub max_message_bytes: usize,
}

/// File paths of the gateway's TLS material (resolved against the config file's folder).
#[derive(Debug, Clone)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// Embedded SQLite database file.
    Sqlite { path: PathBuf },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter directive, e.g. "info" or "yrd_gateway=debug,info".
    pub level: String,
}

/// One member of the federation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartyInfo {
    pub id: String,
    pub display_name: String,
    pub province: String,
    pub division_code: String,
}

/// The federation's members in party order. The order is part of the contract: it breaks ties
/// between competing counter-proposals, so every gateway must be configured with the same list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Federation {
    parties: Vec<PartyInfo>,
}

impl Federation {
    /// Builds a federation from an ordered member list. Ids must be valid and distinct.
    pub fn new(parties: Vec<PartyInfo>) -> Result<Self, ConfigError> {
        if parties.is_empty() {
            return Err(ConfigError::invalid(
                "parties",
                "at least one party is required",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, p) in parties.iter().enumerate() {
            if let Err(m) = check_party_id(&p.id) {
                return Err(ConfigError::invalid(format!("parties[{i}].id"), m));
            }
            if !seen.insert(p.id.clone()) {
                return Err(ConfigError::invalid(
                    format!("parties[{i}].id"),
                    format!("party `{}` is listed twice", p.id),
                ));
            }
            if p.display_name.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("parties[{i}].display_name"),
                    "must not be empty",
                ));
            }
            let code = &p.division_code;
            if !(code.is_empty() || (code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()))) {
                return Err(ConfigError::invalid(
                    format!("parties[{i}].division_code"),
                    "must be six digits (GB/T 2260) or empty",
                ));
            }
        }
        Ok(Federation { parties })
    }

    /// Members in party order.
    pub fn parties(&self) -> &[PartyInfo] {
        &self.parties
    }

    pub fn get(&self, id: &str) -> Option<&PartyInfo> {
        self.parties.iter().find(|p| p.id == id)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// Position of a party in the federation's order.
    pub fn order_of(&self, id: &str) -> Option<usize> {
        self.parties.iter().position(|p| p.id == id)
    }
}

/// Party ids appear in resource names, SPIFFE ids and file names: lowercase ASCII only.
pub fn check_party_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 32
        && id.as_bytes()[0].is_ascii_lowercase()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{id}` is not a party id: 1-32 characters of a-z, 0-9 and '-', starting with a letter"
        ))
    }
}

impl Config {
    /// Reads and validates a config file. `env` holds environment overrides (`YRD_LOG_FORMAT`,
    /// `YRD_LOG_LEVEL`, `YRD_LISTEN_GRPC`); it is passed in so tests never touch the process env.
    pub fn load(path: &Path, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path, env)
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

impl RawConfig {
    /// Turns the file as written into a typed config, or names the first bad key.
    pub fn validate(
        self,
        base: &Path,
        env: &HashMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };

        let trust_domain = self
            .trust_domain
            .unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.to_string());
        let td_ok = !trust_domain.is_empty()
            && trust_domain.len() <= 255
            && trust_domain
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !td_ok {
            return Err(ConfigError::invalid(
                "trust_domain",
                "must be lowercase letters, digits, '-' and '.'",
            ));
        }

        let federation = Federation::new(
            self.parties
                .into_iter()
                .map(|p| PartyInfo {
                    id: p.id,
                    display_name: p.display_name,
                    province: p.province,
                    division_code: p.division_code,
                })
                .collect(),
        )?;
        check_party_id(&self.party).map_err(|m| ConfigError::invalid("party", m))?;
        if !federation.contains(&self.party) {
            return Err(ConfigError::invalid(
                "party",
                format!("`{}` is not one of the [[parties]]", self.party),
            ));
        }

        let grpc = env
            .get("YRD_LISTEN_GRPC")
            .cloned()
            .unwrap_or(self.listen.grpc);
        let listen_grpc: SocketAddr = grpc.parse().map_err(|_| {
            ConfigError::invalid(
                "listen.grpc",
                format!("`{grpc}` is not an address like 0.0.0.0:50051"),
            )
        })?;

        let store = match self.store.backend.as_str() {
            "sqlite" => {
                let path = self.store.path.ok_or_else(|| {
                    ConfigError::invalid("store.path", "required for the sqlite backend")
                })?;
                StoreConfig::Sqlite {
                    path: resolve(path),
                }
            }
            other => {
                return Err(ConfigError::invalid(
                    "store.backend",
                    format!("`{other}` is not a backend; use \"sqlite\""),
                ));
            }
        };

        let format = env
            .get("YRD_LOG_FORMAT")
            .cloned()
            .or(self.log.format)
            .unwrap_or_else(|| "text".into());
        let format = match format.as_str() {
            "json" => LogFormat::Json,
            "text" => LogFormat::Text,
            other => {
                return Err(ConfigError::invalid(
                    "log.format",
                    format!("`{other}` is not a format; use \"json\" or \"text\""),
                ));
            }
        };
        let level = env
            .get("YRD_LOG_LEVEL")
            .cloned()
            .or(self.log.level)
            .unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            return Err(ConfigError::invalid(
                "log.level",
                format!("`{level}` is not a filter like \"info\" or \"yrd_gateway=debug\""),
            ));
        }

        let mut read_only_systems = BTreeSet::new();
        for (i, s) in self.access.read_only_systems.into_iter().enumerate() {
            if crate::identity::check_system_name(&s).is_err() {
                return Err(ConfigError::invalid(
                    format!("access.read_only_systems[{i}]"),
                    format!("`{s}` is not a system name"),
                ));
            }
            read_only_systems.insert(s);
        }

        let max_message_bytes = self
            .limits
            .max_message_bytes
            .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        if !(1024..=64 * 1024 * 1024).contains(&max_message_bytes) {
            return Err(ConfigError::invalid(
                "limits.max_message_bytes",
                "must be between 1024 and 67108864",
            ));
        }

        Ok(Config {
            party: self.party,
            trust_domain,
            federation,
            listen_grpc,
            tls: TlsPaths {
                ca: resolve(self.tls.ca),
                cert: resolve(self.tls.cert),
                key: resolve(self.tls.key),
            },
            store,
            log: LogConfig { format, level },
            read_only_systems,
            max_message_bytes,
        })
    }
}

#[cfg(test)]
mod tests;
