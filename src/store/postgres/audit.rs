//! The audit chain (under its own advisory lock) and witnessed heads on PostgreSQL.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::*;
use crate::crypto::Digest;
use crate::store::*;

pub(super) fn row_to_anchor(row: &Row) -> Result<AuditAnchor, StoreError> {
    Ok(AuditAnchor {
        seq: row.try_get::<_, i64>(0).map_err(db)? as u64,
        hash: row.try_get(1).map_err(db)?,
    })
}

pub(super) async fn read_anchor(c: &impl GenericClient) -> Result<Option<AuditAnchor>, StoreError> {
    c.query_opt("SELECT seq, hash FROM audit_anchor WHERE id = 1", &[])
        .await
        .map_err(db)?
        .as_ref()
        .map(row_to_anchor)
        .transpose()
}

pub(super) async fn read_audit_head(
    c: &impl GenericClient,
) -> Result<Option<AuditAnchor>, StoreError> {
    let stmt = c
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .await
        .map_err(db)?;
    match c.query_opt(&stmt, &[]).await.map_err(db)? {
        Some(row) => row_to_anchor(&row).map(Some),
        None => read_anchor(c).await,
    }
}

/// A batch of audit events as columns, for one multi-row insert.
#[derive(Default)]
pub(super) struct AuditColumns {
    seq: Vec<i64>,
    time: Vec<i64>,
    caller: Vec<String>,
    method: Vec<String>,
    records: Vec<String>,
    code: Vec<String>,
    request_id: Vec<String>,
    prev_hash: Vec<Vec<u8>>,
    hash: Vec<Vec<u8>>,
    digest: Vec<&'static str>,
}

