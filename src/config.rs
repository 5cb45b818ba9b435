//! Gateway configuration: a TOML file deserialized into [`RawConfig`] (unknown keys refused),
//! then validated into [`Config`]. Every error names the key it is about, and all of it happens
//! before any port is bound.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::domain::{Federation, MembershipError, PartyInfo, RecordKind, check_party_id};
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
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub audit: RawAudit,
    /// The federation's members, in party order.
    #[serde(default)]
    pub parties: Vec<RawParty>,
    /// Peer gateways to pull changes from.
    #[serde(default)]
    pub peers: Vec<RawPeer>,
    /// What this party shares with each peer.
    #[serde(default)]
    pub share: Vec<RawShare>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeer {
    pub party: String,
    /// host:port of the peer's gRPC listener.
    pub address: String,
    /// Name the peer's certificate must carry; default: the host part of `address`.
    pub server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShare {
    pub peer: String,
    /// Record kinds the peer receives: "project", "allocation".
    pub kinds: Vec<String>,
    /// Field paths removed before a record leaves, e.g. "project.contact.phone".
    #[serde(default)]
    pub withhold: Vec<String>,
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
    /// Certificate revocation list (PEM), reloaded when it changes.
    pub crl: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// How often the signed audit chain head is sent to peers.
    pub witness_interval_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub backend: String,
    pub path: Option<PathBuf>,
    pub url: Option<String>,
    pub password_file: Option<PathBuf>,
    pub pool_size: Option<usize>,
}

impl RawStore {
    fn check(self, resolve: impl Fn(PathBuf) -> PathBuf) -> Result<StoreConfig, ConfigError> {
        let only_for = |key: &str, set: bool, backend: &str| {
            if set {
                Err(ConfigError::invalid(
                    format!("store.{key}"),
                    format!("only the {backend} backend takes this key"),
                ))
            } else {
                Ok(())
            }
        };
        match self.backend.as_str() {
            "sqlite" => {
                only_for("url", self.url.is_some(), "postgres")?;
                only_for("password_file", self.password_file.is_some(), "postgres")?;
                only_for("pool_size", self.pool_size.is_some(), "postgres")?;
                let path = self.path.ok_or_else(|| {
                    ConfigError::invalid("store.path", "required for the sqlite backend")
                })?;
                Ok(StoreConfig::Sqlite {
                    path: resolve(path),
                })
            }
            "postgres" => {
                only_for("path", self.path.is_some(), "sqlite")?;
                let url = self.url.ok_or_else(|| {
                    ConfigError::invalid(
                        "store.url",
                        "required for the postgres backend, e.g. \"postgres://yrd@db.internal:5432/yrd_zone\"",
                    )
                })?;
                let password = match self.password_file {
                    None => None,
                    Some(file) => {
                        let file = resolve(file);
                        let text = std::fs::read_to_string(&file).map_err(|e| {
                            ConfigError::invalid(
                                "store.password_file",
                                format!("cannot read {}: {e}", file.display()),
                            )
                        })?;
                        Some(text.trim_end_matches(['\r', '\n']).to_string())
                    }
                };
                let pool_size = self.pool_size.unwrap_or(DEFAULT_POOL_SIZE);
                if !(2..=1000).contains(&pool_size) {
                    return Err(ConfigError::invalid(
                        "store.pool_size",
                        format!("{pool_size} is not between 2 and 1000"),
                    ));
                }
                crate::store::postgres::PostgresOptions::parse(&url, password, pool_size)
                    .map(|options| StoreConfig::Postgres(Box::new(options)))
                    .map_err(|e| {
                        ConfigError::invalid(
                            "store.url",
                            format!("not a PostgreSQL connection string: {e}"),
                        )
                    })
            }
            other => Err(ConfigError::invalid(
                "store.backend",
                format!("`{other}` is not a backend; use \"sqlite\" or \"postgres\""),
            )),
        }
    }
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
    pub call_timeout_ms: Option<u64>,
    pub max_concurrent_calls: Option<usize>,
    pub calls_per_second_per_caller: Option<u32>,
    pub burst_per_caller: Option<u32>,
    pub shutdown_grace_ms: Option<u64>,
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
    pub limits: Limits,
    /// Admin HTTP listener: Prometheus metrics, status page.
    pub admin_listen: SocketAddr,
    /// How often the signed audit chain head is sent to peers.
    pub witness_interval: std::time::Duration,
    /// Peers whose change logs this gateway pulls.
    pub peers: Vec<PeerConfig>,
    /// This party's sharing policy, one entry per peer that receives anything.
    pub share: Vec<ShareRule>,
}

/// A peer gateway to pull from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub party: String,
    pub address: String,
    pub server_name: String,
}

