-- guardrank store, SQLite, version 2: the model registry.
--
-- Versions the retraining job published, with their files and what it measured. Which one is
-- live is not stored here: it is the newest `model_activated` event of the log, so every
-- replica and every restart agrees on it.
CREATE TABLE models (
    version             TEXT    PRIMARY KEY,
    created_at_ms       INTEGER NOT NULL,
    trained_through_seq INTEGER NOT NULL CHECK (trained_through_seq >= 0),
    metrics             TEXT    NOT NULL,
    file                BLOB    NOT NULL
);
CREATE INDEX models_created ON models (created_at_ms);
