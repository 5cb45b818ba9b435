//! Records, writes (group-committed, a savepoint per write) and the change log on SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use uuid::Uuid;

use super::{SqliteStore, cached_row, limit, unavailable};
use crate::domain::RecordKind;
use crate::store::*;

/// The record version in [`VERSION_COLUMNS`] order from column `at` on.
pub(super) fn row_to_record(
    row: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<Result<StoredRecord, StoreError>> {
    let kind: String = row.get(at)?;
    let id: String = row.get(at + 1)?;
    let parsed = (|| {
        Ok(StoredRecord {
            kind: RecordKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown record kind `{kind}`")))?,
            id: Uuid::parse_str(&id)
                .map_err(|e| StoreError::Corrupt(format!("bad id `{id}`: {e}")))?,
            owner: row.get(at + 2).map_err(unavailable)?,
            revision: row.get(at + 3).map_err(unavailable)?,
            index: IndexFields {
                stage: row.get(at + 4).map_err(unavailable)?,
                industry: row.get(at + 5).map_err(unavailable)?,
                factor_kind: row.get(at + 6).map_err(unavailable)?,
                parent: row.get(at + 7).map_err(unavailable)?,
            },
            body: row.get(at + 8).map_err(unavailable)?,
        })
    })();
    Ok(parsed)
}

/// A change-log entry from column `at` on: its seq, its time and the version
/// ([`VERSION_COLUMNS`]), whose owner is the log's.
pub(super) fn row_to_change(
    row: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<Result<Change, StoreError>> {
    let seq = row.get::<_, i64>(at)? as u64;
    let time = row.get(at + 1)?;
    Ok(row_to_record(row, at + 2)?.map(|record| Change {
        owner: record.owner.clone(),
        seq,
        time,
        record,
    }))
}

pub(super) static GET_RECORD: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("SELECT {VERSION_COLUMNS} FROM {CURRENT_RECORDS} WHERE kind = ?1 AND id = ?2")
});

pub(super) fn get_record(
    conn: &Connection,
    kind: RecordKind,
    id: Uuid,
) -> Result<Option<StoredRecord>, StoreError> {
    cached_row(
        conn,
        &GET_RECORD,
        params![kind.as_str(), id.to_string()],
        |row| row_to_record(row, 0),
    )
    .optional()
    .map_err(unavailable)?
    .transpose()
}

static LOOKUP_REQUEST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT q.fingerprint, q.response, {LOGGED_VERSION} FROM requests q \
         LEFT JOIN log l ON l.position = q.answer WHERE q.party = ?1 AND q.request_id = ?2"
    )
});

pub(super) fn lookup_request(
    conn: &Connection,
    key: &Idempotency,
) -> Result<Option<StoredRecord>, StoreError> {
    let found = cached_row(
        conn,
        &LOOKUP_REQUEST,
        params![key.party, key.request_id],
        |r| {
            let fingerprint: Vec<u8> = r.get(0)?;
            let copied: Option<String> = r.get(1)?;
            let logged = match r.get_ref(2)? {
                rusqlite::types::ValueRef::Null => None,
                _ => Some(row_to_record(r, 2)?),
            };
            Ok((fingerprint, copied, logged))
        },
    )
    .optional()
    .map_err(unavailable)?;
    let Some((fingerprint, copied, logged)) = found else {
        return Ok(None);
    };
    let answer = match (copied, logged) {
        (Some(text), _) => Some(StoredRecord::decode(&text)),
        (None, logged) => logged,
    };
    key.first_answer(&fingerprint, answer.transpose()?)
        .map(Some)
}

/// Applies queued writes in one transaction and answers each after the commit. A write that
/// fails its checks rolls back to its savepoint and gets its error; a failed commit fails all.
pub(super) fn apply_writes(
    conn: &mut Connection,
    queued: Vec<QueuedWrite>,
    chain: crate::crypto::Digest,
) {
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return fail_all(queued, unavailable(&e)),
    };
    let mut answers = Vec::with_capacity(queued.len());
    // The audit events of the writes applied now (not of replays or refusals), committed
    // with them: one commit, one fsync for a write and its call's event.
    let mut audited = Vec::new();
    for (write, reply) in queued {
        let audit = write.audit.clone();
        let result = match tx.savepoint() {
            Ok(mut sp) => {
                let result = apply_write(&sp, write);
                let kept = if result.is_ok() {
                    sp.commit()
                } else {
                    sp.rollback()
                };
                kept.map_err(unavailable).and(result)
            }
            Err(e) => Err(unavailable(e)),
        };
        if let (Ok(WriteOutcome::Applied(_)), Some(audit)) = (&result, audit) {
            audited.push(audit);
        }
        answers.push((reply, result));
    }
    let events = audited.iter().map(WriteAudit::event).collect::<Vec<_>>();
    let chained = match events.is_empty() {
        true => Ok(0),
        false => super::audit::insert_audit_events(&tx, events, chain),
    };
    let committed = chained.and_then(|last| tx.commit().map_err(unavailable).map(|()| last));
    answer_after_commit(answers, &audited, committed);
}

