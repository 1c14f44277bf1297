-- The sidecar's scheduler (enkf-sidecar, docs/sidecar.md): one row per twin and due time
-- ("slot") of its schedule (enkf.twins.config -> 'schedule'). A slot's row is written in the
-- same transaction as the twin's runs, under the twin's advisory lock, so that each slot runs
-- exactly once however many sidecars poll the database.

CREATE TABLE enkf.schedule_slots (
    twin_id         bigint NOT NULL REFERENCES enkf.twins ON DELETE CASCADE,
    slot            timestamptz NOT NULL,
    status          text NOT NULL CHECK (status IN ('succeeded', 'retrying', 'failed', 'superseded')),
    attempts        int4 NOT NULL CHECK (attempts >= 1),
    next_attempt_at timestamptz,
    last_error      text,
    -- The assimilation run of the successful attempt.
    run_id          bigint,
    -- Host and process id of the sidecar that made the last attempt.
    sidecar         text NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (twin_id, slot)
);

SELECT pg_catalog.pg_extension_config_dump('enkf.schedule_slots', '');

COMMENT ON TABLE enkf.schedule_slots IS 'Scheduled runs of the enkf-sidecar: one row per twin and due time (slot) of its schedule, written in the same transaction as the runs. Each slot runs once; failed attempts are retried with backoff up to a limit and each is recorded in enkf.runs. Kept by pg_dump.';
COMMENT ON COLUMN enkf.schedule_slots.slot IS 'The due time: an occurrence of the twin''s schedule.cron in schedule.timezone. After downtime only the latest missed occurrence runs.';
COMMENT ON COLUMN enkf.schedule_slots.status IS 'succeeded; retrying (failed, another attempt at next_attempt_at); failed (attempts exhausted); superseded (a later slot ran before this one was retried).';
COMMENT ON COLUMN enkf.schedule_slots.attempts IS 'Attempts made so far, failed ones included.';
COMMENT ON COLUMN enkf.schedule_slots.next_attempt_at IS 'When a retrying slot may be attempted again (exponential backoff with jitter).';
COMMENT ON COLUMN enkf.schedule_slots.last_error IS 'Error of the last failed attempt (SQLSTATE and message).';
COMMENT ON COLUMN enkf.schedule_slots.run_id IS 'enkf.runs.run_id of the assimilation of the successful attempt.';
COMMENT ON COLUMN enkf.schedule_slots.sidecar IS 'host:pid of the sidecar that made the last attempt.';
