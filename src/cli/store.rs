//! `yrd-gateway store`: backing up a party's store while its gateway runs, and putting a
//! backup in place on a new machine (embedded SQLite stores; a PostgreSQL store is backed up
//! with PostgreSQL's own `pg_dump`/`pg_restore`, see the operator guide).

use std::path::PathBuf;

use anyhow::bail;

use crate::config::Config;
use crate::store::StoreConfig;
use crate::store::sqlite::backup::{self, BackupSummary};

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Write a consistent copy of the store to a new file while the gateway runs.
    Backup {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The file to write; it must not exist.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Put a backup in place as the store of a stopped gateway (the store file named in the
    /// config must not exist yet). For a PostgreSQL store, run it without BACKUP after
    /// `pg_restore`: it marks the database restored. At its next start the gateway holds
    /// writes until every peer has given back the changes of this party it holds (those made
    /// after the backup), and pulls from its peers what it missed.
    Restore {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The backup file (SQLite stores).
        #[arg(value_name = "BACKUP")]
        backup: Option<PathBuf>,
    },
}

pub async fn run(
    command: StoreCommand,
    overrides: &std::collections::HashMap<String, String>,
) -> anyhow::Result<()> {
    let path = match &command {
        StoreCommand::Backup { config, .. } | StoreCommand::Restore { config, .. } => config,
    };
    let config = Config::load(path, overrides)?;
    let party = config.party.as_str();
    let summary = match (&config.store, &command) {
        (StoreConfig::Sqlite { path }, StoreCommand::Backup { out, .. }) => {
            ("backed up", out.clone(), backup::backup(path, out, party)?)
        }
        (
            StoreConfig::Sqlite { path },
            StoreCommand::Restore {
                backup: Some(b), ..
            },
        ) => ("restored", path.clone(), backup::restore(b, path, party)?),
        (StoreConfig::Sqlite { .. }, StoreCommand::Restore { backup: None, .. }) => {
            bail!(
                "name the backup file to restore: `yrd-gateway store restore --config FILE BACKUP`"
            )
        }
        (StoreConfig::Postgres(_), StoreCommand::Restore { backup: None, .. }) => {
            let store = crate::store::open(&config.store, config.tls.profile.digest()).await?;
            store
                .set_restored_mark(Some(crate::domain::now_micros()))
                .await?;
            say!(
                "{party}: the PostgreSQL store is marked restored; at its next start the gateway holds writes until every peer has given back the changes of {party} it holds"
            );
            return Ok(());
        }
        (StoreConfig::Postgres(_), _) => bail!(
            "the store of `{party}` is a PostgreSQL database: back it up with `pg_dump --format=custom`, \
             restore it with `pg_restore` into an empty database, then run \
             `yrd-gateway store restore --config FILE` without a backup file to mark it restored \
             (docs/operator.md, \"Backup and restore\")"
        ),
    };
    let (
        done,
        to,
        BackupSummary {
            bytes,
            own_head,
            audit_head,
        },
    ) = summary;
    say!(
        "{party} {done} to {}: {bytes} bytes, integrity ok, own change log through {own_head}, audit events through {audit_head}",
        to.display()
    );
    Ok(())
}