/// One write's checks and inserts, inside the caller's transaction.
pub(super) fn apply_write(tx: &Connection, w: Write) -> Result<WriteOutcome, StoreError> {
    if let Some(first) = lookup_request(tx, &w.key)? {
        return Ok(WriteOutcome::Replayed(first));
    }
    let rec = &w.record;
    let current = get_record(tx, rec.kind, rec.id)?;
    w.check_revision(current.as_ref())?;
    if let Some(unique) = &w.unique {
        let fresh = tx
            .prepare_cached("INSERT OR IGNORE INTO unique_keys (key) VALUES (?1)")
            .and_then(|mut stmt| stmt.execute(params![unique]))
            .map_err(unavailable)?;
        if fresh == 0 {
            return Err(StoreError::AlreadyExists);
        }
    }
    for extra in &w.also_create {
        if get_record(tx, extra.kind, extra.id)?.is_some() {
            return Err(StoreError::AlreadyExists);
        }
        let position = append_own_change(tx, extra, w.time)?;
        upsert_record(tx, extra, position)?;
    }
    let answer = append_own_change(tx, rec, w.time)?;
    upsert_record(tx, rec, answer)?;
    if let Some(kind) = w.resend {
        let query = ListQuery {
            owner: Some(rec.owner.clone()),
            ..ListQuery::of(kind, usize::MAX >> 1)
        };
        // Each record's row keeps naming its entry: it holds the same version.
        for again in list_records(tx, &query)? {
            append_own_change(tx, &again, w.time)?;
        }
    }
    tx.prepare_cached(
        "INSERT INTO requests (party, request_id, fingerprint, answer, time) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![w.key.party, w.key.request_id, w.key.fingerprint, answer, w.time])
    })
    .map_err(unavailable)?;
    Ok(WriteOutcome::Applied(w.record))
}

/// Makes the version at change-log `position` (which holds `rec`) the record's current one.
pub(super) fn upsert_record(
    conn: &Connection,
    rec: &StoredRecord,
    position: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO records \
         (kind, id, owner, stage, industry, factor_kind, parent, position) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            rec.kind.as_str(),
            rec.id.to_string(),
            rec.owner,
            rec.index.stage,
            rec.index.industry,
            rec.index.factor_kind,
            rec.index.parent,
            position,
        ])
    })
    .map_err(unavailable)?;
    Ok(())
}

/// Appends `rec` to `owner`'s change log as entry `seq`; returns the entry's feed position.
pub(super) fn append_log(
    conn: &Connection,
    owner: &str,
    seq: u64,
    time: i64,
    rec: &StoredRecord,
) -> Result<i64, StoreError> {
    rec.check_log_owner(owner)?;
    conn.prepare_cached(&format!(
        "INSERT INTO log (seq, time, {VERSION_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    ))
    .and_then(|mut stmt| {
        stmt.execute(params![
            seq as i64,
            time,
            rec.kind.as_str(),
            rec.id.to_string(),
            owner,
            rec.revision,
            rec.index.stage,
            rec.index.industry,
            rec.index.factor_kind,
            rec.index.parent,
            rec.body,
        ])
    })
    .map_err(unavailable)?;
    Ok(conn.last_insert_rowid())
}

/// Appends a record version to its owner's change log with the next sequence number; returns
/// the entry's feed position.
pub(super) fn append_own_change(
    conn: &Connection,
    rec: &StoredRecord,
    time: i64,
) -> Result<i64, StoreError> {
    let seq: i64 = cached_row(
        conn,
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM log WHERE owner = ?1",
        params![rec.owner],
        |r| r.get(0),
    )
    .map_err(unavailable)?;
    append_log(conn, &rec.owner, seq as u64, time, rec)
}

pub(super) fn list_records(
    conn: &Connection,
    q: &ListQuery,
) -> Result<Vec<StoredRecord>, StoreError> {
    let (sql, args) = list_statement(q);
    let mut stmt = conn.prepare_cached(&sql).map_err(unavailable)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), |row| {
            row_to_record(row, 0)
        })
        .map_err(unavailable)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.map_err(unavailable)??);
    }
    Ok(out)
}

