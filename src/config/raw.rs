//! The config file as written ([`RawConfig`], every table refusing keys it does not know) and
//! its validation into [`Config`], one named step per section.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::*;
use crate::domain::{Federation, PartyInfo, check_party_id};
use crate::store::StoreConfig;
use crate::workdays::{Deadlines, WorkCalendar};

/// The file as written. Every table refuses keys it does not know.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Party id of the party this gateway serves.
    pub party: String,
    pub trust_domain: Option<String>,
    pub listen: RawListen,
    pub tls: RawTls,
    /// The federation's crypto profile.
    #[serde(default)]
    pub crypto: RawCrypto,
    pub store: RawStore,
    /// Keys of data at rest; without it records are stored in clear.
    pub keys: Option<RawKeys>,
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
    /// Governed sharing: answer deadlines of access requests.
    #[serde(default)]
    pub sharing: RawSharing,
    /// The federation's members, in party order.
    #[serde(default)]
    pub parties: Vec<RawParty>,
    /// Peer gateways to pull changes from.
    #[serde(default)]
    pub peers: Vec<RawPeer>,
    /// The sharing rules of before the catalog: refused with the way to migrate them.
    #[serde(default)]
    pub share: Vec<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSharing {
    /// Working days a provider has to answer a conditional access request (default 10).
    pub answer_working_days: Option<u32>,
    /// Calendar file of statutory holidays and adjusted working days (default: none, so only
    /// weekends are days off).
    pub holiday_calendar: Option<PathBuf>,
    /// The coordinating party, which receives every access request and answer and settles
    /// disputes (default: the first of `[[parties]]`, the zone in the shipped federation).
    pub coordinator: Option<String>,
    /// Publish the default catalog entry of every record kind this party has none for, at
    /// start (default true).
    pub default_catalog: Option<bool>,
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
pub struct RawListen {
    pub grpc: String,
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
    pub ca_file: Option<PathBuf>,
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
                only_for("ca_file", self.ca_file.is_some(), "postgres")?;
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
                let options =
                    crate::store::postgres::PostgresOptions::parse(&url, password, pool_size)
                        .map_err(|e| {
                            ConfigError::invalid(
                                "store.url",
                                format!("not a PostgreSQL connection string: {e}"),
                            )
                        })?;
                let key = if self.ca_file.is_some() {
                    "store.ca_file"
                } else {
                    "store.url"
                };
                options
                    .with_tls(self.ca_file.map(&resolve))
                    .map(|options| StoreConfig::Postgres(Box::new(options)))
                    .map_err(|e| ConfigError::invalid(key, e))
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
    pub max_open_streams: Option<usize>,
    pub calls_per_second_per_caller: Option<u32>,
    pub burst_per_caller: Option<u32>,
    pub shutdown_grace_ms: Option<u64>,
    pub handshake_timeout_ms: Option<u64>,
    pub max_handshakes_in_progress: Option<usize>,
    pub max_handshakes_per_address: Option<usize>,
    pub peer_idle_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawParty {
    pub id: String,
    pub display_name: String,
    pub province: String,
    #[serde(default)]
    pub division_code: String,
    /// Suspended by the federation: see [`PartyInfo::suspended`].
    #[serde(default)]
    pub suspended: bool,
}

impl RawConfig {
    /// Turns the file as written into a typed config, or names the first bad key.
    pub fn validate(
        self,
        base: &Path,
        env: &HashMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let trust_domain = check_trust_domain(self.trust_domain)?;
        let federation = check_parties(self.parties, &self.party)?;
        let listen_grpc = check_address(
            "listen.grpc",
            env.get("YRD_LISTEN_GRPC")
                .cloned()
                .unwrap_or(self.listen.grpc),
            "0.0.0.0:50051",
        )?;
        let profile = self.crypto.check(env)?;
        let tls = self.tls.check(profile, &resolve)?;
        let store = self.store.with_env(env).check(resolve)?;
        let keys = self.keys.map(|k| k.check(resolve, &store)).transpose()?;
        let log = self.log.check(env)?;
        let read_only_systems = self.access.check()?;
        let (max_message_bytes, limits) = self.limits.check()?;
        let peers = check_peers(self.peers, &federation, &self.party)?;
        refuse_share(&self.share)?;
        let admin_listen = check_address(
            "admin.listen",
            env.get("YRD_LISTEN_ADMIN")
                .cloned()
                .or(self.admin.listen)
                .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.to_string()),
            "127.0.0.1:9090",
        )?;
        let witness_interval = self.audit.check()?;
        let default_catalog = self.sharing.default_catalog.unwrap_or(true);
        let (deadlines, coordinator) = self.sharing.check(resolve, &federation)?;
        Ok(Config {
            party: self.party,
            trust_domain,
            federation,
            listen_grpc,
            tls,
            store,
            keys,
            log,
            read_only_systems,
            max_message_bytes,
            limits,
            admin_listen,
            witness_interval,
            deadlines,
            coordinator,
            peers,
            default_catalog,
            source: None,
        })
    }
}

/// The trust domain of every SPIFFE id (the default when the config names none).
fn check_trust_domain(trust_domain: Option<String>) -> Result<String, ConfigError> {
    let trust_domain = trust_domain.unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.to_string());
    let ok = !trust_domain.is_empty()
        && trust_domain.len() <= 255
        && trust_domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !ok {
        return Err(ConfigError::invalid(
            "trust_domain",
            "must be lowercase letters, digits, '-' and '.'",
        ));
    }
    Ok(trust_domain)
}

