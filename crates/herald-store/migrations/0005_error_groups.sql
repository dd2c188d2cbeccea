-- Error groups (DESIGN §9): one row per group of error reports. A report updates its group
-- in the same transaction that accepts the alert message it may cause, so concurrent
-- reports of one group never alert twice.

CREATE TABLE error_groups (
    id                TEXT PRIMARY KEY,        -- grp_<uuid v7>: time-ordered, the paging cursor
    group_key         TEXT NOT NULL UNIQUE,    -- SHA-256 of the service and the grouping parts
    service           TEXT NOT NULL,
    fingerprint       TEXT NOT NULL,           -- the grouping parts, readable
    title             TEXT NOT NULL,
    culprit           TEXT,
    level             TEXT NOT NULL,
    environment       TEXT,
    status            TEXT NOT NULL,           -- unresolved | resolved
    report_count      BIGINT NOT NULL,
    first_seen        BIGINT NOT NULL,
    last_seen         BIGINT NOT NULL,
    window_start      BIGINT NOT NULL,         -- the current counting window
    window_count      BIGINT NOT NULL,
    prev_window_count BIGINT NOT NULL,
    last_alert_at     BIGINT,
    folded            BIGINT NOT NULL,         -- reports since the last alert that did not alert
    pending_reason    TEXT,                    -- an alert held back by the window
    last_event        TEXT NOT NULL,           -- JSON of the latest report
    last_message_id   TEXT,                    -- the latest alert message
    resolved_at       BIGINT,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX error_groups_status  ON error_groups(status, id);
CREATE INDEX error_groups_service ON error_groups(service, id);