/// The statement of a list query and its parameters.
pub(super) fn list_statement(q: &ListQuery) -> (String, Vec<rusqlite::types::Value>) {
    let mut sql = format!("SELECT {VERSION_COLUMNS} FROM {CURRENT_RECORDS} WHERE kind = ?");
    let mut args: Vec<rusqlite::types::Value> = vec![q.kind.as_str().to_string().into()];
    let mut eq = |column: &str, value: &Option<String>| {
        if let Some(v) = value {
            sql.push_str(&format!(" AND {column} = ?"));
            args.push(v.clone().into());
        }
    };
    eq("owner", &q.owner);
    eq("stage", &q.stage);
    eq("industry", &q.industry);
    eq("factor_kind", &q.factor_kind);
    eq("parent", &q.parent);
    if let Some(after) = q.after {
        sql.push_str(" AND id > ?");
        args.push(after.to_string().into());
    }
    sql.push_str(" ORDER BY id");
    sql.push_str(&limit(q.limit));
    (sql, args)
}

/// The statement of [`RecordStore::changes`]: an owner's changes after a sequence number.
pub(super) fn changes_statement(n: usize) -> String {
    format!(
        "SELECT seq, time, {VERSION_COLUMNS} FROM log WHERE owner = ?1 AND seq > ?2 \
         ORDER BY seq{}",
        limit(n)
    )
}

#[async_trait]
impl RecordStore for SqliteStore {
    async fn get(
        &self,
        kind: RecordKind,
        owner: &str,
        id: Uuid,
    ) -> Result<Option<StoredRecord>, StoreError> {
        self.point_read(|c| Ok(get_record(c, kind, id)?.filter(|r| r.owner == owner)))
    }

    async fn list(&self, query: ListQuery) -> Result<Vec<StoredRecord>, StoreError> {
        self.read(move |c| list_records(c, &query)).await
    }

    async fn replay(&self, key: &Idempotency) -> Result<Option<StoredRecord>, StoreError> {
        self.point_read(|c| lookup_request(c, key))
    }

    async fn write(&self, write: Write) -> Result<WriteOutcome, StoreError> {
        let (answer, drain) = self.queued.push(write);
        if let Some(mut drain) = drain {
            // The writer is held for the whole drain (record commits go before audit appends
            // until the writes pause), and the write that started it waits for the drain:
            // measured, both keep replication lag's tail at half of what it is otherwise. The
            // blocking task runs to its end even if this caller goes away.
            let chain = self.chain;
            self.with_writer(move |c| {
                while let Some(batch) = drain.next_batch() {
                    apply_writes(c, batch, chain);
                }
                Ok(())
            })
            .await?;
        }
        answer_of(answer).await
    }

    async fn changes(
        &self,
        owner: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let owner = owner.to_string();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&changes_statement(limit))
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![owner, after as i64], |r| row_to_change(r, 0))
                .map_err(unavailable)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row.map_err(unavailable)??);
            }
            Ok(out)
        })
        .await
    }

    async fn last_seq(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM log WHERE owner = ?1",
                params![owner],
                |r| r.get::<_, i64>(0),
            )
            .map(|s| s as u64)
            .map_err(unavailable)
        })
        .await
    }

    async fn feed(&self, after: u64, limit: usize) -> Result<Vec<FeedEntry>, StoreError> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT position, seq, time, {VERSION_COLUMNS} FROM log WHERE position > ?1 \
                     ORDER BY position{}",
                    super::limit(limit)
                ))
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![after as i64], |r| {
                    let position = r.get::<_, i64>(0)? as u64;
                    Ok(row_to_change(r, 1)?.map(|change| FeedEntry { position, change }))
                })
                .map_err(unavailable)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row.map_err(unavailable)??);
            }
            Ok(out)
        })
        .await
    }

    async fn feed_position(&self) -> Result<u64, StoreError> {
        self.read(|c| {
            c.query_row("SELECT COALESCE(MAX(position), 0) FROM log", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|p| p as u64)
            .map_err(unavailable)
        })
        .await
    }
}