/// Takes the audit lock for the rest of the caller's transaction, chains `events` onto the
/// trail and returns the last sequence number. (A record write takes the feed lock first, then
/// this one; nothing takes them in the other order.)
pub(super) async fn insert_audit_events(
    tx: &impl GenericClient,
    events: Vec<NewAuditEvent>,
    digest: Digest,
) -> Result<u64, StoreError> {
    lock(tx, AUDIT_LOCK).await?;
    let head = read_audit_head(tx).await?;
    let mut seq = head.as_ref().map_or(0, |h| h.seq);
    // One statement for the whole batch: columns as arrays, unnested into rows.
    let mut rows = AuditColumns::default();
    for linked in chain(head, events, digest) {
        let e = linked.event;
        rows.records.push(encode_audit_records(&e.records)?);
        seq = linked.seq;
        rows.seq.push(linked.seq as i64);
        rows.time.push(e.time);
        rows.caller.push(e.caller);
        rows.method.push(e.method);
        rows.code.push(e.code);
        rows.request_id.push(e.request_id);
        rows.prev_hash.push(linked.prev_hash);
        rows.hash.push(linked.hash);
        rows.digest.push(digest.name());
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO audit (seq, time, caller, method, records, code, request_id, prev_hash, hash, digest) \
             SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], \
             $6::TEXT[], $7::TEXT[], $8::BYTEA[], $9::BYTEA[], $10::TEXT[])",
        )
        .await
        .map_err(db)?;
    tx.execute(
        &stmt,
        &[
            &rows.seq,
            &rows.time,
            &rows.caller,
            &rows.method,
            &rows.records,
            &rows.code,
            &rows.request_id,
            &rows.prev_hash,
            &rows.hash,
            &rows.digest,
        ],
    )
    .await
    .map_err(db)?;
    Ok(seq)
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn append_audit(&self, events: Vec<NewAuditEvent>) -> Result<u64, StoreError> {
        let pool = self.pool.clone();
        let digest = self.chain;
        tokio::spawn(async move {
            let mut conn = pool.get().await.map_err(pool_error)?;
            let tx = conn.transaction().await.map_err(db)?;
            let seq = insert_audit_events(&tx, events, digest).await?;
            tx.commit().await.map_err(db)?;
            Ok(seq)
        })
        .await
        .map_err(|e| unavailable(format!("store task failed: {e}")))?
    }

    async fn audit_events(&self, q: AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let mut f = Filters::new(
            "SELECT seq, time, caller, method, records, code, request_id, prev_hash, hash, digest \
             FROM audit WHERE seq > $1"
                .into(),
        );
        f.args.push(Box::new(q.after_seq as i64));
        if let Some(since) = q.since {
            f.push("time >=", since);
        }
        if let Some(until) = q.until {
            f.push("time <", until);
        }
        f.eq("caller", &q.caller);
        f.eq("method", &q.method);
        f.eq("code", &q.code);
        let (sql, f) = f.finish("seq", q.limit);
        let conn = self.conn().await?;
        let rows = conn.query(&sql, &f.params()).await.map_err(db)?;
        rows.iter()
            .map(|r| {
                let records: String = r.try_get(4).map_err(db)?;
                let records = decode_audit_records(records);
                let seq = r.try_get::<_, i64>(0).map_err(db)? as u64;
                Ok(AuditEvent {
                    seq,
                    event: NewAuditEvent {
                        time: r.try_get(1).map_err(db)?,
                        caller: r.try_get(2).map_err(db)?,
                        method: r.try_get(3).map_err(db)?,
                        records,
                        code: r.try_get(5).map_err(db)?,
                        request_id: r.try_get(6).map_err(db)?,
                    },
                    prev_hash: r.try_get(7).map_err(db)?,
                    hash: r.try_get(8).map_err(db)?,
                    digest: decode_audit_digest(seq, r.try_get(9).map_err(db)?)?,
                })
            })
            .collect()
    }

    async fn audit_anchor(&self) -> Result<Option<AuditAnchor>, StoreError> {
        let conn = self.conn().await?;
        read_anchor(&conn).await
    }

    async fn audit_head(&self) -> Result<Option<AuditAnchor>, StoreError> {
        let conn = self.conn().await?;
        read_audit_head(&conn).await
    }

    async fn prune_audit(&self, through: u64) -> Result<AuditAnchor, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db)?;
        lock(&tx, AUDIT_LOCK).await?;
        let through_seq = through as i64;
        let hash: Vec<u8> = tx
            .query_opt("SELECT hash FROM audit WHERE seq = $1", &[&through_seq])
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound)?
            .try_get(0)
            .map_err(db)?;
        tx.execute("DELETE FROM audit WHERE seq <= $1", &[&through_seq])
            .await
            .map_err(db)?;
        tx.execute(
            "INSERT INTO audit_anchor (id, seq, hash) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            &[&through_seq, &hash],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(AuditAnchor { seq: through, hash })
    }

    async fn put_witnessed_head(&self, h: WitnessedHead) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO witnessed_heads (party, seq, hash, time, signed, scheme, signature, signer) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            &[
                &h.party,
                &(h.seq as i64),
                &h.hash,
                &h.time,
                &h.signed,
                &i32::from(h.scheme),
                &h.signature,
                &h.signer,
            ],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn witnessed_heads(&self, party: &str) -> Result<Vec<WitnessedHead>, StoreError> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT party, seq, hash, time, signed, scheme, signature, signer FROM witnessed_heads \
                 WHERE party = $1 ORDER BY seq",
                &[&party],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let scheme: i32 = r.try_get(5).map_err(db)?;
                Ok(WitnessedHead {
                    party: r.try_get(0).map_err(db)?,
                    seq: r.try_get::<_, i64>(1).map_err(db)? as u64,
                    hash: r.try_get(2).map_err(db)?,
                    time: r.try_get(3).map_err(db)?,
                    signed: r.try_get(4).map_err(db)?,
                    scheme: u16::try_from(scheme)
                        .map_err(|_| StoreError::Corrupt(format!("signature scheme {scheme}")))?,
                    signature: r.try_get(6).map_err(db)?,
                    signer: r.try_get(7).map_err(db)?,
                })
            })
            .collect()
    }
}
