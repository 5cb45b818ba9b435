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
        #[arg(long, value_name = "FILE", required_unless_present = "pkcs11_module")]
        kek: Option<PathBuf>,
        /// Keep the key file when it exists (for a container's first start) instead of
        /// refusing.
        #[arg(long, requires = "kek")]
        if_missing: bool,
        /// Crypto profile: intl (an AES-256 key) or gm (an SM4 key). A key in a token is
        /// AES-256 in either.
        #[arg(long, default_value = "intl")]
        profile: crate::crypto::Profile,
        /// Instead of a file: make an AES-256 key in the PKCS#11 token this module serves
        /// (sensitive, not extractable), for `[keys.pkcs11]`.
        #[arg(long, value_name = "FILE", conflicts_with = "kek", requires_all = ["token", "key_label", "pin_file"])]
        pkcs11_module: Option<PathBuf>,
        /// The token's label.
        #[arg(long)]
        token: Option<String>,
        /// The label the new key gets.
        #[arg(long)]
        key_label: Option<String>,
        /// The file holding the token's user PIN.
        #[arg(long, value_name = "FILE")]
        pin_file: Option<PathBuf>,
    },
    /// What the key ring of the gateway configured in FILE holds (it may be running).
    Status {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Rotate the key-encryption key of the gateway configured in FILE while it runs: a new
    /// key (of the config's crypto profile) is written beside the key file, every data key of
    /// the ring is wrapped anew with it in one transaction (the old wrapped bytes are
    /// overwritten), and the new key replaces the key file. The running gateway follows.
    Rotate {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

pub fn run(
    command: KeysCommand,
    overrides: &std::collections::HashMap<String, String>,
) -> anyhow::Result<()> {
    match command {
        KeysCommand::Init {
            kek: None,
            pkcs11_module: Some(module),
            token: Some(token),
            key_label: Some(label),
            pin_file: Some(pin_file),
            ..
        } => {
            let spec = crate::identity::pem::Pkcs11KeySpec {
                module,
                token,
                label,
                pin_file,
            };
            let name = crate::identity::pkcs11::wrapping::TokenAes::generate(&spec)
                .map_err(anyhow::Error::msg)?;
            say!(
                "created the AES-256 key {name} (sensitive, not extractable); name it in [keys.pkcs11]"
            );
        }
        KeysCommand::Init {
            kek: Some(kek),
            if_missing: true,
            ..
        } if kek.exists() => {
            say!("kept {}", kek.display());
        }
        KeysCommand::Init {
            kek: Some(kek),
            profile,
            ..
        } => {
            let algorithm = Algorithm::of(profile);
            let id = Kek::create(&kek, algorithm)?;
            say!(
                "created {} ({}, key {id}); keep it apart from the store and its backups",
                kek.display(),
                algorithm.as_str()
            );
        }
        KeysCommand::Init { .. } => {
            anyhow::bail!(
                "name a key file (--kek FILE) or a token (--pkcs11-module, --token, --key-label, --pin-file)"
            )
        }
        KeysCommand::Rotate { config } => {
            let config = Config::load(&config, overrides)?;
            let keys = keys_of(&config)?;
            let crate::vault::KekSource::File(kek_file) = &keys.kek else {
                anyhow::bail!(
                    "the key-encryption key of {} is in a PKCS#11 token: `keys rotate` replaces key files only (see the operator guide, \"Data at rest\")",
                    config.party
                );
            };
            let vault = crate::vault::Vault::open(keys, config.tls.profile)?;
            let old = vault.ring().kek_id();
            let staged = crate::vault::keyring::staged(kek_file);
            anyhow::ensure!(
                !staged.exists(),
                "{} exists: an earlier rotation stopped before it finished; the gateway finishes it at its next start, or remove the file if the ring is not wrapped by it (`keys status`)",
                staged.display()
            );
            Kek::create(&staged, Algorithm::of(config.tls.profile))?;
            let new = Kek::from_file(&staged)?.from(kek_file);
            let id = new.id.clone();
            let count = vault.ring().rewrap(new)?;
            std::fs::rename(&staged, kek_file).with_context(|| {
                format!(
                    "the ring is wrapped by the new key in {}; move it over {} by hand",
                    staged.display(),
                    kek_file.display()
                )
            })?;
            if let Some(dir) = kek_file.parent()
                && let Ok(d) = std::fs::File::open(dir)
            {
                let _ = d.sync_all();
            }
            say!(
                "{}: {count} data keys wrapped by the new key-encryption key {id} (was {old}), now in {}; copies of the old key file (backups) no longer open this ring: destroy them",
                config.party,
                kek_file.display()
            );
        }
        KeysCommand::Status { config } => {
            let config = Config::load(&config, overrides)?;
            let keys = keys_of(&config)?;
            let vault = crate::vault::Vault::open(keys, config.tls.profile)?;
            let counts = vault.ring().counts()?;
            say!(
                "{}: key ring {}, key-encryption key {} ({}), {} live data keys, {} destroyed; new keys {}",
                config.party,
                keys.ring.display(),
                vault.ring().kek_id(),
                match &keys.kek {
                    crate::vault::KekSource::File(f) => f.display().to_string(),
                    crate::vault::KekSource::Token(t) => format!("token `{}`", t.token),
                },
                counts.live,
                counts.destroyed,
                vault.algorithm().as_str()
            );
        }
    }
    Ok(())
}

fn keys_of(config: &Config) -> anyhow::Result<&crate::vault::KeysConfig> {
    config.keys.as_ref().with_context(|| {
        format!(
            "{} has no [keys]: its records are stored in clear",
            config.party
        )
    })
}
