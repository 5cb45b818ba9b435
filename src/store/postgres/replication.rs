//! Replicated changes, cursors and evidence on PostgreSQL.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::records::{append_log, get_record, row_to_record, upsert_record};
use super::*;
use crate::store::*;

pub(super) async fn read_cursor(c: &impl GenericClient, owner: &str) -> Result<u64, StoreError> {
    let stmt = c
        .prepare_cached("SELECT seq FROM cursors WHERE owner = $1")
        .await
        .map_err(db)?;
    Ok(c.query_opt(&stmt, &[&owner])
        .await
        .map_err(db)?
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(0) as u64)
}

pub(super) async fn apply_batch(
    conn: &mut deadpool_postgres::Object,
    batch: ReplicaBatch,
) -> Result<u64, StoreError> {
    let tx = conn.transaction().await.map_err(db)?;
    let mut position = lock_feed(&tx).await?;
    let start = position;
    let mut cursor = read_cursor(&tx, &batch.owner).await?;
    keep_signer_and_manifest(&tx, &batch).await?;
    let manifest = batch.manifest.as_ref().map(|m| m.digest.as_slice());
    let evidence = tx
        .prepare_cached(
            "INSERT INTO evidence \
             (owner, seq, envelope, scheme, signature, signer, received, manifest, erased_sha256) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .await
        .map_err(db)?;
    for change in changes_to_apply(&batch.owner, cursor, batch.changes)? {
        let seq = change.seq as i64;
        if let Some(rec) = &change.record {
            let at = append_log(&tx, &mut position, &batch.owner, seq, change.time, rec).await?;
            if rec.supersedes(get_record(&tx, rec.kind, rec.id).await?.as_ref()) {
                upsert_record(&tx, rec, at).await?;
            }
        }
        let e = &change.evidence;
        tx.execute(
            &evidence,
            &[
                &batch.owner,
                &seq,
                &e.envelope,
                &i32::from(e.scheme),
                &e.signature,
                &e.signer,
                &batch.received,
                &manifest,
                &e.erased_sha256,
            ],
        )
        .await
        .map_err(db)?;
        cursor = change.seq;
    }
    tx.execute(
        "INSERT INTO cursors (owner, seq, time) VALUES ($1, $2, $3) \
         ON CONFLICT (owner) DO UPDATE SET seq = excluded.seq, time = excluded.time",
        &[&batch.owner, &(cursor as i64), &batch.received],
    )
    .await
    .map_err(db)?;
    if position > start {
        tx.execute("SELECT pg_notify($1, '')", &[&FEED_CHANNEL])
            .await
            .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(cursor)
}

/// The signer certificate and the batch manifest the evidence of `batch` refers to, each
/// kept once.
async fn keep_signer_and_manifest(
    tx: &impl GenericClient,
    batch: &ReplicaBatch,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO signers (fingerprint, certificate) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&batch.signer.0, &batch.signer.1],
    )
    .await
    .map_err(db)?;
    if let Some(m) = &batch.manifest {
        tx.execute(
            "INSERT INTO manifests (digest, owner, manifest, scheme, signature, signer) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[
                &m.digest,
                &batch.owner,
                &m.manifest,
                &i32::from(m.scheme),
                &m.signature,
                &batch.signer.0,
            ],
        )
        .await
        .map_err(db)?;
    }
    Ok(())
}

