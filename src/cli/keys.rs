//! `yrd-gateway keys`: the keys of data at rest — making a key-encryption key file, and what a
//! gateway's key ring holds.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::Config;
use crate::vault::cipher::Algorithm;
use crate::vault::kek::Kek;

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Write a new random key-encryption key to FILE (which must not exist), readable by its
    /// owner only; name it in the config as `[keys] kek_file`.
    Init {
        #[arg(long, value_name = "FILE")]
        kek: PathBuf,
        /// Crypto profile: intl (an AES-256 key) or gm (an SM4 key).
        #[arg(long, default_value = "intl")]
        profile: crate::crypto::Profile,
    },
    /// What the key ring of the gateway configured in FILE holds (it may be running).
    Status {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

pub fn run(
    command: KeysCommand,
    overrides: &std::collections::HashMap<String, String>,
) -> anyhow::Result<()> {
    match command {
        KeysCommand::Init { kek, profile } => {
            let algorithm = Algorithm::of(profile);
            let id = Kek::create(&kek, algorithm)?;
            say!(
                "created {} ({}, key {id}); keep it apart from the store and its backups",
                kek.display(),
                algorithm.as_str()
            );
        }
        KeysCommand::Status { config } => {
            let config = Config::load(&config, overrides)?;
            let keys = config.keys.as_ref().with_context(|| {
                format!(
                    "{} has no [keys]: its records are stored in clear",
                    config.party
                )
            })?;
            let vault = crate::vault::Vault::open(keys, config.tls.profile)?;
            let counts = vault.ring().counts()?;
            say!(
                "{}: key ring {}, key-encryption key {} ({}), {} live data keys, {} destroyed; new keys {}",
                config.party,
                keys.ring.display(),
                vault.ring().kek_id(),
                keys.kek_file.display(),
                counts.live,
                counts.destroyed,
                vault.algorithm().as_str()
            );
        }
    }
    Ok(())
}