/// The federation from `[[parties]]`, which must include this gateway's own `party`.
fn check_parties(parties: Vec<RawParty>, party: &str) -> Result<Federation, ConfigError> {
    let federation = Federation::new(
        parties
            .into_iter()
            .map(|p| PartyInfo {
                id: p.id,
                display_name: p.display_name,
                province: p.province,
                division_code: p.division_code,
                suspended: p.suspended,
            })
            .collect(),
    )?;
    check_party_id(party).map_err(|m| ConfigError::invalid("party", m))?;
    if !federation.contains(party) {
        return Err(ConfigError::invalid(
            "party",
            format!("`{party}` is not one of the [[parties]]"),
        ));
    }
    if !federation.is_active(party) {
        return Err(ConfigError::invalid(
            "party",
            format!(
                "`{party}` is suspended in [[parties]]: a suspended party's gateway does not serve"
            ),
        ));
    }
    Ok(federation)
}

/// A socket address at `key`; `example` shows the expected form in the error.
fn check_address(key: &str, value: String, example: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::invalid(key, format!("`{value}` is not an address like {example}"))
    })
}

/// The peers this gateway pulls from: members of the federation, not itself, each once.
fn check_peers(
    raw: Vec<RawPeer>,
    federation: &Federation,
    party: &str,
) -> Result<Vec<PeerConfig>, ConfigError> {
    let mut peers: Vec<PeerConfig> = Vec::new();
    for (i, p) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("peers[{i}].{k}");
        if !federation.contains(&p.party) {
            return Err(ConfigError::invalid(
                key("party"),
                format!("`{}` is not one of the [[parties]]", p.party),
            ));
        }
        if p.party == party {
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
    Ok(peers)
}

/// `[[share]]` blocks, from before the catalog decided what leaves: refused, saying how to
/// express them.
fn refuse_share(raw: &[toml::Value]) -> Result<(), ConfigError> {
    if raw.is_empty() {
        return Ok(());
    }
    Err(ConfigError::invalid(
        "share",
        "[[share]] blocks are replaced by the resource catalog: what leaves this gateway is \
         decided by the catalog entries it publishes and the access requests it approves. \
         Remove the [[share]] blocks. With `[sharing] default_catalog = true` (the default) \
         the gateway publishes at start, for each record kind it has no entry for, an entry \
         shared with every member in which a project's contact.phone is CONDITIONAL and open \
         to the members of its own province: the shipped [[share]] rules. A field you withheld \
         from some peers becomes a CONDITIONAL item open to the peers that did receive it \
         (`yrd-gateway client catalog update` or `publish --item contact.phone=conditional@anji,zone`); \
         a kind you did not send to a peer becomes a CONDITIONAL entry that the peer requests \
         and you approve (README, \"Catalog\" and \"Access requests\")",
    ))
}

impl RawStore {
    /// The same config file serves every replica; the environment points it at the party's
    /// database (`YRD_STORE_URL`, `YRD_STORE_PASSWORD_FILE`, `YRD_STORE_CA_FILE`).
    fn with_env(mut self, env: &HashMap<String, String>) -> Self {
        if let Some(url) = env.get("YRD_STORE_URL") {
            self.backend = "postgres".into();
            self.url = Some(url.clone());
            self.path = None;
        }
        if let Some(file) = env.get("YRD_STORE_PASSWORD_FILE") {
            self.password_file = Some(file.into());
        }
        if let Some(file) = env.get("YRD_STORE_CA_FILE") {
            self.ca_file = Some(file.into());
        }
        self
    }
}

impl RawLog {
    /// Format and filter, `YRD_LOG_FORMAT` and `YRD_LOG_LEVEL` overriding the file.
    fn check(self, env: &HashMap<String, String>) -> Result<LogConfig, ConfigError> {
        let format = env
            .get("YRD_LOG_FORMAT")
            .cloned()
            .or(self.format)
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
            .or(self.level)
            .unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            return Err(ConfigError::invalid(
                "log.level",
                format!("`{level}` is not a filter like \"info\" or \"yrd_gateway=debug\""),
            ));
        }
        Ok(LogConfig { format, level })
    }
}

