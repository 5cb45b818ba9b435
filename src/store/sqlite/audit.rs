//! The audit chain and witnessed heads on SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{SqliteStore, cached_row, limit, unavailable};
use crate::crypto::Digest;
use crate::store::*;

pub(super) fn read_anchor(conn: &Connection) -> Result<Option<AuditAnchor>, StoreError> {
    cached_row(
        conn,
        "SELECT seq, hash FROM audit_anchor WHERE id = 1",
        [],
        |r| {
            Ok(AuditAnchor {
                seq: r.get::<_, i64>(0)? as u64,
                hash: r.get(1)?,
            })
        },
    )
    .optional()
    .map_err(unavailable)
}

pub(super) fn read_audit_head(conn: &Connection) -> Result<Option<AuditAnchor>, StoreError> {
    let last = cached_row(
        conn,
        "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
        [],
        |r| {
            Ok(AuditAnchor {
                seq: r.get::<_, i64>(0)? as u64,
                hash: r.get(1)?,
            })
        },
    )
    .optional()
    .map_err(unavailable)?;
    match last {
        Some(head) => Ok(Some(head)),
        None => read_anchor(conn),
    }
}

pub(super) fn append_audit_events(
    conn: &mut Connection,
    events: Vec<NewAuditEvent>,
    digest: Digest,
) -> Result<u64, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    let last = insert_audit_events(&tx, events, digest)?;
    tx.commit().map_err(unavailable)?;
    Ok(last)
}

/// Chains `events` onto the trail by `digest` inside the caller's transaction (on the writer
/// connection, so the head read here is the current one) and returns the last sequence number.
pub(super) fn insert_audit_events(
    tx: &Connection,
    events: Vec<NewAuditEvent>,
    digest: Digest,
) -> Result<u64, StoreError> {
    let head = read_audit_head(tx)?;
    let mut last = head.as_ref().map_or(0, |h| h.seq);
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO audit (seq, time, caller, method, records, code, request_id, prev_hash, hash, digest) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .map_err(unavailable)?;
    for linked in chain(head, events, digest) {
        let e = &linked.event;
        stmt.execute(params![
            linked.seq as i64,
            e.time,
            e.caller,
            e.method,
            encode_audit_records(&e.records)?,
            e.code,
            e.request_id,
            linked.prev_hash,
            linked.hash,
            digest.name()
        ])
        .map_err(unavailable)?;
        last = linked.seq;
    }
    Ok(last)
}

pub(super) fn query_audit(
    conn: &Connection,
    q: &AuditQuery,
) -> Result<Vec<AuditEvent>, StoreError> {
    let mut sql = String::from(
        "SELECT seq, time, caller, method, records, code, request_id, prev_hash, hash, digest \
         FROM audit WHERE seq > ?",
    );
    let mut args: Vec<rusqlite::types::Value> = vec![(q.after_seq as i64).into()];
    if let Some(since) = q.since {
        sql.push_str(" AND time >= ?");
        args.push(since.into());
    }
    if let Some(until) = q.until {
        sql.push_str(" AND time < ?");
        args.push(until.into());
    }
    for (column, value) in [
        ("caller", &q.caller),
        ("method", &q.method),
        ("code", &q.code),
    ] {
        if let Some(v) = value {
            sql.push_str(&format!(" AND {column} = ?"));
            args.push(v.clone().into());
        }
    }
    sql.push_str(" ORDER BY seq");
    sql.push_str(&limit(q.limit));
    let mut stmt = conn.prepare_cached(&sql).map_err(unavailable)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, Vec<u8>>(7)?,
                r.get::<_, Vec<u8>>(8)?,
                r.get::<_, Option<String>>(9)?,
            ))
        })
        .map_err(unavailable)?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, time, caller, method, records, code, request_id, prev_hash, hash, digest) =
            row.map_err(unavailable)?;
        let records = decode_audit_records(records);
        let digest = decode_audit_digest(seq as u64, digest)?;
        out.push(AuditEvent {
            seq: seq as u64,
            event: NewAuditEvent {
                time,
                caller,
                method,
                records,
                code,
                request_id,
            },
            prev_hash,
            hash,
            digest,
        });
    }
    Ok(out)
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, events: Vec<NewAuditEvent>) -> Result<u64, StoreError> {
        let digest = self.chain;
        self.with_writer(move |c| append_audit_events(c, events, digest))
            .await
    }

    async fn audit_events(&self, query: AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.read(move |c| query_audit(c, &query)).await
    }

    async fn audit_anchor(&self) -> Result<Option<AuditAnchor>, StoreError> {
        self.read(read_anchor).await
    }

    async fn audit_head(&self) -> Result<Option<AuditAnchor>, StoreError> {
        self.read(read_audit_head).await
    }

    async fn prune_audit(&self, through: u64) -> Result<AuditAnchor, StoreError> {
        self.with_writer(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let hash: Vec<u8> = tx
                .query_row(
                    "SELECT hash FROM audit WHERE seq = ?1",
                    params![through as i64],
                    |r| r.get(0),
                )
                .optional()
                .map_err(unavailable)?
                .ok_or(StoreError::NotFound)?;
            tx.execute("DELETE FROM audit WHERE seq <= ?1", params![through as i64])
                .map_err(unavailable)?;
            tx.execute(
                "INSERT INTO audit_anchor (id, seq, hash) VALUES (1, ?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                params![through as i64, hash],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(AuditAnchor { seq: through, hash })
        })
        .await
    }

    async fn put_witnessed_head(&self, h: WitnessedHead) -> Result<(), StoreError> {
        self.with_writer(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO witnessed_heads (party, seq, hash, time, signed, scheme, signature, signer) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![h.party, h.seq as i64, h.hash, h.time, h.signed, h.scheme, h.signature, h.signer],
            )
            .map(|_| ())
            .map_err(unavailable)
        })
        .await
    }

    async fn witnessed_heads(&self, party: &str) -> Result<Vec<WitnessedHead>, StoreError> {
        let party = party.to_string();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT party, seq, hash, time, signed, scheme, signature, signer FROM witnessed_heads \
                     WHERE party = ?1 ORDER BY seq",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![party], |r| {
                    Ok(WitnessedHead {
                        party: r.get(0)?,
                        seq: r.get::<_, i64>(1)? as u64,
                        hash: r.get(2)?,
                        time: r.get(3)?,
                        signed: r.get(4)?,
                        scheme: r.get(5)?,
                        signature: r.get(6)?,
                        signer: r.get(7)?,
                    })
                })
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
        .await
    }
}
