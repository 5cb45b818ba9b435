//! Replicated changes, cursors and evidence on SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::records::{append_log, get_record, row_to_record, upsert_record};
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
            let position = append_log(&tx, &batch.owner, change.seq, change.time, rec)?;
            if rec.supersedes(get_record(&tx, rec.kind, rec.id)?.as_ref()) {
                upsert_record(&tx, rec, position)?;
            }
        }
        let e = &change.evidence;
        tx.prepare_cached(
            "INSERT INTO evidence \
             (owner, seq, envelope, scheme, signature, signer, received, manifest, erased_sha256) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
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
                manifest,
                e.erased_sha256
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

fn take_back_changes(
    conn: &mut Connection,
    owner: &str,
    changes: Vec<Change>,
) -> Result<u64, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    let mut head = cached_row(
        &tx,
        "SELECT COALESCE(MAX(seq), 0) FROM log WHERE owner = ?1",
        params![owner],
        |r| r.get::<_, i64>(0),
    )
    .map_err(unavailable)? as u64;
    for change in changes_to_take_back(owner, head, changes)? {
        let rec = &change.record;
        let position = append_log(&tx, owner, change.seq, change.time, rec)?;
        if rec.supersedes(get_record(&tx, rec.kind, rec.id)?.as_ref()) {
            upsert_record(&tx, rec, position)?;
        }
        head = change.seq;
    }
    tx.commit().map_err(unavailable)?;
    Ok(head)
}

pub(super) fn set_restored(conn: &Connection, time: Option<i64>) -> Result<(), StoreError> {
    match time {
        Some(time) => conn.execute(
            "INSERT INTO restored (one, time) VALUES (1, ?1) \
             ON CONFLICT (one) DO UPDATE SET time = excluded.time",
            params![time],
        ),
        None => conn.execute("DELETE FROM restored", []),
    }
    .map(|_| ())
    .map_err(unavailable)
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
                        erased_sha256: r.get(10)?,
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

    async fn restored_mark(&self) -> Result<Option<i64>, StoreError> {
        self.read(|c| {
            c.query_row("SELECT time FROM restored", [], |r| r.get(0))
                .optional()
                .map_err(unavailable)
        })
        .await
    }

    async fn set_restored_mark(&self, time: Option<i64>) -> Result<(), StoreError> {
        self.with_writer(move |c| set_restored(c, time)).await
    }

    async fn take_back(&self, owner: &str, changes: Vec<Change>) -> Result<u64, StoreError> {
        let owner = owner.to_string();
        self.with_writer(move |c| take_back_changes(c, &owner, changes))
            .await
    }

    async fn redact(&self, redaction: Redaction) -> Result<Redacted, StoreError> {
        let done = self
            .with_writer(move |c| redact_copies(c, &redaction))
            .await?;
        // The rewritten pages were zeroed where the old content stood (secure_delete); the old
        // versions of the pages are in the WAL until it is checkpointed and truncated.
        self.checkpoint().await?;
        Ok(done)
    }
}

/// Rewrites every stored copy `redaction` changes, in one transaction: change-log entries
/// and the records that name them, then the kept evidence.
fn redact_copies(conn: &mut Connection, redaction: &Redaction) -> Result<Redacted, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    let mut done = Redacted::default();
    redact_log_and_records(&tx, redaction, &mut done)?;
    redact_evidence(&tx, redaction, &mut done)?;
    tx.commit().map_err(unavailable)?;
    Ok(done)
}

/// The change-log entries `redaction` rewrites or deletes, and the records they are current
/// versions of (deleted with them when the kind is erased).
fn redact_log_and_records(
    tx: &Connection,
    redaction: &Redaction,
    done: &mut Redacted,
) -> Result<(), StoreError> {
    let (owner, kind) = (redaction.owner.as_str(), redaction.kind.as_str());
    // A record's row names the change-log entry of its current version, so rewriting the
    // entries rewrites the records; rows go with their entries when the kind is erased.
    let logged: Vec<(i64, StoredRecord)> = {
        let mut stmt = tx
            .prepare(&format!(
                "SELECT position, {VERSION_COLUMNS} FROM log WHERE owner = ?1"
            ))
            .map_err(unavailable)?;
        let rows = stmt
            .query_map(params![owner], |r| {
                let position: i64 = r.get(0)?;
                Ok(row_to_record(r, 1)?.map(|rec| (position, rec)))
            })
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(unavailable)??);
        }
        out
    };
    let mut rewritten = std::collections::HashSet::new();
    for (position, version) in logged {
        let erases = match redact_logged(redaction, version)? {
            LoggedCopy::Keep => continue,
            LoggedCopy::Rewrite(new, erases) => {
                if erases {
                    rewritten.insert(position);
                }
                tx.execute(
                    "UPDATE log SET body = ?1 WHERE position = ?2",
                    params![new.body, position],
                )
                .map(|_| erases)
            }
            LoggedCopy::Delete => tx
                .execute("DELETE FROM log WHERE position = ?1", params![position])
                .map(|_| true),
        }
        .map_err(unavailable)?;
        if erases {
            done.log_entries += 1;
        }
    }
    if redaction.delete_records {
        done.records = tx
            .execute(
                "DELETE FROM records WHERE kind = ?1 AND owner = ?2",
                params![kind, owner],
            )
            .map_err(unavailable)? as u64;
    } else {
        let mut stmt = tx
            .prepare("SELECT position FROM records WHERE kind = ?1 AND owner = ?2")
            .map_err(unavailable)?;
        let current = stmt
            .query_map(params![kind, owner], |r| r.get::<_, i64>(0))
            .map_err(unavailable)?;
        for position in current {
            if rewritten.contains(&position.map_err(unavailable)?) {
                done.records += 1;
            }
        }
    }
    Ok(())
}

/// The kept envelopes `redaction` rewrites; each keeps the digest of the envelope as received
/// ([`envelope_digest`]), so its signature still proves what arrived.
fn redact_evidence(
    tx: &Connection,
    redaction: &Redaction,
    done: &mut Redacted,
) -> Result<(), StoreError> {
    let owner = redaction.owner.as_str();
    // Sequence number, envelope, digest kept at an earlier erasure, signature code.
    type Kept = (i64, Vec<u8>, Option<Vec<u8>>, u16);
    let kept: Vec<Kept> = {
        let mut stmt = tx
            .prepare("SELECT seq, envelope, erased_sha256, scheme FROM evidence WHERE owner = ?1")
            .map_err(unavailable)?;
        let rows = stmt
            .query_map(params![owner], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .map_err(unavailable)?;
        rows.collect::<Result<_, _>>().map_err(unavailable)?
    };
    for (seq, envelope, erased, scheme) in kept {
        if let Some(new) = (redaction.envelope)(seq as u64, &envelope, scheme)? {
            let counted = new.erased_from.is_some();
            let kept = erased.or(new.erased_from);
            tx.execute(
                "UPDATE evidence SET envelope = ?1, erased_sha256 = ?2 WHERE owner = ?3 AND seq = ?4",
                params![new.envelope, kept, owner, seq],
            )
            .map_err(unavailable)?;
            if counted {
                done.evidence += 1;
            }
        }
    }
    Ok(())
}
