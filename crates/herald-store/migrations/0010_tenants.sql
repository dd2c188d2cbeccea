-- Herald schema v10: tenants (Svix "applications"), the event-type catalog, and the tenant
-- of each message and token. A tenant's destinations are keyed `<tenant id>.<name>` (a dot
-- is never part of a name), so a tenant's destinations are one index range of
-- destinations' primary key and existing destinations belong to the operator (no prefix).

CREATE TABLE tenants (
    id         TEXT PRIMARY KEY,           -- app_<32 hex>
    uid        TEXT,                       -- the platform's own id for it, unique
    name       TEXT NOT NULL,
    metadata   TEXT NOT NULL DEFAULT '{}', -- JSON object of strings
    rate_limit BIGINT,                     -- messages per second over all its destinations
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX tenants_uid ON tenants(uid) WHERE uid IS NOT NULL;

CREATE TABLE event_types (
    name         TEXT PRIMARY KEY,
    description  TEXT NOT NULL DEFAULT '',
    schemas      TEXT,                     -- JSON object: version -> JSON Schema
    archived     BIGINT NOT NULL DEFAULT 0,
    deprecated   BIGINT NOT NULL DEFAULT 0,
    feature_flag TEXT,
    group_name   TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

ALTER TABLE messages ADD COLUMN tenant TEXT;
CREATE INDEX messages_tenant ON messages(tenant, id) WHERE tenant IS NOT NULL;

ALTER TABLE tokens ADD COLUMN tenant TEXT;
ALTER TABLE tokens ADD COLUMN expires_at BIGINT;    -- portal tokens are short-lived

ALTER TABLE ui_sessions ADD COLUMN tenant TEXT;     -- a customer portal session's tenant

-- A delivery made or revived by hand (a resend, a DLQ replay, a recover): its later
-- attempts are the Svix API's "manual" ones.
ALTER TABLE deliveries ADD COLUMN manual BIGINT NOT NULL DEFAULT 0;
