-- guardrank store, PostgreSQL, version 5 (issue 5): what SQLite's migration 5 did, for the same
-- reason. A feedback commit put each event's user id into an index ordered by user, and marked
-- the impressions its feedback joined: both a page per event, scattered over the index and the
-- table, written to the WAL and again when the page is flushed.
--
-- 1. Only impressions are indexed by user. Erasure finds a user's feedback through the user's
--    impressions and the idempotency keys of their feedback (every feedback event has one, and
--    keeps its impression while it has its user id).
DROP INDEX events_user_id;
CREATE INDEX events_user_impressions ON events (user_id) WHERE kind = 'impression';

-- 2. `impressions.has_feedback` is now set by compaction, not by the commit that records the
--    feedback: FALSE means "not examined yet". Compaction examines each impression older than its
--    cut once, in chunks: it deletes the ones without an idempotency key (no feedback) and marks
--    the others, which leave `impressions_unfed_at` and are never examined again. The column,
--    the index and the rows are as they were; rows marked by earlier versions are right as they
--    are.
