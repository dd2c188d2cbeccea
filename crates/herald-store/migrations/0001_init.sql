-- Herald schema v1, shared by the SQLite and Postgres stores (one source of truth: only
-- types and syntax both accept). Scheduling columns are epoch milliseconds (BIGINT).

CREATE TABLE destinations (
    name            TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    spec            TEXT NOT NULL,          -- sealed JSON (XChaCha20-Poly1305, master key)
    enabled         BIGINT NOT NULL DEFAULT 1,
    disabled_reason TEXT,
    paused_until    BIGINT,                -- Retry-After pause of the whole destination
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    event_type      TEXT NOT NULL,
    idempotency_key TEXT,
    body            TEXT NOT NULL,          -- JSON: text, title, severity, payload, channels, attachments
    created_at      BIGINT NOT NULL
);

CREATE TABLE deliveries (
    id                  TEXT PRIMARY KEY,
    message_id          TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    destination         TEXT NOT NULL,
    status              TEXT NOT NULL,      -- pending | in_flight | delivered | dead | failed_over | discarded
    attempt_count       BIGINT NOT NULL DEFAULT 0,
    budget_base         BIGINT NOT NULL DEFAULT 0, -- attempts made before the last replay
    next_attempt_at     BIGINT,
    lease_until         BIGINT,
    lease_token         TEXT,
    last_status_code    BIGINT,
    last_error          TEXT,
    fallback_of         TEXT,
    dead_at             BIGINT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX deliveries_queue   ON deliveries(destination, status, next_attempt_at);
CREATE INDEX deliveries_message ON deliveries(message_id);
CREATE INDEX deliveries_status  ON deliveries(status, id);
CREATE INDEX deliveries_dest    ON deliveries(destination, id);
CREATE INDEX deliveries_lease   ON deliveries(lease_until) WHERE status = 'in_flight';

CREATE TABLE attempts (
    delivery_id      TEXT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    number           BIGINT NOT NULL,
    started_at       BIGINT NOT NULL,
    duration_ms      BIGINT NOT NULL,
    outcome          TEXT NOT NULL,         -- delivered | retry | permanent
    status_code      BIGINT,
    error_class      TEXT,
    error            TEXT,
    response_excerpt TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (delivery_id, number)
);

CREATE TABLE idempotency_keys (
    key          TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    response     TEXT NOT NULL,             -- the original 202 body, replayed verbatim
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX idempotency_expiry ON idempotency_keys(expires_at);

CREATE TABLE tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    hash         TEXT NOT NULL,             -- SHA-256 of the secret part
    scopes       TEXT NOT NULL,             -- space-separated
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);

CREATE TABLE audit_log (
    seq       BIGINT PRIMARY KEY,
    at        TEXT NOT NULL,                -- RFC 3339, hashed as stored
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    resource  TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