/// What one peer receives of this party's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRule {
    pub peer: String,
    pub kinds: BTreeSet<RecordKind>,
    pub withhold: BTreeSet<String>,
}

/// Field paths a sharing policy may withhold, by record kind. Identity fields (name, owner,
/// id) and what a negotiation needs cannot be withheld.
pub const WITHHOLDABLE_FIELDS: &[&str] = &[
    "project.contact",
    "project.contact.name",
    "project.contact.phone",
    "project.service_officer",
    "project.investor.credit_code",
    "project.total_investment_yuan",
    "project.land_area_mu",
    "project.platform",
    "project.checklist",
    "project.labels",
    "allocation.description",
];

/// Protective limits, applied to every call by one tower layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Unary calls taking longer get DEADLINE_EXCEEDED (streams are not cut).
    pub call_timeout: std::time::Duration,
    /// Calls (and open streams) in progress at once; more get RESOURCE_EXHAUSTED at once.
    pub max_concurrent_calls: usize,
    /// Sustained calls per second one caller identity may make (0: unlimited).
    pub calls_per_second_per_caller: u32,
    /// Calls one caller may make in a burst above the sustained rate.
    pub burst_per_caller: u32,
    /// How long SIGTERM waits for in-flight calls before exiting anyway.
    pub shutdown_grace: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout: std::time::Duration::from_secs(30),
            max_concurrent_calls: 256,
            calls_per_second_per_caller: 1000,
            burst_per_caller: 2000,
            shutdown_grace: std::time::Duration::from_secs(10),
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

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter directive, e.g. "info" or "yrd_gateway=debug,info".
    pub level: String,
}

impl Config {
    /// Reads and validates a config file. `env` holds environment overrides (`YRD_LOG_FORMAT`,
    /// `YRD_LOG_LEVEL`, `YRD_LISTEN_GRPC`, `YRD_LISTEN_ADMIN`, and `YRD_STORE_URL` with
    /// `YRD_STORE_PASSWORD_FILE`, which switch the store to PostgreSQL); it is passed in so
    /// tests never touch the process env.
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

        let mut store = self.store;
        if let Some(url) = env.get("YRD_STORE_URL") {
            // The same config file serves every replica; the environment points it at the
            // party's database.
            store.backend = "postgres".into();
            store.url = Some(url.clone());
            store.path = None;
        }
        if let Some(file) = env.get("YRD_STORE_PASSWORD_FILE") {
            store.password_file = Some(file.into());
        }
        let store = store.check(resolve)?;

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

