//! Replicated changes, cursors and evidence on SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::records::{append_log, get_record, upsert_record};
use super::{SqliteStore, cached_row, unavailable};
use crate::store::*;

pub(super) fn read_cursor(conn: &Connection, owner: &str) -> Result<u64, StoreError> {
    cached_row(
        conn,
        "SELECT seq FROM cursors WHERE owner = ?1",
        params![owner],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .map(|s| s.unwrap_or(0) as u64)
    .map_err(unavailable)
}

pub(super) fn apply_batch(conn: &mut Connection, batch: ReplicaBatch) -> Result<u64, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    let mut cursor = read_cursor(&tx, &batch.owner)?;
    tx.execute(
        "INSERT OR IGNORE INTO signers (fingerprint, certificate) VALUES (?1, ?2)",
        params![batch.signer.0, batch.signer.1],
    )
    .map_err(unavailable)?;
    let manifest = batch.manifest.as_ref().map(|m| m.digest.as_slice());
    if let Some(m) = &batch.manifest {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO manifests (digest, owner, manifest, scheme, signature, signer) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                m.digest,
                batch.owner,
                m.manifest,
                m.scheme,
                m.signature,
                batch.signer.0
            ])
        })
        .map_err(unavailable)?;
    }
    for change in changes_to_apply(&batch.owner, cursor, batch.changes)? {
        if let Some(rec) = &change.record {
            if rec.supersedes(get_record(&tx, rec.kind, rec.id)?.as_ref()) {
                upsert_record(&tx, rec)?;
            }
            append_log(&tx, &batch.owner, change.seq, change.time, &rec.encode()?)?;
        }
        let e = &change.evidence;
        tx.prepare_cached(
            "INSERT INTO evidence \
             (owner, seq, envelope, scheme, signature, signer, received, manifest) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                batch.owner,
                change.seq as i64,
                e.envelope,
                e.scheme,
                e.signature,
                e.signer,
                batch.received,
                manifest
            ])
        })
        .map_err(unavailable)?;
        cursor = change.seq;
    }
    tx.execute(
        "INSERT INTO cursors (owner, seq, time) VALUES (?1, ?2, ?3) \
         ON CONFLICT (owner) DO UPDATE SET seq = excluded.seq, time = excluded.time",
        params![batch.owner, cursor as i64, batch.received],
    )
    .map_err(unavailable)?;
    tx.commit().map_err(unavailable)?;
    Ok(cursor)
}

#[async_trait]
impl ReplicaStore for SqliteStore {
    async fn cursor(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_string();
        self.read(move |c| read_cursor(c, &owner)).await
    }

    async fn evidence(
        &self,
        owner: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvidence>, StoreError> {
        let owner = owner.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(EVIDENCE_QUERY).map_err(unavailable)?;
            let rows = stmt
                .query_map(params![owner, after_seq as i64, limit as i64], |r| {
                    let digest: Option<Vec<u8>> = r.get(5)?;
                    let manifest = match (&digest, r.get::<_, Option<Vec<u8>>>(6)?) {
                        (Some(digest), Some(manifest)) => Some(SignedManifest {
                            digest: digest.clone(),
                            manifest,
                            scheme: r.get(7)?,
                            signature: r.get(8)?,
                        }),
                        _ => None,
                    };
                    Ok(StoredEvidence {
                        seq: r.get::<_, i64>(0)? as u64,
                        envelope: r.get(1)?,
                        scheme: r.get(2)?,
                        signature: r.get(3)?,
                        signer: r.get(4)?,
                        manifest_digest: digest,
                        manifest,
                        received: r.get(9)?,
                    })
                })
                .map_err(unavailable)?;
            rows.collect::<Result<_, _>>().map_err(unavailable)
        })
        .await
    }

    async fn apply_replicas(&self, batch: ReplicaBatch) -> Result<u64, StoreError> {
        self.with_writer(move |c| apply_batch(c, batch)).await
    }
}
