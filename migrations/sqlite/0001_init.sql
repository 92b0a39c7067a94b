-- guardrank store, SQLite, version 1.
--
-- `events` is the log and the truth; every other table is an index or a side table kept in
-- the same transaction as the events it describes. Times are milliseconds since the epoch.

-- AUTOINCREMENT: a sequence number is never reused, even after the newest events are deleted
-- (compaction, erasure), so a reader tailing by seq never misses or re-reads one.
CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms   INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    user_id TEXT,
    body    BLOB    NOT NULL
);
CREATE INDEX events_user_id ON events (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX events_kind_at ON events (kind, at_ms);

-- One row per impression event: lookup by request id, feedback bookkeeping, compaction.
CREATE TABLE impressions (
    request_id   TEXT    PRIMARY KEY,
    seq          INTEGER NOT NULL UNIQUE REFERENCES events (seq) ON DELETE CASCADE,
    user_id      TEXT    NOT NULL,
    at_ms        INTEGER NOT NULL,
    has_feedback INTEGER NOT NULL DEFAULT 0 CHECK (has_feedback IN (0, 1))
);
CREATE INDEX impressions_unfed_at ON impressions (at_ms) WHERE has_feedback = 0;

-- Idempotency keys of recorded feedback; a key lives as long as its feedback event.
CREATE TABLE feedback_keys (
    request_id   TEXT    NOT NULL,
    candidate_id TEXT    NOT NULL,
    outcome      TEXT    NOT NULL,
    seq          INTEGER NOT NULL UNIQUE REFERENCES events (seq) ON DELETE CASCADE,
    PRIMARY KEY (request_id, candidate_id, outcome)
) WITHOUT ROWID;

CREATE TABLE snapshots (
    seq   INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    blob  BLOB    NOT NULL
);

-- API keys: only the SHA-256 of a key is stored.
CREATE TABLE api_keys (
    id              TEXT    PRIMARY KEY,
    scope           TEXT    NOT NULL CHECK (scope IN ('plugin', 'admin')),
    hash            BLOB    NOT NULL CHECK (length(hash) = 32),
    created_at_ms   INTEGER NOT NULL,
    revoked_at_ms   INTEGER,
    last_used_at_ms INTEGER
);
CREATE INDEX api_keys_created ON api_keys (created_at_ms);