        let mut peers: Vec<PeerConfig> = Vec::new();
        for (i, p) in self.peers.into_iter().enumerate() {
            let key = |k: &str| format!("peers[{i}].{k}");
            if !federation.contains(&p.party) {
                return Err(ConfigError::invalid(
                    key("party"),
                    format!("`{}` is not one of the [[parties]]", p.party),
                ));
            }
            if p.party == self.party {
                return Err(ConfigError::invalid(
                    key("party"),
                    "a gateway does not pull from itself",
                ));
            }
            if peers.iter().any(|q| q.party == p.party) {
                return Err(ConfigError::invalid(
                    key("party"),
                    format!("`{}` is listed twice", p.party),
                ));
            }
            let host = match p.address.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                _ => {
                    return Err(ConfigError::invalid(
                        key("address"),
                        format!("`{}` is not host:port", p.address),
                    ));
                }
            };
            peers.push(PeerConfig {
                party: p.party,
                address: p.address,
                server_name: p.server_name.unwrap_or(host),
            });
        }

        let mut share: Vec<ShareRule> = Vec::new();
        for (i, r) in self.share.into_iter().enumerate() {
            let key = |k: &str| format!("share[{i}].{k}");
            if !federation.contains(&r.peer) || r.peer == self.party {
                return Err(ConfigError::invalid(
                    key("peer"),
                    format!("`{}` is not another member of the [[parties]]", r.peer),
                ));
            }
            if share.iter().any(|s| s.peer == r.peer) {
                return Err(ConfigError::invalid(
                    key("peer"),
                    format!("`{}` is listed twice", r.peer),
                ));
            }
            let mut kinds = BTreeSet::new();
            for (j, k) in r.kinds.iter().enumerate() {
                let kind = RecordKind::parse(k).ok_or_else(|| {
                    ConfigError::invalid(
                        format!("share[{i}].kinds[{j}]"),
                        format!(
                            "`{k}` is not a record kind; use project, allocation, decision, referral or referral_response"
                        ),
                    )
                })?;
                kinds.insert(kind);
            }
            let mut withhold = BTreeSet::new();
            for (j, f) in r.withhold.into_iter().enumerate() {
                if !WITHHOLDABLE_FIELDS.contains(&f.as_str()) {
                    return Err(ConfigError::invalid(
                        format!("share[{i}].withhold[{j}]"),
                        format!(
                            "`{f}` cannot be withheld; possible: {}",
                            WITHHOLDABLE_FIELDS.join(", ")
                        ),
                    ));
                }
                withhold.insert(f);
            }
            share.push(ShareRule {
                peer: r.peer,
                kinds,
                withhold,
            });
        }

        let defaults = Limits::default();
        let ms =
            |v: Option<u64>, d: std::time::Duration| v.map_or(d, std::time::Duration::from_millis);
        let limits = Limits {
            call_timeout: ms(self.limits.call_timeout_ms, defaults.call_timeout),
            max_concurrent_calls: self
                .limits
                .max_concurrent_calls
                .unwrap_or(defaults.max_concurrent_calls),
            calls_per_second_per_caller: self
                .limits
                .calls_per_second_per_caller
                .unwrap_or(defaults.calls_per_second_per_caller),
            burst_per_caller: self
                .limits
                .burst_per_caller
                .unwrap_or(defaults.burst_per_caller),
            shutdown_grace: ms(self.limits.shutdown_grace_ms, defaults.shutdown_grace),
        };
        if limits.call_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "limits.call_timeout_ms",
                "must be greater than 0",
            ));
        }
        if limits.max_concurrent_calls == 0 {
            return Err(ConfigError::invalid(
                "limits.max_concurrent_calls",
                "must be greater than 0",
            ));
        }
        if limits.calls_per_second_per_caller > 0 && limits.burst_per_caller == 0 {
            return Err(ConfigError::invalid(
                "limits.burst_per_caller",
                "must be greater than 0 when a rate is set",
            ));
        }
        let admin = env
            .get("YRD_LISTEN_ADMIN")
            .cloned()
            .or(self.admin.listen)
            .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.to_string());
        let admin_listen: SocketAddr = admin.parse().map_err(|_| {
            ConfigError::invalid(
                "admin.listen",
                format!("`{admin}` is not an address like 127.0.0.1:9090"),
            )
        })?;

        let witness_interval =
            std::time::Duration::from_millis(self.audit.witness_interval_ms.unwrap_or(30_000));
        if witness_interval.is_zero() {
            return Err(ConfigError::invalid(
                "audit.witness_interval_ms",
                "must be greater than 0",
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
                crl: self.tls.crl.map(resolve),
            },
            store,
            log: LogConfig { format, level },
            read_only_systems,
            max_message_bytes,
            limits,
            admin_listen,
            witness_interval,
            peers,
            share,
        })
    }
}

#[cfg(test)]
mod tests;

