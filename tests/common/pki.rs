//! A development PKI in a temporary folder, and client configs and certificates issued from it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;
use yrd_gateway::crypto::Profile;
use yrd_gateway::identity::pki::{Authority, Issued, LeafSpec};
use yrd_gateway::identity::tls;

use super::*;

/// A development PKI in a temporary folder.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: Authority,
    pub profile: Profile,
}

impl Pki {
    /// Where `party`'s gateway certificate and key are (for a test playing that gateway).
    pub fn gateway_paths(&self, party: &str) -> yrd_gateway::identity::tls::TlsPaths {
        yrd_gateway::identity::tls::TlsPaths {
            ca: self.dir.join("ca.crt"),
            cert: self.dir.join(party).join("gateway.crt"),
            key: self.dir.join(party).join("gateway.key"),
            crl: None,
            profile: self.profile,
            intl_clients: None,
            pkcs11: None,
            evidence_cas: vec![],
        }
    }

    pub fn new(root: &Path) -> Pki {
        Self::new_in(root, Profile::Intl)
    }

    /// A development PKI of `profile` (SM2 certificates in `gm`).
    pub fn new_in(root: &Path, profile: Profile) -> Pki {
        let dir = root.join("certs");
        let parties: Vec<String> = PARTIES.iter().map(|s| s.to_string()).collect();
        yrd_gateway::identity::pki::init_dev_pki(&dir, TRUST_DOMAIN, &parties, profile)
            .expect("dev pki");
        let ca = Authority::from_pem(
            &std::fs::read_to_string(dir.join("ca.crt")).unwrap(),
            &std::fs::read_to_string(dir.join("ca.key")).unwrap(),
        )
        .unwrap();
        Pki { dir, ca, profile }
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Client config presenting `<party>/<stem>.crt` (stem: "client" or "gateway").
    pub fn client_config(&self, party: &str, stem: &str) -> Arc<ClientConfig> {
        let d = self.dir.join(party);
        tls::client_config(
            self.profile,
            &self.ca_path(),
            &d.join(format!("{stem}.crt")),
            &d.join(format!("{stem}.key")),
        )
        .unwrap()
    }

    /// Writes an issued certificate and key under the PKI folder and returns a client config
    /// presenting them.
    pub fn client_config_for(&self, name: &str, issued: &Issued) -> Arc<ClientConfig> {
        let crt = self.dir.join(format!("{name}.crt"));
        let key = self.dir.join(format!("{name}.key"));
        std::fs::write(&crt, &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        tls::client_config_for(&self.ca_path(), &crt, &key).unwrap()
    }

    /// Issues a client certificate for `party`/`system` from the federation CA.
    pub fn issue_client(&self, party: &str, system: &str) -> Issued {
        self.ca
            .issue(&LeafSpec::client(TRUST_DOMAIN, party, system))
            .unwrap()
    }
}
