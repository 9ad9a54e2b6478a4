-- What `runloom serve` needs: the safety kernel's keys on each run, links to alerts and
-- schedules, worker leases; alerts, per-runbook state, settings and API tokens.
ALTER TABLE runs ADD COLUMN trigger_id TEXT;
ALTER TABLE runs ADD COLUMN lock_key TEXT;
ALTER TABLE runs ADD COLUMN rule_key TEXT;
ALTER TABLE runs ADD COLUMN max_concurrency BIGINT NOT NULL DEFAULT 10;
ALTER TABLE runs ADD COLUMN alert_key TEXT;
ALTER TABLE runs ADD COLUMN schedule_key TEXT;
ALTER TABLE runs ADD COLUMN scheduled_at BIGINT;
ALTER TABLE runs ADD COLUMN node TEXT;
ALTER TABLE runs ADD COLUMN lease_until BIGINT;
ALTER TABLE runs ADD COLUMN fence BIGINT NOT NULL DEFAULT 0;
-- The n-th plugin call of a run's body, so a resumed run can replay completed calls.
ALTER TABLE steps ADD COLUMN call_index BIGINT;
-- One run per (runbook, cron trigger, tick), whichever node records it first.
CREATE UNIQUE INDEX runs_by_schedule_key ON runs (schedule_key);
CREATE INDEX runs_by_alert ON runs (alert_key);
CREATE INDEX runs_by_rule ON runs (runbook, rule_key, queued_at);

-- One row per alert episode: Alertmanager's (fingerprint, startsAt).
CREATE TABLE alerts (
    fingerprint   TEXT NOT NULL,
    starts_at     TEXT NOT NULL,
    status        TEXT NOT NULL,
    labels        TEXT NOT NULL,
    annotations   TEXT NOT NULL,
    ends_at       TEXT,
    generator_url TEXT,
    receiver      TEXT,
    group_key     TEXT,
    first_seen    BIGINT NOT NULL,
    last_seen     BIGINT NOT NULL,
    resolved_at   BIGINT,
    notifications BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (fingerprint, starts_at)
);

-- The circuit breaker's memory, per runbook.
CREATE TABLE runbook_state (
    runbook              TEXT PRIMARY KEY,
    consecutive_failures BIGINT NOT NULL DEFAULT 0,
    breaker_open_since   BIGINT,
    breaker_reason       TEXT
);

-- Cluster-wide switches, such as the global pause.
CREATE TABLE settings (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- API bearer tokens, stored as SHA-256 hashes.
CREATE TABLE tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    scopes       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
