//! The SQLite schema, as migrations applied in order.

/// How many migrations ran before requests named their first answer's change-log entry (the
/// conversion's tests start from a store at this version).
#[cfg(test)]
pub(super) const BEFORE_NAMED_ANSWERS: usize = 5;

/// How many migrations ran before each record version was stored once, in the change log.
#[cfg(test)]
pub(super) const BEFORE_ONE_COPY: usize = 6;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE records (
    kind        TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    revision    INTEGER NOT NULL,
    stage       TEXT,
    industry    TEXT,
    factor_kind TEXT,
    parent      TEXT,
    body        TEXT    NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
CREATE INDEX records_by_owner ON records (kind, owner, id);
CREATE INDEX records_by_parent ON records (kind, parent, id) WHERE parent IS NOT NULL;

-- Natural keys that may be written once (one decision per party per round, one answer per
-- referral).
CREATE TABLE unique_keys (
    key TEXT PRIMARY KEY
) WITHOUT ROWID;

-- The feed: this party's own change log and every replicated change applied here, in commit
-- order. (owner, seq) is the owner's gapless numbering; position orders the feed (Watch).
CREATE TABLE log (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    owner    TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    time     INTEGER NOT NULL,
    record   TEXT    NOT NULL,
    UNIQUE (owner, seq)
);

-- Last change applied from each peer owner, committed with the change itself.
CREATE TABLE cursors (
    owner TEXT    PRIMARY KEY,
    seq   INTEGER NOT NULL,
    time  INTEGER NOT NULL
) WITHOUT ROWID;

-- What each applied change looked like on the wire, with the owner's signature.
CREATE TABLE evidence (
    owner     TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    envelope  BLOB    NOT NULL,
    scheme    INTEGER NOT NULL,
    signature BLOB    NOT NULL,
    signer    TEXT    NOT NULL,
    received  INTEGER NOT NULL,
    PRIMARY KEY (owner, seq)
) WITHOUT ROWID;

CREATE TABLE signers (
    fingerprint TEXT PRIMARY KEY,
    certificate BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE requests (
    party       TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,
    fingerprint BLOB    NOT NULL,
    response    TEXT    NOT NULL,
    time        INTEGER NOT NULL,
    PRIMARY KEY (party, request_id)
) WITHOUT ROWID;
"#,
    r#"
-- The hash-chained audit trail: every call, allowed or refused.
CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY,
    time       INTEGER NOT NULL,
    caller     TEXT    NOT NULL,
    method     TEXT    NOT NULL,
    records    TEXT    NOT NULL,
    code       TEXT    NOT NULL,
    request_id TEXT    NOT NULL,
    prev_hash  BLOB    NOT NULL,
    hash       BLOB    NOT NULL
);
CREATE INDEX audit_by_time ON audit (time);

-- Where the chain continues from after old events were exported and pruned.
CREATE TABLE audit_anchor (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash BLOB    NOT NULL
);

-- Chain heads other parties signed and sent us: evidence against rewritten history.
CREATE TABLE witnessed_heads (
    party     TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    hash      BLOB    NOT NULL,
    time      INTEGER NOT NULL,
    signed    BLOB    NOT NULL,
    scheme    INTEGER NOT NULL,
    signature BLOB    NOT NULL,
    signer    BLOB    NOT NULL,
    PRIMARY KEY (party, seq)
) WITHOUT ROWID;
"#,
    r#"
-- Batches the owner signed once, over a manifest of their envelopes' hashes; the evidence of
-- each of their changes names the manifest instead of holding a signature of its own.
CREATE TABLE manifests (
    digest    BLOB    PRIMARY KEY,
    owner     TEXT    NOT NULL,
    manifest  BLOB    NOT NULL,
    scheme    INTEGER NOT NULL,
    signature BLOB    NOT NULL,
    signer    TEXT    NOT NULL
) WITHOUT ROWID;
ALTER TABLE evidence ADD COLUMN manifest BLOB;
"#,
    r#"
-- Evidence whose envelope had items erased when a grant ended keeps the SHA-256 of the
-- envelope as received, so the owner's signature (over it, or over the manifest listing it)
-- still proves the change.
ALTER TABLE evidence ADD COLUMN erased_sha256 BLOB;
"#,
    r#"
-- Set when the store was put in place from a backup (`yrd-gateway store restore`): the
-- gateway holds writes until every peer has given back what it holds of this party's log.
CREATE TABLE restored (
    one  INTEGER PRIMARY KEY CHECK (one = 1),
    time INTEGER NOT NULL
);
"#,
    r#"
-- A write's first answer is the record exactly as the write appended it to the change log, so
-- the request names that log entry (`answer`, its position) instead of holding a copy. Rows
-- written before are converted: their copy is the text of the entry appended at the same time.
-- Only entries of this party's own log are named, and those are never rewritten.
CREATE INDEX log_by_time ON log (time);
CREATE TABLE requests_named (
    party       TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,
    fingerprint BLOB    NOT NULL,
    response    TEXT,
    answer      INTEGER,
    time        INTEGER NOT NULL,
    PRIMARY KEY (party, request_id),
    CHECK ((response IS NULL) <> (answer IS NULL))
) WITHOUT ROWID;
INSERT INTO requests_named (party, request_id, fingerprint, response, answer, time)
SELECT party, request_id, fingerprint, CASE WHEN position IS NULL THEN response END,
       position, time
FROM (SELECT q.*, (SELECT l.position FROM log l WHERE l.time = q.time
                   AND l.record = q.response ORDER BY l.position LIMIT 1) AS position
      FROM requests q);
DROP TABLE requests;
ALTER TABLE requests_named RENAME TO requests;
DROP INDEX log_by_time;
"#,
    r#"
-- Each record version is stored once. The change-log entry holds it in columns, its body as the
-- records module wrote it; a record's row holds what lists filter on and names the entry of its
-- current version (`position`). Entries and rows written before are converted: an entry's JSON
-- is split into the columns, and a row names the last entry of its revision with its body
-- (both were written together, and erasure rewrites both alike).
ALTER TABLE log ADD COLUMN kind TEXT NOT NULL DEFAULT '';
ALTER TABLE log ADD COLUMN id TEXT NOT NULL DEFAULT '';
ALTER TABLE log ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE log ADD COLUMN stage TEXT;
ALTER TABLE log ADD COLUMN industry TEXT;
ALTER TABLE log ADD COLUMN factor_kind TEXT;
ALTER TABLE log ADD COLUMN parent TEXT;
ALTER TABLE log ADD COLUMN body TEXT NOT NULL DEFAULT '';
UPDATE log SET
    kind = json_extract(record, '$.kind'),
    id = json_extract(record, '$.id'),
    revision = json_extract(record, '$.revision'),
    stage = json_extract(record, '$.index.stage'),
    industry = json_extract(record, '$.index.industry'),
    factor_kind = json_extract(record, '$.index.factor_kind'),
    parent = json_extract(record, '$.index.parent'),
    body = json_extract(record, '$.body');
ALTER TABLE log DROP COLUMN record;
CREATE INDEX log_by_version ON log (kind, id, revision);
CREATE TABLE records_current (
    kind        TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    stage       TEXT,
    industry    TEXT,
    factor_kind TEXT,
    parent      TEXT,
    position    INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
INSERT INTO records_current (kind, id, owner, stage, industry, factor_kind, parent, position)
SELECT r.kind, r.id, r.owner, r.stage, r.industry, r.factor_kind, r.parent,
       (SELECT MAX(l.position) FROM log l WHERE l.kind = r.kind AND l.id = r.id
        AND l.revision = r.revision AND l.body = r.body)
FROM records r;
DROP TABLE records;
ALTER TABLE records_current RENAME TO records;
CREATE INDEX records_by_owner ON records (kind, owner, id);
CREATE INDEX records_by_parent ON records (kind, parent, id) WHERE parent IS NOT NULL;
DROP INDEX log_by_version;
"#,
    r#"
-- The hash each audit event was linked with: 'sha256' or 'sm3' (the gm crypto profile);
-- NULL for events stored before, which are SHA-256.
ALTER TABLE audit ADD COLUMN digest TEXT;
"#,
];
