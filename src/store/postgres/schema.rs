//! The PostgreSQL schema, as migrations applied in order.

/// How many migrations ran before requests named their first answer's change-log entry (the
/// conversion's tests start from a store at this version).
#[cfg(test)]
pub(super) const BEFORE_NAMED_ANSWERS: usize = 4;

/// How many migrations ran before each record version was stored once, in the change log.
#[cfg(test)]
pub(super) const BEFORE_ONE_COPY: usize = 5;

/// Schema migrations, applied in order; `schema_version` records how many ran.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE records (
    kind        TEXT   NOT NULL,
    id          UUID   NOT NULL,
    owner       TEXT   NOT NULL,
    revision    BIGINT NOT NULL,
    stage       TEXT,
    industry    TEXT,
    factor_kind TEXT,
    parent      TEXT,
    body        TEXT   NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX records_by_owner ON records (kind, owner, id);
CREATE INDEX records_by_parent ON records (kind, parent, id) WHERE parent IS NOT NULL;

CREATE TABLE unique_keys (
    key TEXT PRIMARY KEY
);

-- The feed: own change log and applied replicas in commit order. Positions are assigned under
-- the feed lock, so they are gapless and in commit order (Watch resumes by position).
CREATE TABLE log (
    position BIGINT PRIMARY KEY,
    owner    TEXT   NOT NULL,
    seq      BIGINT NOT NULL,
    time     BIGINT NOT NULL,
    record   TEXT   NOT NULL,
    UNIQUE (owner, seq)
);

CREATE TABLE cursors (
    owner TEXT   PRIMARY KEY,
    seq   BIGINT NOT NULL,
    time  BIGINT NOT NULL
);

CREATE TABLE evidence (
    owner     TEXT    NOT NULL,
    seq       BIGINT  NOT NULL,
    envelope  BYTEA   NOT NULL,
    scheme    INTEGER NOT NULL,
    signature BYTEA   NOT NULL,
    signer    TEXT    NOT NULL,
    received  BIGINT  NOT NULL,
    PRIMARY KEY (owner, seq)
);

CREATE TABLE signers (
    fingerprint TEXT  PRIMARY KEY,
    certificate BYTEA NOT NULL
);

CREATE TABLE requests (
    party       TEXT   NOT NULL,
    request_id  TEXT   NOT NULL,
    fingerprint BYTEA  NOT NULL,
    response    TEXT   NOT NULL,
    time        BIGINT NOT NULL,
    PRIMARY KEY (party, request_id)
);

CREATE TABLE audit (
    seq        BIGINT PRIMARY KEY,
    time       BIGINT NOT NULL,
    caller     TEXT   NOT NULL,
    method     TEXT   NOT NULL,
    records    TEXT   NOT NULL,
    code       TEXT   NOT NULL,
    request_id TEXT   NOT NULL,
    prev_hash  BYTEA  NOT NULL,
    hash       BYTEA  NOT NULL
);
CREATE INDEX audit_by_time ON audit (time);

CREATE TABLE audit_anchor (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT  NOT NULL,
    hash BYTEA   NOT NULL
);

CREATE TABLE witnessed_heads (
    party     TEXT    NOT NULL,
    seq       BIGINT  NOT NULL,
    hash      BYTEA   NOT NULL,
    time      BIGINT  NOT NULL,
    signed    BYTEA   NOT NULL,
    scheme    INTEGER NOT NULL,
    signature BYTEA   NOT NULL,
    signer    BYTEA   NOT NULL,
    PRIMARY KEY (party, seq)
);
"#,
    r#"
-- Batches the owner signed once, over a manifest of their envelopes' hashes; the evidence of
-- each of their changes names the manifest instead of holding a signature of its own.
CREATE TABLE manifests (
    digest    BYTEA   PRIMARY KEY,
    owner     TEXT    NOT NULL,
    manifest  BYTEA   NOT NULL,
    scheme    INTEGER NOT NULL,
    signature BYTEA   NOT NULL,
    signer    TEXT    NOT NULL
);
ALTER TABLE evidence ADD COLUMN manifest BYTEA;
"#,
    r#"
-- Evidence whose envelope had items erased when a grant ended keeps the SHA-256 of the
-- envelope as received, so the owner's signature (over it, or over the manifest listing it)
-- still proves the change.
ALTER TABLE evidence ADD COLUMN erased_sha256 BYTEA;
"#,
    r#"
-- Set when the store was put in place from a backup (`yrd-gateway store restore`): the
-- gateway holds writes until every peer has given back what it holds of this party's log.
CREATE TABLE restored (
    one  INTEGER PRIMARY KEY CHECK (one = 1),
    time BIGINT NOT NULL
);
"#,
    r#"
-- A write's first answer is the record exactly as the write appended it to the change log, so
-- the request names that log entry (`answer`, its position) instead of holding a copy. Rows
-- written before are converted: their copy is the text of the entry appended at the same time.
-- Only entries of this party's own log are named, and those are never rewritten.
ALTER TABLE requests ALTER COLUMN response DROP NOT NULL;
ALTER TABLE requests ADD COLUMN answer BIGINT;
CREATE INDEX log_by_time ON log (time);
UPDATE requests q SET answer = l.position, response = NULL
FROM log l WHERE l.time = q.time AND l.record = q.response;
DROP INDEX log_by_time;
ALTER TABLE requests ADD CONSTRAINT requests_one_answer
    CHECK ((response IS NULL) <> (answer IS NULL));
"#,
    r#"
-- Each record version is stored once. The change-log entry holds it in columns, its body as the
-- records module wrote it; a record's row holds what lists filter on and names the entry of its
-- current version (`position`). Entries and rows written before are converted: an entry's JSON
-- is split into the columns, and a row names the last entry of its revision with its body
-- (both were written together, and erasure rewrites both alike).
ALTER TABLE log
    ADD COLUMN kind TEXT, ADD COLUMN id UUID, ADD COLUMN revision BIGINT,
    ADD COLUMN stage TEXT, ADD COLUMN industry TEXT, ADD COLUMN factor_kind TEXT,
    ADD COLUMN parent TEXT, ADD COLUMN body TEXT;
UPDATE log l SET
    kind = j ->> 'kind',
    id = (j ->> 'id')::uuid,
    revision = (j ->> 'revision')::bigint,
    stage = j -> 'index' ->> 'stage',
    industry = j -> 'index' ->> 'industry',
    factor_kind = j -> 'index' ->> 'factor_kind',
    parent = j -> 'index' ->> 'parent',
    body = j ->> 'body'
FROM (SELECT position, record::jsonb AS j FROM log) s WHERE s.position = l.position;
ALTER TABLE log
    ALTER COLUMN kind SET NOT NULL, ALTER COLUMN id SET NOT NULL,
    ALTER COLUMN revision SET NOT NULL, ALTER COLUMN body SET NOT NULL,
    DROP COLUMN record;
CREATE INDEX log_by_version ON log (kind, id, revision);
ALTER TABLE records ADD COLUMN position BIGINT;
UPDATE records r SET position = (SELECT MAX(l.position) FROM log l WHERE l.kind = r.kind
    AND l.id = r.id AND l.revision = r.revision AND l.body = r.body);
ALTER TABLE records ALTER COLUMN position SET NOT NULL, DROP COLUMN revision, DROP COLUMN body;
DROP INDEX log_by_version;
"#,
    r#"
-- The hash each audit event was linked with: 'sha256' or 'sm3' (the gm crypto profile);
-- NULL for events stored before, which are SHA-256.
ALTER TABLE audit ADD COLUMN digest TEXT;
"#,
];
