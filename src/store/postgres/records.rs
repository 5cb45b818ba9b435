//! Records, group-committed writes under the feed lock, the change log and the feed on
//! PostgreSQL.

use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio::sync::watch;
use tokio_postgres::Row;
use uuid::Uuid;

use super::*;
use crate::domain::RecordKind;
use crate::store::*;

/// The record version in [`VERSION_COLUMNS`] order from column `at` on.
pub(super) fn row_to_record(row: &Row, at: usize) -> Result<StoredRecord, StoreError> {
    let kind: String = row.try_get(at).map_err(db)?;
    Ok(StoredRecord {
        kind: RecordKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown record kind `{kind}`")))?,
        id: row.try_get(at + 1).map_err(db)?,
        owner: row.try_get(at + 2).map_err(db)?,
        revision: row.try_get(at + 3).map_err(db)?,
        index: IndexFields {
            stage: row.try_get(at + 4).map_err(db)?,
            industry: row.try_get(at + 5).map_err(db)?,
            factor_kind: row.try_get(at + 6).map_err(db)?,
            parent: row.try_get(at + 7).map_err(db)?,
        },
        body: row.try_get(at + 8).map_err(db)?,
    })
}

/// A change-log entry from column `at` on: its seq, its time and the version
/// ([`VERSION_COLUMNS`]), whose owner is the log's.
pub(super) fn row_to_change(row: &Row, at: usize) -> Result<Change, StoreError> {
    let seq: i64 = row.try_get(at).map_err(db)?;
    let record = row_to_record(row, at + 2)?;
    Ok(Change {
        owner: record.owner.clone(),
        seq: seq as u64,
        time: row.try_get(at + 1).map_err(db)?,
        record,
    })
}

pub(super) static GET_RECORD: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("SELECT {VERSION_COLUMNS} FROM {CURRENT_RECORDS} WHERE kind = $1 AND id = $2")
});

const UPSERT_RECORD: &str = "INSERT INTO records \
     (kind, id, owner, stage, industry, factor_kind, parent, position) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (kind, id) DO UPDATE SET owner = excluded.owner, stage = excluded.stage, \
     industry = excluded.industry, factor_kind = excluded.factor_kind, \
     parent = excluded.parent, position = excluded.position";

pub(super) static INSERT_LOG: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO log (position, seq, time, {VERSION_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    )
});

pub(super) async fn get_record(
    c: &impl GenericClient,
    kind: RecordKind,
    id: Uuid,
) -> Result<Option<StoredRecord>, StoreError> {
    let stmt = c.prepare_cached(&GET_RECORD).await.map_err(db)?;
    c.query_opt(&stmt, &[&kind.as_str(), &id])
        .await
        .map_err(db)?
        .as_ref()
        .map(|row| row_to_record(row, 0))
        .transpose()
}

static LOOKUP_REQUEST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT q.fingerprint, q.response, {LOGGED_VERSION} FROM requests q \
         LEFT JOIN log l ON l.position = q.answer WHERE q.party = $1 AND q.request_id = $2"
    )
});

pub(super) async fn lookup_request(
    c: &impl GenericClient,
    key: &Idempotency,
) -> Result<Option<StoredRecord>, StoreError> {
    let stmt = c.prepare_cached(&LOOKUP_REQUEST).await.map_err(db)?;
    let Some(row) = c
        .query_opt(&stmt, &[&key.party, &key.request_id])
        .await
        .map_err(db)?
    else {
        return Ok(None);
    };
    let fingerprint: Vec<u8> = row.try_get(0).map_err(db)?;
    let copied: Option<String> = row.try_get(1).map_err(db)?;
    let logged: Option<String> = row.try_get(2).map_err(db)?;
    let answer = match (copied, logged) {
        (Some(text), _) => Some(StoredRecord::decode(&text)?),
        (None, Some(_)) => Some(row_to_record(&row, 2)?),
        (None, None) => None,
    };
    key.first_answer(&fingerprint, answer).map(Some)
}

