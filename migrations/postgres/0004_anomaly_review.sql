-- guardrank store, PostgreSQL, version 4: review items for users whose usage crossed the
-- anomaly threshold (issue 8). Only the reason's CHECK constraint changes.
ALTER TABLE review_items DROP CONSTRAINT review_items_reason_check;
ALTER TABLE review_items ADD CONSTRAINT review_items_reason_check
    CHECK (reason IN ('blocked', 'reported', 'uncertain', 'anomaly'));
