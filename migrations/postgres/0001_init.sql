-- guardrank store, PostgreSQL, version 1.
--
-- `events` is the log and the truth; every other table is an index or a side table kept in
-- the same transaction as the events it describes. Times are milliseconds since the epoch
-- (BIGINT), blobs are BYTEA. Tables are created in the first schema of the search path (the
-- store sets it from the URL's `schema` parameter).

-- The head of the log: exactly one row, holding the highest committed sequence number.
--
-- Its row lock is the log's append lock. Every transaction that writes the log (or the tables
-- beside it) starts with `SELECT last_seq FROM log_head FOR UPDATE` and holds that lock until it
-- commits; it numbers its events last_seq + 1, last_seq + 2, ... itself and stores the new
-- last_seq before committing. There is no SEQUENCE: a sequence hands out numbers at insert time,
-- and transactions commit in another order, so a tailer reading `seq > after` could skip a row
-- that commits later. Numbered under this lock, sequence numbers follow commit order (see
-- src/store/postgres.rs for the argument). The row is never deleted, so `last_seq` never goes
-- back when compaction or erasure deletes the newest events, and a number is never reused.
CREATE TABLE log_head (
    one      BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    last_seq BIGINT  NOT NULL CHECK (last_seq >= 0)
);
INSERT INTO log_head (one, last_seq) VALUES (TRUE, 0);

CREATE TABLE events (
    seq     BIGINT PRIMARY KEY CHECK (seq > 0),
    at_ms   BIGINT NOT NULL,
    kind    TEXT   NOT NULL,
    user_id TEXT,
    body    BYTEA  NOT NULL
);
CREATE INDEX events_user_id ON events (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX events_kind_at ON events (kind, at_ms);

-- One row per impression event: lookup by request id, feedback bookkeeping, compaction.
CREATE TABLE impressions (
    request_id   TEXT    PRIMARY KEY,
    seq          BIGINT  NOT NULL UNIQUE REFERENCES events (seq) ON DELETE CASCADE,
    user_id      TEXT    NOT NULL,
    at_ms        BIGINT  NOT NULL,
    has_feedback BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX impressions_unfed_at ON impressions (at_ms) WHERE NOT has_feedback;

-- Idempotency keys of recorded feedback; a key lives as long as its feedback event.
CREATE TABLE feedback_keys (
    request_id   TEXT   NOT NULL,
    candidate_id TEXT   NOT NULL,
    outcome      TEXT   NOT NULL,
    seq          BIGINT NOT NULL UNIQUE REFERENCES events (seq) ON DELETE CASCADE,
    PRIMARY KEY (request_id, candidate_id, outcome)
);

CREATE TABLE snapshots (
    seq   BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    blob  BYTEA  NOT NULL
);

-- API keys: only the SHA-256 of a key is stored.
CREATE TABLE api_keys (
    id              TEXT   PRIMARY KEY,
    scope           TEXT   NOT NULL CHECK (scope IN ('plugin', 'admin')),
    hash            BYTEA  NOT NULL CHECK (octet_length(hash) = 32),
    created_at_ms   BIGINT NOT NULL,
    revoked_at_ms   BIGINT,
    last_used_at_ms BIGINT
);
CREATE INDEX api_keys_created ON api_keys (created_at_ms);
