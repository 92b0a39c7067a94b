-- guardrank store, SQLite, version 5 (issue 5): a feedback commit no longer rewrites pages of
-- indices all over the file. Its events' user ids went into a B-tree ordered by user, and each
-- commit marked its impressions as having feedback: both a random page per event, written to
-- the WAL and again by the checkpoint.
--
-- 1. Only impressions are indexed by user. Erasure finds a user's feedback through the user's
--    impressions and the idempotency keys of their feedback (every feedback event has one, and
--    keeps its impression while it has its user id).
DROP INDEX events_user_id;
CREATE INDEX events_user_impressions ON events (user_id) WHERE kind = 'impression';

-- 2. `impressions.has_feedback` is now set by compaction, not by the commit that records the
--    feedback: 0 means "not examined yet". Compaction examines each impression older than its
--    cut once, in chunks: it deletes the ones without an idempotency key (no feedback) and marks
--    the others, which leave `impressions_unfed_at` and are never examined again. The column,
--    the index and the rows are as they were; rows marked by earlier versions are right as they
--    are.