pub(super) async fn take_back_changes(
    conn: &mut deadpool_postgres::Object,
    owner: &str,
    changes: Vec<Change>,
) -> Result<u64, StoreError> {
    let tx = conn.transaction().await.map_err(db)?;
    let mut position = lock_feed(&tx).await?;
    let start = position;
    let row = tx
        .query_one(
            "SELECT COALESCE(MAX(seq), 0) FROM log WHERE owner = $1",
            &[&owner],
        )
        .await
        .map_err(db)?;
    let mut head = row.try_get::<_, i64>(0).map_err(db)? as u64;
    for change in changes_to_take_back(owner, head, changes)? {
        let rec = &change.record;
        let seq = change.seq as i64;
        let at = append_log(&tx, &mut position, owner, seq, change.time, rec).await?;
        if rec.supersedes(get_record(&tx, rec.kind, rec.id).await?.as_ref()) {
            upsert_record(&tx, rec, at).await?;
        }
        head = change.seq;
    }
    if position > start {
        tx.execute("SELECT pg_notify($1, '')", &[&FEED_CHANNEL])
            .await
            .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(head)
}

#[async_trait]
impl ReplicaStore for PostgresStore {
    async fn cursor(&self, owner: &str) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        read_cursor(&conn, owner).await
    }

    async fn evidence(
        &self,
        owner: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvidence>, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn.prepare_cached(EVIDENCE_QUERY).await.map_err(db)?;
        let rows = conn
            .query(&stmt, &[&owner, &(after_seq as i64), &(limit as i64)])
            .await
            .map_err(db)?;
        let scheme = |v: i32| {
            u16::try_from(v)
                .map_err(|_| StoreError::Corrupt(format!("signature scheme {v} out of range")))
        };
        rows.iter()
            .map(|r| {
                let digest: Option<Vec<u8>> = r.get(5);
                let manifest = match (&digest, r.get::<_, Option<Vec<u8>>>(6)) {
                    (Some(digest), Some(manifest)) => Some(SignedManifest {
                        digest: digest.clone(),
                        manifest,
                        scheme: scheme(r.get(7))?,
                        signature: r.get(8),
                    }),
                    _ => None,
                };
                Ok(StoredEvidence {
                    seq: r.get::<_, i64>(0) as u64,
                    envelope: r.get(1),
                    scheme: scheme(r.get(2))?,
                    signature: r.get(3),
                    signer: r.get(4),
                    manifest_digest: digest,
                    manifest,
                    received: r.get(9),
                    erased_sha256: r.get(10),
                })
            })
            .collect()
    }

    async fn redact(&self, redaction: Redaction) -> Result<Redacted, StoreError> {
        let pool = self.pool.clone();
        // Its own task, like a group commit: a cancelled caller cannot leave it half done.
        tokio::spawn(async move {
            let mut conn = pool.get().await.map_err(pool_error)?;
            redact_copies(&mut conn, &redaction).await
        })
        .await
        .map_err(|e| unavailable(format!("store task failed: {e}")))?
    }

    async fn apply_replicas(&self, batch: ReplicaBatch) -> Result<u64, StoreError> {
        let pool = self.pool.clone();
        // Its own task, like a group commit: a cancelled caller cannot leave it half done.
        tokio::spawn(async move {
            let mut conn = pool.get().await.map_err(pool_error)?;
            apply_batch(&mut conn, batch).await
        })
        .await
        .map_err(|e| unavailable(format!("store task failed: {e}")))?
    }

    async fn restored_mark(&self) -> Result<Option<i64>, StoreError> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt("SELECT time FROM restored", &[])
            .await
            .map_err(db)?;
        row.map(|r| r.try_get(0).map_err(db)).transpose()
    }

    async fn set_restored_mark(&self, time: Option<i64>) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        match time {
            Some(time) => {
                conn.execute(
                    "INSERT INTO restored (one, time) VALUES (1, $1) \
                     ON CONFLICT (one) DO UPDATE SET time = excluded.time",
                    &[&time],
                )
                .await
            }
            None => conn.execute("DELETE FROM restored", &[]).await,
        }
        .map(|_| ())
        .map_err(db)
    }

    async fn take_back(&self, owner: &str, changes: Vec<Change>) -> Result<u64, StoreError> {
        let pool = self.pool.clone();
        let owner = owner.to_string();
        tokio::spawn(async move {
            let mut conn = pool.get().await.map_err(pool_error)?;
            take_back_changes(&mut conn, &owner, changes).await
        })
        .await
        .map_err(|e| unavailable(format!("store task failed: {e}")))?
    }
}

