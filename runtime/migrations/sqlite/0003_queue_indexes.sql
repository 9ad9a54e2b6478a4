-- Claims read the oldest queued runs and count the running ones on every claim (and, on
-- SQLite, at the end of every run): partial covering indexes hold only those rows, so neither
-- query visits the table or sorts.
CREATE INDEX runs_queued ON runs (status, id, runbook, lock_key, max_concurrency) WHERE status = 'queued';
CREATE INDEX runs_running ON runs (status, runbook, lock_key) WHERE status = 'running';
