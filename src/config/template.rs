//! Config files to write — for `yrd-gateway dev`, tests and deployment templates — rendered
//! as the TOML an operator would write by hand.

use super::*;
use crate::domain::Federation;

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
    /// Publish the default catalog at start (`[sharing] default_catalog`).
    pub default_catalog: bool,
    /// The federation's crypto profile (`[crypto] profile`, written when not the default).
    pub profile: crate::crypto::Profile,
    /// Seal records at rest (`[keys]`, with the key-encryption key and the ring in `keys/`
    /// beside the config; [`ConfigTemplate::make_keys`] writes the key file).
    pub keys: bool,
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
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
        if self.profile != crate::crypto::Profile::Intl {
            t = t.replacen(
                "\n\n[store]",
                &format!(
                    "\n\n# The federation's crypto profile: the same at every party.\n[crypto]\nprofile = {}\n\n[store]",
                    toml_str(self.profile.as_str())
                ),
                1,
            );
        }
        if self.keys {
            t = t.replacen(
                "\n\n[log]",
                &format!(
                    "\n\n# Keys of data at rest, kept apart from the store and its backups.\n\
                     [keys]\nkek_file = {}\nring = {}\n\n[log]",
                    toml_str(&self.kek_file()),
                    toml_str(&format!("keys/{party}.ring"))
                ),
                1,
            );
        }
        t.push_str(
            "\n# The federation, in party order: the same list at every party. A running gateway\n\
             # picks up changes to [[parties]] and [[peers]] within a second (a new party, one\n\
             # removed, `suspended = true`); see docs/operator.md, \"Changing the party list\".\n",
        );
        for p in self.federation.parties() {
            t.push_str(&party_table(p));
            t.push('\n');
        }
        t.push_str("# Peer gateways whose change logs this gateway pulls.\n");
        for (peer, address) in &self.peers {
            t.push_str(&format!(
                "[[peers]]\nparty = {}\naddress = {}\n\n",
                toml_str(peer),
                toml_str(address)
            ));
        }
        t.push_str(&format!(
            "# What leaves this gateway is decided by its catalog entries and the access requests\n\
             # it approves. With default_catalog, the gateway publishes at start the default\n\
             # entry of each record kind it has none for (contact phones conditional across\n\
             # provinces).\n[sharing]\ndefault_catalog = {}\n",
            self.default_catalog
        ));
        t
    }
}

impl ConfigTemplate {
    fn kek_file(&self) -> String {
        format!("keys/{}.kek", self.party)
    }

    /// With `keys`, writes the key-encryption key file the config names, relative to `dir`
    /// (the config file's folder), unless it exists.
    pub fn make_keys(&self, dir: &std::path::Path) -> Result<(), crate::vault::VaultError> {
        if !self.keys {
            return Ok(());
        }
        let path = dir.join(self.kek_file());
        if path.exists() {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                crate::vault::VaultError::Kek(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        crate::vault::kek::Kek::create(&path, crate::vault::cipher::Algorithm::of(self.profile))
            .map(|_| ())
    }
}

/// One `[[parties]]` table of a config file (or of a file of party lists).
pub fn party_table(p: &crate::domain::PartyInfo) -> String {
    format!(
        "[[parties]]\nid = {}\ndisplay_name = {}\nprovince = {}\ndivision_code = {}\n{}",
        toml_str(&p.id),
        toml_str(&p.display_name),
        toml_str(&p.province),
        toml_str(&p.division_code),
        if p.suspended {
            "suspended = true\n"
        } else {
            ""
        }
    )
}
