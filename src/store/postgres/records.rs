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

pub(super) const RECORD_COLUMNS: &str =
    "kind, id, owner, revision, stage, industry, factor_kind, parent, body";

pub(super) fn row_to_record(row: &Row) -> Result<StoredRecord, StoreError> {
    let kind: String = row.try_get(0).map_err(db)?;
    Ok(StoredRecord {
        kind: RecordKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown record kind `{kind}`")))?,
        id: row.try_get(1).map_err(db)?,
        owner: row.try_get(2).map_err(db)?,
        revision: row.try_get(3).map_err(db)?,
        index: IndexFields {
            stage: row.try_get(4).map_err(db)?,
            industry: row.try_get(5).map_err(db)?,
            factor_kind: row.try_get(6).map_err(db)?,
            parent: row.try_get(7).map_err(db)?,
        },
        body: row.try_get(8).map_err(db)?,
    })
}

pub(super) static GET_RECORD: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("SELECT {RECORD_COLUMNS} FROM records WHERE kind = $1 AND id = $2")
});

pub(super) static UPSERT_RECORD: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO records ({RECORD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (kind, id) DO UPDATE SET owner = excluded.owner, revision = excluded.revision, \
         stage = excluded.stage, industry = excluded.industry, factor_kind = excluded.factor_kind, \
         parent = excluded.parent, body = excluded.body"
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
        .map(row_to_record)
        .transpose()
}

pub(super) async fn lookup_request(
    c: &impl GenericClient,
    key: &Idempotency,
) -> Result<Option<StoredRecord>, StoreError> {
    let stmt = c
        .prepare_cached(
            "SELECT q.fingerprint, COALESCE(q.response, l.record) FROM requests q \
             LEFT JOIN log l ON l.position = q.answer WHERE q.party = $1 AND q.request_id = $2",
        )
        .await
        .map_err(db)?;
    let Some(row) = c
        .query_opt(&stmt, &[&key.party, &key.request_id])
        .await
        .map_err(db)?
    else {
        return Ok(None);
    };
    let fingerprint: Vec<u8> = row.try_get(0).map_err(db)?;
    let answer: Option<String> = row.try_get(1).map_err(db)?;
    key.first_answer(&fingerprint, answer.as_deref()).map(Some)
}

pub(super) async fn upsert_record(
    c: &impl GenericClient,
    rec: &StoredRecord,
) -> Result<(), StoreError> {
    let stmt = c.prepare_cached(&UPSERT_RECORD).await.map_err(db)?;
    c.execute(
        &stmt,
        &[
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
    .map_err(db)?;
    Ok(())
}

/// Appends one entry to the feed at `*position + 1` (the caller holds the feed lock).
pub(super) async fn append_log(
    c: &impl GenericClient,
    position: &mut i64,
    owner: &str,
    seq: i64,
    time: i64,
    encoded: &str,
) -> Result<(), StoreError> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO log (position, owner, seq, time, record) VALUES ($1, $2, $3, $4, $5)",
        )
        .await
        .map_err(db)?;
    c.execute(&stmt, &[&(*position + 1), &owner, &seq, &time, &encoded])
        .await
        .map_err(db)?;
    *position += 1;
    Ok(())
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
/// (the unique key, inserted only if new, is the last check), so a refused write leaves
/// nothing behind without a savepoint; the modifications are then sent in one pipeline.
pub(super) async fn apply_write(
    c: &impl GenericClient,
    tail: &mut FeedTail,
    w: Write,
) -> Result<WriteOutcome, StoreError> {
    let rec = &w.record;
    let (first, current) =
        tokio::try_join!(lookup_request(c, &w.key), get_record(c, rec.kind, rec.id))?;
    if let Some(first) = first {
        return Ok(WriteOutcome::Replayed(first));
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
    let encoded: Vec<String> = w
        .also_create
        .iter()
        .chain([rec])
        .map(|r| serde_json::to_string(r).map_err(|e| StoreError::Corrupt(e.to_string())))
        .collect::<Result<_, _>>()?;
    if let Some(unique) = &w.unique {
        let stmt = c
            .prepare_cached("INSERT INTO unique_keys (key) VALUES ($1) ON CONFLICT DO NOTHING")
            .await
            .map_err(db)?;
        if c.execute(&stmt, &[unique]).await.map_err(db)? == 0 {
            return Err(StoreError::AlreadyExists);
        }
    }
    // Checks passed: number the changes, then send every insert at once.
    let mut entries = Vec::with_capacity(w.also_create.len() + 1);
    for (r, encoded) in w.also_create.iter().chain([rec]).zip(encoded) {
        let seq = tail.next_seq(c, &r.owner).await?;
        tail.position += 1;
        entries.push((r, tail.position, seq, encoded));
    }
    let again = match w.resend {
        Some(kind) => resend_versions(c, kind, &rec.owner).await?,
        None => Vec::new(),
    };
    let mut resent = Vec::with_capacity(again.len());
    for r in &again {
        let seq = tail.next_seq(c, &r.owner).await?;
        tail.position += 1;
        resent.push((tail.position, seq, r.encode()?));
    }
    let (log, request) = tokio::try_join!(
        async {
            c.prepare_cached(
                "INSERT INTO log (position, owner, seq, time, record) VALUES ($1, $2, $3, $4, $5)",
            )
            .await
            .map_err(db)
        },
        async {
            c.prepare_cached(
                "INSERT INTO requests (party, request_id, fingerprint, answer, time) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .await
            .map_err(db)
        }
    )?;
    // The first answer is the record's own log entry, named by its position.
    let answer = &entries.last().expect("the record itself").1;
    let (log, time) = (&log, &w.time);
    let inserts = entries
        .iter()
        .map(|(r, position, seq, encoded)| async move {
            tokio::try_join!(upsert_record(c, r), async {
                c.execute(log, &[position, &r.owner, seq, time, encoded])
                    .await
                    .map_err(db)
            })
            .map(|_| ())
        });
    let (resent, owner) = (&resent, &rec.owner);
    let resends = resent.iter().map(|(position, seq, encoded)| async move {
        c.execute(log, &[position, owner, seq, time, encoded])
            .await
            .map(|_| ())
            .map_err(db)
    });
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
    Ok(WriteOutcome::Applied(w.record))
}

/// The current version of every record of `kind` that `owner` owns, for [`Write::resend`].
async fn resend_versions(
    c: &impl GenericClient,
    kind: RecordKind,
    owner: &str,
) -> Result<Vec<StoredRecord>, StoreError> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM records WHERE kind = $1 AND owner = $2 ORDER BY id"
        ))
        .await
        .map_err(db)?;
    c.query(&stmt, &[&kind.as_str(), &owner])
        .await
        .map_err(db)?
        .iter()
        .map(row_to_record)
        .collect()
}

/// Applies queued writes in one transaction under the feed lock and answers each after the
/// commit. A write that fails its checks changes nothing and gets its error; a database error
/// or a failed commit fails all (nothing of the group is written).
pub(super) async fn apply_writes(conn: &mut deadpool_postgres::Object, queued: Vec<QueuedWrite>) {
    let fail_all = |queued: Vec<QueuedWrite>, e: StoreError| {
        for (_, reply) in queued {
            let _ = reply.send(Err(StoreError::Unavailable(e.to_string())));
        }
    };
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
            failed.get_or_insert_with(|| e.to_string());
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
            last = super::audit::insert_audit_events(&tx, events).await?;
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
    match committed {
        Ok(last) => {
            WriteAudit::mark_committed(&audited, last);
            for (reply, result) in answers {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            for (reply, _) in answers {
                let _ = reply.send(Err(StoreError::Unavailable(e.to_string())));
            }
        }
    }
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
            "SELECT {RECORD_COLUMNS} FROM records WHERE kind = $1"
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
            .map(row_to_record)
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
            tokio::spawn(async move {
                while let Some(batch) = drain.next_batch() {
                    match pool.get().await {
                        Ok(mut conn) => apply_writes(&mut conn, batch).await,
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
            .prepare_cached(
                "SELECT seq, time, record FROM log WHERE owner = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .await
            .map_err(db)?;
        let rows = conn
            .query(&stmt, &[&owner, &(after as i64), &(limit as i64)])
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Change::decode(
                    owner.to_string(),
                    r.try_get(0).map_err(db)?,
                    r.try_get(1).map_err(db)?,
                    r.try_get(2).map_err(db)?,
                )
            })
            .collect()
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
            .prepare_cached(
                "SELECT position, owner, seq, time, record FROM log WHERE position > $1 ORDER BY position LIMIT $2",
            )
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
                    change: Change::decode(
                        r.try_get(1).map_err(db)?,
                        r.try_get(2).map_err(db)?,
                        r.try_get(3).map_err(db)?,
                        r.try_get(4).map_err(db)?,
                    )?,
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
