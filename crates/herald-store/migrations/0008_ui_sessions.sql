-- Dashboard sessions live in the database, so any node of a cluster serves a signed-in
-- operator (no sticky sessions). Only the SHA-256 of the session id is kept.

CREATE TABLE ui_sessions (
    id_hash    TEXT PRIMARY KEY,
    token_id   TEXT,                      -- NULL for the fixed HERALD_ADMIN_TOKEN
    name       TEXT NOT NULL,
    scopes     TEXT NOT NULL,             -- space-separated
    csrf       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX ui_sessions_expiry ON ui_sessions(expires_at);
