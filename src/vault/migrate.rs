//! Sealing what a store holds in clear: a store written before encryption at rest, or by a
//! gateway without `[keys]`. Each owner's copies of each sealed kind are rewritten in one
//! transaction by a redaction that erases nothing, so an interrupted run leaves every owner and kind either
//! sealed or as it was, and the next start goes on; copies sealed already are only looked at.
//! SQLite zeroes the old pages and truncates its WAL after each; PostgreSQL keeps the old
//! row versions until VACUUM (the operator guide says what to run).

use std::time::Instant;

use super::{SealedStore, seals};
use crate::domain::RecordKind;
use crate::store::StoreError;

/// What a migration did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Migrated {
    /// Record versions and kept envelopes that were in clear and are now sealed.
    pub sealed: u64,
    pub millis: u128,
}

/// Seals every copy `store` holds in clear of `owners`' records (nothing without a vault).
pub async fn migrate(store: &SealedStore, owners: &[String]) -> Result<Migrated, StoreError> {
    if !store.seals() {
        return Ok(Migrated::default());
    }
    let started = Instant::now();
    let before = store.sealed_in_place();
    for owner in owners {
        for kind in RecordKind::ALL.into_iter().filter(|k| seals(*k)) {
            store.seal_in_place(owner, kind).await?;
        }
    }
    let done = Migrated {
        sealed: store.sealed_in_place() - before,
        millis: started.elapsed().as_millis(),
    };
    if done.sealed > 0 {
        tracing::warn!(
            sealed = done.sealed,
            millis = done.millis as u64,
            "copies found in clear were sealed at rest"
        );
    }
    Ok(done)
}