impl RawAccess {
    /// The party systems that may only read.
    fn check(self) -> Result<BTreeSet<String>, ConfigError> {
        let mut read_only_systems = BTreeSet::new();
        for (i, s) in self.read_only_systems.into_iter().enumerate() {
            if crate::identity::check_system_name(&s).is_err() {
                return Err(ConfigError::invalid(
                    format!("access.read_only_systems[{i}]"),
                    format!("`{s}` is not a system name"),
                ));
            }
            read_only_systems.insert(s);
        }
        Ok(read_only_systems)
    }
}

impl RawLimits {
    /// The largest message accepted and the per-call limits, defaults filled in.
    fn check(self) -> Result<(usize, Limits), ConfigError> {
        let max_message_bytes = self.max_message_bytes.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        if !(1024..=64 * 1024 * 1024).contains(&max_message_bytes) {
            return Err(ConfigError::invalid(
                "limits.max_message_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        let defaults = Limits::default();
        let ms =
            |v: Option<u64>, d: std::time::Duration| v.map_or(d, std::time::Duration::from_millis);
        let limits = Limits {
            call_timeout: ms(self.call_timeout_ms, defaults.call_timeout),
            max_concurrent_calls: self
                .max_concurrent_calls
                .unwrap_or(defaults.max_concurrent_calls),
            max_open_streams: self.max_open_streams.unwrap_or(defaults.max_open_streams),
            calls_per_second_per_caller: self
                .calls_per_second_per_caller
                .unwrap_or(defaults.calls_per_second_per_caller),
            burst_per_caller: self.burst_per_caller.unwrap_or(defaults.burst_per_caller),
            shutdown_grace: ms(self.shutdown_grace_ms, defaults.shutdown_grace),
            handshakes: crate::identity::tls::HandshakeLimits {
                timeout: ms(self.handshake_timeout_ms, defaults.handshakes.timeout),
                in_progress: self
                    .max_handshakes_in_progress
                    .unwrap_or(defaults.handshakes.in_progress),
                per_address: self
                    .max_handshakes_per_address
                    .unwrap_or(defaults.handshakes.per_address),
            },
            peer_idle_timeout: ms(self.peer_idle_timeout_ms, defaults.peer_idle_timeout),
        };
        for (key, zero) in [
            (
                "limits.handshake_timeout_ms",
                limits.handshakes.timeout.is_zero(),
            ),
            (
                "limits.max_handshakes_in_progress",
                limits.handshakes.in_progress == 0,
            ),
            (
                "limits.max_handshakes_per_address",
                limits.handshakes.per_address == 0,
            ),
            (
                "limits.peer_idle_timeout_ms",
                limits.peer_idle_timeout.is_zero(),
            ),
            ("limits.max_open_streams", limits.max_open_streams == 0),
        ] {
            if zero {
                return Err(ConfigError::invalid(key, "must be greater than 0"));
            }
        }
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
        Ok((max_message_bytes, limits))
    }
}

impl RawSharing {
    /// The answer deadline with the holiday calendar it is counted over, and the coordinating
    /// party.
    fn check(
        self,
        resolve: impl Fn(PathBuf) -> PathBuf,
        federation: &Federation,
    ) -> Result<(Deadlines, String), ConfigError> {
        let coordinator = match self.coordinator {
            Some(c) if !federation.contains(&c) => {
                return Err(ConfigError::invalid(
                    "sharing.coordinator",
                    format!("`{c}` is not one of the [[parties]]"),
                ));
            }
            Some(c) => c,
            None => federation.parties()[0].id.clone(),
        };
        let answer_working_days = self
            .answer_working_days
            .unwrap_or(crate::workdays::DEFAULT_ANSWER_WORKING_DAYS);
        if !(1..=60).contains(&answer_working_days) {
            return Err(ConfigError::invalid(
                "sharing.answer_working_days",
                "must be 1 to 60 working days",
            ));
        }
        let calendar = match self.holiday_calendar {
            None => WorkCalendar::default(),
            Some(path) => WorkCalendar::load(&resolve(path)).map_err(|e| {
                ConfigError::invalid(
                    "sharing.holiday_calendar",
                    format!("{}: {}", e.key, e.message),
                )
            })?,
        };
        let deadlines = Deadlines {
            calendar: std::sync::Arc::new(calendar),
            answer_working_days,
        };
        Ok((deadlines, coordinator))
    }
}

impl RawAudit {
    /// How often the chain head is signed and sent to peers.
    fn check(self) -> Result<std::time::Duration, ConfigError> {
        let witness_interval =
            std::time::Duration::from_millis(self.witness_interval_ms.unwrap_or(30_000));
        if witness_interval.is_zero() {
            return Err(ConfigError::invalid(
                "audit.witness_interval_ms",
                "must be greater than 0",
            ));
        }
        Ok(witness_interval)
    }
}
