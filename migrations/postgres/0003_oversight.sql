-- guardrank store, PostgreSQL, version 3: human oversight (issue 7).
--
-- `review_items` is the review queue: candidates that were blocked, reported insecure by a user,
-- or scored in the uncertain band. One item per (request, candidate). Raw text only when the
-- server retains text; the hashed features always, so a verdict can train without a join
-- (dropped, with the text, when an item expires). A verdict is also logged as an event: the
-- queue is a side table, the log stays the truth for learning.
CREATE TABLE review_items (
    id            BIGSERIAL PRIMARY KEY,
    request_id    TEXT    NOT NULL,
    candidate_id  TEXT    NOT NULL,
    user_id       TEXT    NOT NULL,
    reason        TEXT    NOT NULL CHECK (reason IN ('blocked', 'reported', 'uncertain')),
    status        TEXT    NOT NULL CHECK (status IN ('pending', 'insecure', 'safe', 'expired')),
    risk          DOUBLE PRECISION NOT NULL,
    -- Rule ids that hit, as ",a,b," (so a rule filter is one strpos()).
    rules         TEXT    NOT NULL,
    findings      TEXT    NOT NULL,
    text          TEXT,
    features      BYTEA,
    created_at_ms BIGINT  NOT NULL,
    decided_at_ms BIGINT,
    decided_by    TEXT,
    note          TEXT,
    -- The user had accepted the candidate when it was judged.
    accepted      BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (request_id, candidate_id)
);
CREATE INDEX review_items_status ON review_items (status, id);
CREATE INDEX review_items_user ON review_items (user_id);
CREATE INDEX review_items_decided ON review_items (decided_at_ms) WHERE decided_at_ms IS NOT NULL;

-- Every admin action: who (a key id, never a key), what, on what, when.
CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    at_ms   BIGINT  NOT NULL,
    key_id  TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    details TEXT    NOT NULL
);