/// Makes the version at change-log `position` (which holds `rec`) the record's current one.
pub(super) async fn upsert_record(
    c: &impl GenericClient,
    rec: &StoredRecord,
    position: i64,
) -> Result<(), StoreError> {
    let stmt = c.prepare_cached(UPSERT_RECORD).await.map_err(db)?;
    c.execute(
        &stmt,
        &[
            &rec.kind.as_str(),
            &rec.id,
            &rec.owner,
            &rec.index.stage,
            &rec.index.industry,
            &rec.index.factor_kind,
            &rec.index.parent,
            &position,
        ],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// Appends `rec` to `owner`'s change log as entry `seq` at feed position `*position + 1` (the
/// caller holds the feed lock); returns that position.
pub(super) async fn append_log(
    c: &impl GenericClient,
    position: &mut i64,
    owner: &str,
    seq: i64,
    time: i64,
    rec: &StoredRecord,
) -> Result<i64, StoreError> {
    rec.check_log_owner(owner)?;
    let stmt = c.prepare_cached(&INSERT_LOG).await.map_err(db)?;
    insert_log(c, &stmt, *position + 1, seq, time, rec).await?;
    *position += 1;
    Ok(*position)
}

/// Runs `insert` ([`INSERT_LOG`], prepared) for `rec` as entry `seq` at feed `position`.
async fn insert_log(
    c: &impl GenericClient,
    insert: &tokio_postgres::Statement,
    position: i64,
    seq: i64,
    time: i64,
    rec: &StoredRecord,
) -> Result<(), StoreError> {
    c.execute(
        insert,
        &[
            &position,
            &seq,
            &time,
            &rec.kind.as_str(),
            &rec.id,
            &rec.owner,
            &rec.revision,
            &rec.index.stage,
            &rec.index.industry,
            &rec.index.factor_kind,
            &rec.index.parent,
            &rec.body,
        ],
    )
    .await
    .map(|_| ())
    .map_err(db)
}

/// What a group-commit transaction knows once it holds the feed lock: the last feed position
/// and each owner's last sequence number, advanced in memory as writes append.
pub(super) struct FeedTail {
    position: i64,
    seqs: std::collections::HashMap<String, i64>,
}

impl FeedTail {
    /// The next sequence number of `owner` (read from the log the first time).
    async fn next_seq(&mut self, c: &impl GenericClient, owner: &str) -> Result<i64, StoreError> {
        if !self.seqs.contains_key(owner) {
            let stmt = c
                .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM log WHERE owner = $1")
                .await
                .map_err(db)?;
            let last: i64 = c
                .query_one(&stmt, &[&owner])
                .await
                .map_err(db)?
                .try_get(0)
                .map_err(db)?;
            self.seqs.insert(owner.to_string(), last);
        }
        let seq = self.seqs.get_mut(owner).expect("inserted above");
        *seq += 1;
        Ok(*seq)
    }
}

/// One write, inside the caller's transaction. Every check runs before anything is modified
/// ([`check_write`]), so a refused write leaves nothing behind without a savepoint; the
/// changes are then numbered and the modifications sent in one pipeline ([`send_write`]).
pub(super) async fn apply_write(
    c: &impl GenericClient,
    tail: &mut FeedTail,
    w: Write,
) -> Result<WriteOutcome, StoreError> {
    if let Some(first) = check_write(c, &w).await? {
        return Ok(WriteOutcome::Replayed(first));
    }
    let mut entries = Vec::with_capacity(w.also_create.len() + 1);
    for r in w.also_create.iter().chain([&w.record]) {
        let seq = tail.next_seq(c, &r.owner).await?;
        tail.position += 1;
        entries.push((r, tail.position, seq));
    }
    let again = match w.resend {
        Some(kind) => resend_versions(c, kind, &w.record.owner).await?,
        None => Vec::new(),
    };
    // Each record's row keeps naming its entry: it holds the same version.
    let mut resent = Vec::with_capacity(again.len());
    for r in &again {
        let seq = tail.next_seq(c, &r.owner).await?;
        tail.position += 1;
        resent.push((r, tail.position, seq));
    }
    send_write(c, &w, &entries, &resent).await?;
    Ok(WriteOutcome::Applied(w.record))
}

/// Every check of a write, before anything is modified: its request id's first answer (a
/// retry: returned), the revision it expects, records it creates that exist already, and
/// last its unique key, which is inserted only if new.
async fn check_write(
    c: &impl GenericClient,
    w: &Write,
) -> Result<Option<StoredRecord>, StoreError> {
    let rec = &w.record;
    let (first, current) =
        tokio::try_join!(lookup_request(c, &w.key), get_record(c, rec.kind, rec.id))?;
    if first.is_some() {
        return Ok(first);
    }
    w.check_revision(current.as_ref())?;
    let existing = futures_util::future::try_join_all(
        w.also_create
            .iter()
            .map(|extra| get_record(c, extra.kind, extra.id)),
    )
    .await?;
    if existing.iter().any(Option::is_some) {
        return Err(StoreError::AlreadyExists);
    }
    if let Some(unique) = &w.unique {
        let stmt = c
            .prepare_cached("INSERT INTO unique_keys (key) VALUES ($1) ON CONFLICT DO NOTHING")
            .await
            .map_err(db)?;
        if c.execute(&stmt, &[unique]).await.map_err(db)? == 0 {
            return Err(StoreError::AlreadyExists);
        }
    }
    Ok(None)
}

/// A numbered change: the record version, its feed position and its owner's sequence.
type Numbered<'a> = (&'a StoredRecord, i64, i64);

/// Sends a checked write's modifications at once: each record's row and log entry
/// (`entries`, the record itself last), the log entries of versions sent again (`resent`),
/// and the request id with its first answer, the record's own log entry.
async fn send_write(
    c: &impl GenericClient,
    w: &Write,
    entries: &[Numbered<'_>],
    resent: &[Numbered<'_>],
) -> Result<(), StoreError> {
    let (log, request) = tokio::try_join!(
        async { c.prepare_cached(&INSERT_LOG).await.map_err(db) },
        async {
            c.prepare_cached(
                "INSERT INTO requests (party, request_id, fingerprint, answer, time) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .await
            .map_err(db)
        }
    )?;
    let answer = &entries.last().expect("the record itself").1;
    let (log, time) = (&log, w.time);
    let inserts = entries.iter().map(|(r, position, seq)| async move {
        tokio::try_join!(
            upsert_record(c, r, *position),
            insert_log(c, log, *position, *seq, time, r)
        )
        .map(|_| ())
    });
    let resends = resent
        .iter()
        .map(|(r, position, seq)| insert_log(c, log, *position, *seq, time, r));
    tokio::try_join!(
        futures_util::future::try_join_all(inserts),
        futures_util::future::try_join_all(resends),
        async {
            c.execute(
                &request,
                &[
                    &w.key.party,
                    &w.key.request_id,
                    &w.key.fingerprint,
                    answer,
                    &w.time,
                ],
            )
            .await
            .map_err(db)
        }
    )?;
    Ok(())
}

/// The current version of every record of `kind` that `owner` owns, for [`Write::resend`].
async fn resend_versions(
    c: &impl GenericClient,
    kind: RecordKind,
    owner: &str,
) -> Result<Vec<StoredRecord>, StoreError> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {VERSION_COLUMNS} FROM {CURRENT_RECORDS} WHERE kind = $1 AND owner = $2 \
             ORDER BY id"
        ))
        .await
        .map_err(db)?;
    c.query(&stmt, &[&kind.as_str(), &owner])
        .await
        .map_err(db)?
        .iter()
        .map(|row| row_to_record(row, 0))
        .collect()
}

/// Applies queued writes in one transaction under the feed lock and answers each after the
/// commit. A write that fails its checks changes nothing and gets its error; a database error
/// or a failed commit fails all (nothing of the group is written).
pub(super) async fn apply_writes(
    conn: &mut deadpool_postgres::Object,
    queued: Vec<QueuedWrite>,
    chain: crate::crypto::Digest,
) {
    let tx = match conn.transaction().await {
        Ok(tx) => tx,
        Err(e) => return fail_all(queued, db(e)),
    };
    let mut tail = match lock_feed(&tx).await {
        Ok(position) => FeedTail {
            position,
            seqs: Default::default(),
        },
        Err(e) => return fail_all(queued, e),
    };
    let start = tail.position;
    let mut answers = Vec::with_capacity(queued.len());
    let mut failed: Option<String> = None;
    // The audit events of the writes applied now, committed with them (as on SQLite).
    let mut audited = Vec::new();
    for (write, reply) in queued {
        let audit = write.audit.clone();
        let result = match &failed {
            Some(e) => Err(StoreError::Unavailable(e.clone())),
            None => apply_write(&tx, &mut tail, write).await,
        };
        // A database error aborts the transaction: the rest of the group cannot be applied.
        if let Err(e @ StoreError::Unavailable(_)) = &result {
            failed.get_or_insert_with(|| e.cause());
        }
        if let (Ok(WriteOutcome::Applied(_)), Some(audit)) = (&result, audit) {
            audited.push(audit);
        }
        answers.push((reply, result));
    }
    let committed = async {
        if let Some(e) = failed {
            return Err(StoreError::Unavailable(e));
        }
        let mut last = 0;
        if !audited.is_empty() {
            let events = audited.iter().map(WriteAudit::event).collect();
            last = super::audit::insert_audit_events(&tx, events, chain).await?;
        }
        if tail.position > start {
            tx.execute("SELECT pg_notify($1, '')", &[&FEED_CHANNEL])
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(last)
    }
    .await;
    answer_after_commit(answers, &audited, committed);
}

#[async_trait]
impl RecordStore for PostgresStore {
    async fn get(
        &self,
        kind: RecordKind,
        owner: &str,
        id: Uuid,
    ) -> Result<Option<StoredRecord>, StoreError> {
        let conn = self.conn().await?;
        Ok(get_record(&conn, kind, id)
            .await?
            .filter(|r| r.owner == owner))
    }

    async fn list(&self, q: ListQuery) -> Result<Vec<StoredRecord>, StoreError> {
        let mut f = Filters::new(format!(
            "SELECT {VERSION_COLUMNS} FROM {CURRENT_RECORDS} WHERE kind = $1"
        ));
        f.args.push(Box::new(q.kind.as_str().to_string()));
        f.eq("owner", &q.owner);
        f.eq("stage", &q.stage);
        f.eq("industry", &q.industry);
        f.eq("factor_kind", &q.factor_kind);
        f.eq("parent", &q.parent);
        if let Some(after) = q.after {
            f.push("id >", after);
        }
        let (sql, f) = f.finish("id", q.limit);
        let conn = self.conn().await?;
        let stmt = conn.prepare_cached(&sql).await.map_err(db)?;
        conn.query(&stmt, &f.params())
            .await
            .map_err(db)?
            .iter()
            .map(|row| row_to_record(row, 0))
            .collect()
    }

    async fn replay(&self, key: &Idempotency) -> Result<Option<StoredRecord>, StoreError> {
        let conn = self.conn().await?;
        lookup_request(&conn, key).await
    }

    async fn write(&self, write: Write) -> Result<WriteOutcome, StoreError> {
        let (answer, drain) = self.queued.push(write);
        if let Some(mut drain) = drain {
            let pool = self.pool.clone();
            let chain = self.chain;
            tokio::spawn(async move {
                while let Some(batch) = drain.next_batch() {
                    match pool.get().await {
                        Ok(mut conn) => apply_writes(&mut conn, batch, chain).await,
                        Err(e) => {
                            for (_, reply) in batch {
                                let _ = reply.send(Err(unavailable(format!("postgres pool: {e}"))));
                            }
                        }
                    }
                }
            });
        }
        answer_of(answer).await
    }

    async fn changes(
        &self,
        owner: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT seq, time, {VERSION_COLUMNS} FROM log WHERE owner = $1 AND seq > $2 \
                 ORDER BY seq LIMIT $3"
            ))
            .await
            .map_err(db)?;
        let rows = conn
            .query(&stmt, &[&owner, &(after as i64), &(limit as i64)])
            .await
            .map_err(db)?;
        rows.iter().map(|r| row_to_change(r, 0)).collect()
    }

    async fn last_seq(&self, owner: &str) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        let row = conn
            .query_one(
                "SELECT COALESCE(MAX(seq), 0) FROM log WHERE owner = $1",
                &[&owner],
            )
            .await
            .map_err(db)?;
        Ok(row.try_get::<_, i64>(0).map_err(db)? as u64)
    }

    async fn feed(&self, after: u64, limit: usize) -> Result<Vec<FeedEntry>, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT position, seq, time, {VERSION_COLUMNS} FROM log WHERE position > $1 \
                 ORDER BY position LIMIT $2"
            ))
            .await
            .map_err(db)?;
        let rows = conn
            .query(&stmt, &[&(after as i64), &(limit as i64)])
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(FeedEntry {
                    position: r.try_get::<_, i64>(0).map_err(db)? as u64,
                    change: row_to_change(r, 1)?,
                })
            })
            .collect()
    }

    async fn feed_position(&self) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        let row = conn
            .query_one("SELECT COALESCE(MAX(position), 0) FROM log", &[])
            .await
            .map_err(db)?;
        Ok(row.try_get::<_, i64>(0).map_err(db)? as u64)
    }

    fn feed_signal(&self) -> Option<Arc<watch::Sender<u64>>> {
        Some(self.signal.clone())
    }
}