/// Rewrites every stored copy `redaction` changes, in one transaction: change-log entries
/// and the records that name them, then the kept evidence. The old row versions stay in the
/// table's dead tuples until VACUUM reclaims them and later writes reuse the space.
async fn redact_copies(
    conn: &mut deadpool_postgres::Object,
    redaction: &Redaction,
) -> Result<Redacted, StoreError> {
    let tx = conn.transaction().await.map_err(db)?;
    let mut done = Redacted::default();
    redact_log_and_records(&tx, redaction, &mut done).await?;
    redact_evidence(&tx, redaction, &mut done).await?;
    tx.commit().await.map_err(db)?;
    Ok(done)
}

/// The change-log entries `redaction` rewrites or deletes, and the records they are current
/// versions of (deleted with them when the kind is erased).
async fn redact_log_and_records(
    tx: &impl GenericClient,
    redaction: &Redaction,
    done: &mut Redacted,
) -> Result<(), StoreError> {
    let (owner, kind) = (redaction.owner.as_str(), redaction.kind.as_str());
    // A record's row names the change-log entry of its current version, so rewriting the
    // entries rewrites the records; rows go with their entries when the kind is erased.
    let rows = tx
        .query(
            &format!("SELECT position, {VERSION_COLUMNS} FROM log WHERE owner = $1"),
            &[&owner],
        )
        .await
        .map_err(db)?;
    let mut rewritten = std::collections::HashSet::new();
    for row in rows {
        let position: i64 = row.try_get(0).map_err(db)?;
        let erases = match redact_logged(redaction, row_to_record(&row, 1)?)? {
            LoggedCopy::Keep => continue,
            LoggedCopy::Rewrite(new, erases) => {
                if erases {
                    rewritten.insert(position);
                }
                tx.execute(
                    "UPDATE log SET body = $1 WHERE position = $2",
                    &[&new.body, &position],
                )
                .await
                .map(|_| erases)
            }
            LoggedCopy::Delete => tx
                .execute("DELETE FROM log WHERE position = $1", &[&position])
                .await
                .map(|_| true),
        }
        .map_err(db)?;
        if erases {
            done.log_entries += 1;
        }
    }
    if redaction.delete_records {
        done.records = tx
            .execute(
                "DELETE FROM records WHERE kind = $1 AND owner = $2",
                &[&kind, &owner],
            )
            .await
            .map_err(db)?;
    } else {
        let current = tx
            .query(
                "SELECT position FROM records WHERE kind = $1 AND owner = $2",
                &[&kind, &owner],
            )
            .await
            .map_err(db)?;
        for row in current {
            if rewritten.contains(&row.try_get::<_, i64>(0).map_err(db)?) {
                done.records += 1;
            }
        }
    }
    Ok(())
}

/// The kept envelopes `redaction` rewrites; each keeps the digest of the envelope as received
/// ([`envelope_digest`]), so its signature still proves what arrived.
async fn redact_evidence(
    tx: &impl GenericClient,
    redaction: &Redaction,
    done: &mut Redacted,
) -> Result<(), StoreError> {
    let owner = redaction.owner.as_str();
    let rows = tx
        .query(
            "SELECT seq, envelope, erased_sha256, scheme FROM evidence WHERE owner = $1",
            &[&owner],
        )
        .await
        .map_err(db)?;
    for row in rows {
        let (seq, envelope, erased, scheme): (i64, Vec<u8>, Option<Vec<u8>>, i32) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let scheme = u16::try_from(scheme).unwrap_or_default();
        if let Some(new) = (redaction.envelope)(seq as u64, &envelope, scheme)? {
            let counted = new.erased_from.is_some();
            let kept = erased.or(new.erased_from);
            tx.execute(
                "UPDATE evidence SET envelope = $1, erased_sha256 = $2 WHERE owner = $3 AND seq = $4",
                &[&new.envelope, &kept, &owner, &seq],
            )
            .await
            .map_err(db)?;
            if counted {
                done.evidence += 1;
            }
        }
    }
    Ok(())
}
