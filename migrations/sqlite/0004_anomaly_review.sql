-- guardrank store, SQLite, version 4: review items for users whose usage crossed the anomaly
-- threshold (issue 8). SQLite cannot alter a CHECK constraint, so the table is rebuilt with the
-- new one and every row copied with its id.
CREATE TABLE review_items_v4 (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id    TEXT    NOT NULL,
    candidate_id  TEXT    NOT NULL,
    user_id       TEXT    NOT NULL,
    reason        TEXT    NOT NULL CHECK (reason IN ('blocked', 'reported', 'uncertain', 'anomaly')),
    status        TEXT    NOT NULL CHECK (status IN ('pending', 'insecure', 'safe', 'expired')),
    risk          REAL    NOT NULL,
    rules         TEXT    NOT NULL,
    findings      TEXT    NOT NULL,
    text          TEXT,
    features      BLOB,
    created_at_ms INTEGER NOT NULL,
    decided_at_ms INTEGER,
    decided_by    TEXT,
    note          TEXT,
    accepted      INTEGER NOT NULL DEFAULT 0 CHECK (accepted IN (0, 1)),
    UNIQUE (request_id, candidate_id)
);
INSERT INTO review_items_v4 (id, request_id, candidate_id, user_id, reason, status, risk, rules, findings, text,
                             features, created_at_ms, decided_at_ms, decided_by, note, accepted)
    SELECT id, request_id, candidate_id, user_id, reason, status, risk, rules, findings, text,
           features, created_at_ms, decided_at_ms, decided_by, note, accepted
    FROM review_items;
-- Ids of purged items are never reused: the new table's AUTOINCREMENT counter continues the
-- old one's (verdict events in the log name item ids).
DELETE FROM sqlite_sequence WHERE name = 'review_items_v4';
INSERT INTO sqlite_sequence (name, seq) SELECT 'review_items_v4', seq FROM sqlite_sequence WHERE name = 'review_items';
DROP TABLE review_items;
ALTER TABLE review_items_v4 RENAME TO review_items;
CREATE INDEX review_items_status ON review_items (status, id);
CREATE INDEX review_items_user ON review_items (user_id);
CREATE INDEX review_items_decided ON review_items (decided_at_ms) WHERE decided_at_ms IS NOT NULL;