/// A config file to write, for `yrd-gateway dev`, tests and deployment templates. Renders the
/// same TOML an operator would write by hand.
#[derive(Debug, Clone)]
pub struct ConfigTemplate {
    pub party: String,
    pub trust_domain: String,
    pub listen_grpc: String,
    pub listen_admin: String,
    /// Folder holding `ca.crt` and `<party>/gateway.{crt,key}`, relative to the config file.
    pub certs_dir: String,
    /// Certificate revocation list path, if any.
    pub crl: Option<String>,
    pub store_path: String,
    /// A PostgreSQL connection string; when set, the store is PostgreSQL and `store_path`
    /// is not used.
    pub postgres_url: Option<String>,
    pub log_format: LogFormat,
    pub federation: Federation,
    /// (party, host:port) of each peer to pull from.
    pub peers: Vec<(String, String)>,
    pub share: Vec<ShareRule>,
}

/// The shipped default sharing policy of `party`: every other member receives every kind of
/// record (projects, allocations, decisions, referrals and their answers); contact phone
/// numbers do not cross a provincial border.
pub fn default_share_rules(federation: &Federation, party: &str) -> Vec<ShareRule> {
    let province = federation
        .get(party)
        .map(|p| p.province.as_str())
        .unwrap_or_default();
    federation
        .parties()
        .iter()
        .filter(|p| p.id != party)
        .map(|p| ShareRule {
            peer: p.id.clone(),
            kinds: RecordKind::ALL.into(),
            withhold: if p.province == province {
                BTreeSet::new()
            } else {
                ["project.contact.phone".to_string()].into()
            },
        })
        .collect()
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = items.into_iter().map(toml_str).collect();
    format!("[{}]", items.join(", "))
}

impl ConfigTemplate {
    pub fn render(&self) -> String {
        let party = &self.party;
        let certs = &self.certs_dir;
        let mut t = format!(
            "party = {}\ntrust_domain = {}\n\n[listen]\ngrpc = {}\n\n\
             [admin]\nlisten = {}\n\n\
             [tls]\nca = {}\ncert = {}\nkey = {}\n\n\
             [store]\n{}\n\n[log]\nformat = {}\n",
            toml_str(party),
            toml_str(&self.trust_domain),
            toml_str(&self.listen_grpc),
            toml_str(&self.listen_admin),
            toml_str(&format!("{certs}/ca.crt")),
            toml_str(&format!("{certs}/{party}/gateway.crt")),
            toml_str(&format!("{certs}/{party}/gateway.key")),
            match &self.postgres_url {
                None => format!(
                    "backend = \"sqlite\"\npath = {}",
                    toml_str(&self.store_path)
                ),
                Some(url) => format!("backend = \"postgres\"\nurl = {}", toml_str(url)),
            },
            toml_str(match self.log_format {
                LogFormat::Json => "json",
                LogFormat::Text => "text",
            }),
        );
        if let Some(crl) = &self.crl {
            t = t.replacen(
                "\n\n[store]",
                &format!("\ncrl = {}\n\n[store]", toml_str(crl)),
                1,
            );
        }
        t.push_str("\n# The federation, in party order: the same list at every party.\n");
        for p in self.federation.parties() {
            t.push_str(&format!(
                "[[parties]]\nid = {}\ndisplay_name = {}\nprovince = {}\ndivision_code = {}\n\n",
                toml_str(&p.id),
                toml_str(&p.display_name),
                toml_str(&p.province),
                toml_str(&p.division_code)
            ));
        }
        t.push_str("# Peer gateways whose change logs this gateway pulls.\n");
        for (peer, address) in &self.peers {
            t.push_str(&format!(
                "[[peers]]\nparty = {}\naddress = {}\n\n",
                toml_str(peer),
                toml_str(address)
            ));
        }
        t.push_str("# What each peer receives of this party's records.\n");
        for rule in &self.share {
            t.push_str(&format!(
                "[[share]]\npeer = {}\nkinds = {}\nwithhold = {}\n\n",
                toml_str(&rule.peer),
                toml_list(rule.kinds.iter().map(|k| k.as_str())),
                toml_list(rule.withhold.iter().map(String::as_str)),
            ));
        }
        t
    }
}
