-- Runs, their steps and their logs. Times are Unix milliseconds; JSON is stored as text.
CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    runbook          TEXT NOT NULL,
    runbook_hash     TEXT NOT NULL,
    status           TEXT NOT NULL,
    trigger_kind     TEXT NOT NULL,
    trigger          TEXT NOT NULL,
    params           TEXT NOT NULL,
    dry_run          INTEGER NOT NULL DEFAULT 0,
    reason           TEXT,
    error_kind       TEXT,
    blame            TEXT,
    output           TEXT,
    queued_at        BIGINT NOT NULL,
    started_at       BIGINT,
    ended_at         BIGINT,
    attempt          BIGINT NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_runbook ON runs (runbook, id);
CREATE INDEX runs_by_status ON runs (status, id);

CREATE TABLE steps (
    run_id       TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq          BIGINT NOT NULL,
    parent       BIGINT,
    kind         TEXT NOT NULL,
    name         TEXT NOT NULL,
    plugin       TEXT,
    action       TEXT,
    action_kind  TEXT,
    plugin_hash  TEXT,
    status       TEXT NOT NULL,
    input        TEXT,
    output       TEXT,
    error_kind   TEXT,
    error        TEXT,
    blame        TEXT,
    attempts     BIGINT NOT NULL DEFAULT 1,
    started_at   BIGINT NOT NULL,
    ended_at     BIGINT,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE logs (
    run_id   TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq      BIGINT NOT NULL,
    step     BIGINT,
    ts       BIGINT NOT NULL,
    level    TEXT NOT NULL,
    source   TEXT NOT NULL,
    message  TEXT NOT NULL,
    fields   TEXT,
    PRIMARY KEY (run_id, seq)
);
