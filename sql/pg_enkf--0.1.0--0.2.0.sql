\echo Use "ALTER EXTENSION pg_enkf UPDATE TO '0.2.0'" to load this file. \quit
-- pg_enkf 0.1.0 -> 0.2.0.
--
-- RELEASED (sql/releases.toml): frozen. Databases were updated with exactly this text; later
-- changes go into pg_enkf--0.2.0--0.3.0.sql.

-- The revision check's fingerprints (0.2.0): per checkpoint, the XOR of a hash of each of the
-- week's rows in the observation table and their number. NULL in checkpoints written by 0.1.0;
-- the first enkf.assimilate of such a twin compares its weeks one by one and fills them in.
ALTER TABLE enkf.checkpoints ADD COLUMN rows_print int8, ADD COLUMN source_rows int4;

-- Minimum necessary access (0.2.0): location grants and the visibility test the views use.
-- Minimum necessary access: which roles may see which locations (jurisdictions) of the
-- twins' results. A row (role, location) lets members of role see that location; location
-- '*' means every location. Row-level security on enkf.checkpoints and enkf.forecasts and the
-- BI views below filter by it (see sql/security.sql and docs/hipaa.md). Table owners and
-- superusers, to whom row-level security does not apply, see everything.
CREATE TABLE enkf.location_grants (
    role       name NOT NULL,
    location   text NOT NULL,
    granted_by name NOT NULL DEFAULT current_user,
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role, location)
);
SELECT pg_catalog.pg_extension_config_dump('enkf.location_grants', '');

-- Whether the current user may see a location's results: always when row-level security does
-- not apply to them on enkf.checkpoints (owner, superuser, BYPASSRLS), else through a grant.
-- Plain SQL without SET so that the planner inlines it (one hashed probe, not a call per row);
-- every name and operator is schema-qualified instead, so the caller's search_path cannot
-- change its meaning. It reads enkf.location_grants under the caller.
CREATE FUNCTION enkf.location_visible(loc text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT NOT pg_catalog.row_security_active('enkf.checkpoints'::pg_catalog.regclass)
        OR EXISTS (SELECT 1 FROM enkf.location_grants g
                    WHERE (g.location OPERATOR(pg_catalog.=) loc OR g.location OPERATOR(pg_catalog.=) '*')
                      AND pg_catalog.pg_has_role(g.role, 'MEMBER'))
$$;

-- The BI views become security barriers that keep only the caller's locations.
CREATE OR REPLACE VIEW enkf.forecast_quantiles WITH (security_barrier) AS
SELECT t.name AS twin, f.model, f.location, f.reference_date, f.horizon, f.target_end_date,
       q.quantile, q.value, f.run_id
FROM enkf.forecasts f
JOIN enkf.twins t USING (twin_id)
CROSS JOIN LATERAL unnest(f.quantile_levels, f.quantile_values) AS q(quantile, value)
WHERE enkf.location_visible(f.location);

CREATE OR REPLACE VIEW enkf.hubverse_forecasts WITH (security_barrier) AS
SELECT CASE WHEN f.model = 'enkf' THEN t.name ELSE t.name || '-baseline' END AS model_id,
       f.reference_date,
       (t.config #>> '{forecast,target}')::text AS target,
       f.horizon,
       f.target_end_date,
       f.location,
       'quantile'::text AS output_type,
       q.quantile AS output_type_id,
       q.value
FROM enkf.forecasts f
JOIN enkf.twins t USING (twin_id)
CROSS JOIN LATERAL unnest(f.quantile_levels, f.quantile_values) AS q(quantile, value)
WHERE enkf.location_visible(f.location);

CREATE OR REPLACE VIEW enkf.twin_summary WITH (security_barrier) AS
SELECT t.twin_id, t.name, t.observations, t.locations, t.model, t.members, t.config_hash,
       t.origin, t.created_by, t.created_at,
       (SELECT max(c.week_end) FROM enkf.checkpoints c
         WHERE c.twin_id = t.twin_id AND enkf.location_visible(c.location)) AS last_week,
       (SELECT count(DISTINCT c.location) FROM enkf.checkpoints c
         WHERE c.twin_id = t.twin_id AND enkf.location_visible(c.location)) AS locations_assimilated
FROM enkf.twins t;

CREATE OR REPLACE VIEW enkf.state_estimates WITH (security_barrier) AS
WITH latest AS (
    SELECT DISTINCT ON (twin_id, location) twin_id, location, week_end, ensemble
    FROM enkf.checkpoints
    WHERE enkf.location_visible(location)
    ORDER BY twin_id, location, week_end DESC
)
SELECT t.name AS twin, l.location, l.week_end, v.variable,
       avg(x) AS mean,
       percentile_cont(0.05) WITHIN GROUP (ORDER BY x) AS q05,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY x) AS q95
FROM latest l
JOIN enkf.twins t USING (twin_id)
CROSS JOIN LATERAL unnest(ARRAY['S', 'E', 'I', 'R', 'H', 'beta', 'ihr']) WITH ORDINALITY AS v(variable, k)
CROSS JOIN LATERAL unnest(l.ensemble[v.k:v.k][:]) AS x
GROUP BY t.name, l.location, l.week_end, v.variable, v.k
ORDER BY 1, 2, v.k;

-- The setting of small-cell suppression, read through the library so that it is registered.
CREATE FUNCTION enkf."suppression_threshold"() RETURNS INT
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'suppression_threshold_wrapper';

-- ---- sql/scheduler.sql as of 0.2.0 ----
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

-- ---- sql/security.sql as of 0.2.0 ----
-- HIPAA technical safeguards that live in the database (docs/hipaa.md): row-level security by
-- location on the twins' results, small-cell suppression in the publication views, the group
-- roles of minimum necessary access, and a compliance report. Nothing here is SECURITY
-- DEFINER: every function runs under its caller, so pgaudit logs the caller and grants and
-- row-level security apply to them.

-- Whether the current user is a member of a role that may not exist yet (pg_has_role raises
-- for unknown roles; policies must work before enkf.create_roles() is called).
CREATE FUNCTION enkf.is_member_of(r name) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) r)
                THEN pg_catalog.pg_has_role(r, 'MEMBER') ELSE false END
$$;

-- Row-level security by location. Assimilation and forecasts run under the caller, so an
-- operator reads and writes only the locations granted to them; the twin functions skip the
-- others (see enkf.assimilate) instead of failing on them.
ALTER TABLE enkf.checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE enkf.forecasts ENABLE ROW LEVEL SECURITY;
CREATE POLICY by_location ON enkf.checkpoints
    USING (enkf.location_visible(location)) WITH CHECK (enkf.location_visible(location));
CREATE POLICY by_location ON enkf.forecasts
    USING (enkf.location_visible(location)) WITH CHECK (enkf.location_visible(location));

-- Each role sees its own grants; administrators of twins see and manage all of them.
ALTER TABLE enkf.location_grants ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_grants ON enkf.location_grants FOR SELECT
    USING (pg_catalog.pg_has_role(role, 'MEMBER'));
CREATE POLICY administrators ON enkf.location_grants
    USING (enkf.is_member_of('enkf_admin')) WITH CHECK (enkf.is_member_of('enkf_admin'));

-- Small-cell suppression: counts from 1 to threshold - 1 are withheld (NULL, suppressed =
-- true); zeros and missing weeks are shown as they are. Threshold: enkf.suppression_threshold.
CREATE FUNCTION enkf.suppressed(observed float8) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(observed OPERATOR(pg_catalog.>) 0
                    AND observed OPERATOR(pg_catalog.<) enkf.suppression_threshold(), false)
$$;

-- Publication views. Observed counts, as assimilated, with small cells withheld.
CREATE VIEW enkf.observed_counts WITH (security_barrier) AS
SELECT t.name AS twin, c.location, c.week_end,
       CASE WHEN enkf.suppressed(c.observed) THEN NULL ELSE c.observed END AS observed,
       enkf.suppressed(c.observed) AS suppressed
FROM enkf.checkpoints c
JOIN enkf.twins t USING (twin_id)
WHERE enkf.location_visible(c.location);

-- One row per forecast: median, 50% and 95% intervals, and the count observed for the target
-- week once it is known (small cells withheld).
CREATE VIEW enkf.forecast_summary WITH (security_barrier) AS
SELECT t.name AS twin, f.model, f.location, f.reference_date, f.horizon, f.target_end_date,
       f.quantile_values[array_position(f.quantile_levels, 0.5::float8)] AS median,
       f.quantile_values[array_position(f.quantile_levels, 0.25::float8)] AS lower_50,
       f.quantile_values[array_position(f.quantile_levels, 0.75::float8)] AS upper_50,
       f.quantile_values[array_position(f.quantile_levels, 0.025::float8)] AS lower_95,
       f.quantile_values[array_position(f.quantile_levels, 0.975::float8)] AS upper_95,
       CASE WHEN enkf.suppressed(o.observed) THEN NULL ELSE o.observed END AS observed,
       enkf.suppressed(o.observed) AS observed_suppressed
FROM enkf.forecasts f
JOIN enkf.twins t USING (twin_id)
LEFT JOIN enkf.checkpoints o
       ON o.twin_id = f.twin_id AND o.location = f.location AND o.week_end = f.target_end_date
WHERE enkf.location_visible(f.location);

-- The group roles of minimum necessary access (NOLOGIN; a DBA grants them to login roles):
--   enkf_reader   published results: the BI views, with suppression, for granted locations;
--   enkf_analyst  + raw forecasts, run log, state estimates, scoring, the array functions;
--   enkf_operator + assimilation and forecasts (writes checkpoints, forecasts, runs);
--   enkf_admin    + creates and drops twins, manages enkf.location_grants.
-- Each includes the one above. Idempotent: creates missing roles and (re)applies the grants.
-- Needs CREATEROLE and ownership of the extension's objects (the DBA who created it).
CREATE FUNCTION enkf.create_roles()
RETURNS TABLE (role name, created boolean, description text)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    spec record;
BEGIN
    FOR spec IN
        SELECT * FROM (VALUES
            (1, 'enkf_reader'::name, NULL::name,
             'pg_enkf: reads published results (BI views with small-cell suppression) for the locations granted in enkf.location_grants'),
            (2, 'enkf_analyst', 'enkf_reader',
             'pg_enkf: enkf_reader plus raw forecasts, run log, state estimates, enkf.score and the array functions'),
            (3, 'enkf_operator', 'enkf_analyst',
             'pg_enkf: enkf_analyst plus enkf.assimilate and enkf.forecast for granted locations (needs SELECT on the observation tables)'),
            (4, 'enkf_admin', 'enkf_operator',
             'pg_enkf: enkf_operator plus enkf.create_twin, enkf.drop_twin and managing enkf.location_grants')
        ) AS v(ord, name, inherits, what) ORDER BY ord
    LOOP
        role := spec.name;
        description := spec.what;
        created := NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = spec.name);
        IF created THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', spec.name);
        END IF;
        EXECUTE format('COMMENT ON ROLE %I IS %L', spec.name, spec.what);
        IF spec.inherits IS NOT NULL THEN
            EXECUTE format('GRANT %I TO %I', spec.inherits, spec.name);
        END IF;
        RETURN NEXT;
    END LOOP;

    -- Readers: the schema, the publication views and what those views call.
    GRANT USAGE ON SCHEMA enkf TO enkf_reader;
    GRANT SELECT ON enkf.hubverse_forecasts, enkf.forecast_summary, enkf.observed_counts,
                    enkf.twin_summary TO enkf_reader;
    GRANT SELECT ON enkf.location_grants TO enkf_reader;
    GRANT EXECUTE ON FUNCTION enkf.location_visible(text), enkf.is_member_of(name),
                              enkf.suppressed(float8), enkf.suppression_threshold(),
                              enkf.compliance_report(), enkf.duration_ms(text) TO enkf_reader;
    -- Analysts.
    GRANT SELECT ON enkf.forecast_quantiles, enkf.state_estimates, enkf.run_log TO enkf_analyst;
    GRANT SELECT ON enkf.twins, enkf.runs, enkf.forecasts TO enkf_analyst;
    GRANT EXECUTE ON FUNCTION
        enkf.score(text, date, date),
        enkf.analyze(float8[], float8[], float8[], int4[], text, float8, float8, float8, bool, int8)
        TO enkf_analyst;
    EXECUTE (SELECT format('GRANT EXECUTE ON FUNCTION %s TO enkf_analyst', p.oid::regprocedure)
               FROM pg_proc p WHERE p.pronamespace = 'enkf'::regnamespace
                AND p.proname = 'synthetic_surveillance');
    -- Operators: assimilation and forecasts write checkpoints, forecasts and runs, and set a
    -- twin's origin on its first run.
    GRANT SELECT, INSERT, UPDATE, DELETE ON enkf.checkpoints, enkf.forecasts TO enkf_operator;
    GRANT INSERT ON enkf.runs TO enkf_operator;
    GRANT UPDATE (origin) ON enkf.twins TO enkf_operator;
    GRANT USAGE ON SEQUENCE enkf.runs_run_id_seq TO enkf_operator;
    GRANT EXECUTE ON FUNCTION enkf.assimilate(text, timestamptz),
                              enkf.forecast(text, int4, float8[]) TO enkf_operator;
    -- Administrators of twins.
    GRANT INSERT, UPDATE, DELETE ON enkf.twins TO enkf_admin;
    GRANT USAGE ON SEQUENCE enkf.twins_twin_id_seq TO enkf_admin;
    GRANT INSERT, UPDATE, DELETE ON enkf.location_grants TO enkf_admin;
    EXECUTE (SELECT string_agg(format('GRANT EXECUTE ON FUNCTION %s TO enkf_admin', p.oid::regprocedure), '; ')
               FROM pg_proc p WHERE p.pronamespace = 'enkf'::regnamespace
                AND p.proname IN ('create_twin', 'drop_twin'));
    -- The scheduler's bookkeeping, when present (the sidecar runs as an operator).
    IF to_regclass('enkf.schedule_slots') IS NOT NULL THEN
        EXECUTE 'GRANT SELECT, INSERT, UPDATE ON enkf.schedule_slots TO enkf_operator';
    END IF;
END
$$;

-- One row per technical control of the HIPAA checklist that PostgreSQL can see. Runs under the
-- caller: what a role may not see (superuser-only settings, pg_hba_file_rules) is 'unknown'.
CREATE FUNCTION enkf.compliance_report()
RETURNS TABLE (control text, status text, detail text, remedy text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v text;
    v2 text;
    n bigint;
    lines text;
    classes text[];
    missing text[];
    roles_checked int;
    too_long text;
BEGIN
    -- 1. TLS in transit.
    control := 'tls';
    v := (SELECT s.setting FROM pg_settings s WHERE s.name = 'ssl');
    v2 := (SELECT s.setting FROM pg_settings s WHERE s.name = 'ssl_min_protocol_version');
    IF v IS NULL THEN
        status := 'unknown'; detail := 'ssl is not visible to this role';
    ELSIF v = 'on' AND v2 IS NULL THEN
        status := 'unknown'; detail := 'ssl = on; ssl_min_protocol_version is not visible to this role';
    ELSIF v = 'on' AND v2 IN ('TLSv1.2', 'TLSv1.3') THEN
        status := 'pass'; detail := format('ssl = on, ssl_min_protocol_version = %s', v2);
    ELSE
        status := 'fail'; detail := format('ssl = %s, ssl_min_protocol_version = %s', v, coalesce(v2, '?'));
    END IF;
    remedy := 'ssl = on, ssl_min_protocol_version = ''TLSv1.2'' (or TLSv1.3), hostssl lines only in pg_hba.conf';
    RETURN NEXT;

    -- 2. Password hashing.
    control := 'password_encryption';
    v := (SELECT s.setting FROM pg_settings s WHERE s.name = 'password_encryption');
    status := CASE WHEN v IS NULL THEN 'unknown' WHEN v = 'scram-sha-256' THEN 'pass' ELSE 'fail' END;
    detail := format('password_encryption = %s', coalesce(v, 'not visible'));
    remedy := 'password_encryption = ''scram-sha-256'', then reset every password so no MD5 hash remains';
    RETURN NEXT;

    -- 3. Client authentication methods.
    control := 'pg_hba_auth_methods';
    remedy := 'use scram-sha-256 (or cert) in every pg_hba.conf line; remove trust, password and md5 lines';
    IF has_table_privilege('pg_catalog.pg_hba_file_rules', 'SELECT') THEN
        SELECT count(*), string_agg(format('line %s: %s', h.line_number, coalesce(h.auth_method, h.error)), '; ' ORDER BY h.line_number)
          INTO n, lines
          FROM pg_hba_file_rules h
         WHERE h.auth_method IN ('trust', 'password', 'md5') OR h.error IS NOT NULL;
        status := CASE WHEN n = 0 THEN 'pass' ELSE 'fail' END;
        detail := CASE WHEN n = 0 THEN 'no trust, password or md5 line in pg_hba.conf' ELSE lines END;
    ELSE
        status := 'unknown';
        detail := 'pg_hba_file_rules is readable by superusers only (or a role granted SELECT on it)';
    END IF;
    RETURN NEXT;

    -- 4. pgaudit loaded. Its settings exist in pg_settings only when the module is loaded.
    control := 'pgaudit_loaded';
    v := (SELECT s.setting FROM pg_settings s WHERE s.name = 'shared_preload_libraries');
    IF v IS NOT NULL AND v ~ '(^|[\s,])"?pgaudit"?($|[\s,])' THEN
        status := 'pass'; detail := format('shared_preload_libraries = %s', v);
    ELSIF v IS NOT NULL THEN
        status := 'fail'; detail := format('shared_preload_libraries = %s', v);
    ELSIF EXISTS (SELECT 1 FROM pg_settings s WHERE s.name = 'pgaudit.log') THEN
        status := 'pass'; detail := 'pgaudit is loaded in this session (shared_preload_libraries not visible to this role)';
    ELSE
        status := 'unknown'; detail := 'shared_preload_libraries is not visible to this role and pgaudit is not loaded in this session';
    END IF;
    remedy := 'shared_preload_libraries = ''pgaudit'' (restart), CREATE EXTENSION pgaudit';
    RETURN NEXT;

    -- 5. pgaudit classes.
    control := 'pgaudit_classes';
    v := (SELECT s.setting FROM pg_settings s WHERE s.name = 'pgaudit.log');
    IF v IS NULL THEN
        status := 'unknown'; detail := 'pgaudit.log is not set (pgaudit not loaded) or not visible';
    ELSE
        classes := ARRAY(SELECT lower(trim(c)) FROM unnest(string_to_array(v, ',')) c);
        missing := ARRAY(
            SELECT w FROM unnest(ARRAY['read', 'write', 'function', 'role', 'ddl']) w
             WHERE (NOT (w = ANY (classes) OR 'all' = ANY (classes))) OR ('-' || w) = ANY (classes));
        status := CASE WHEN cardinality(missing) = 0 THEN 'pass' ELSE 'fail' END;
        detail := format('pgaudit.log = %s', v) ||
                  CASE WHEN cardinality(missing) > 0 THEN format('; missing: %s', array_to_string(missing, ', ')) ELSE '' END;
    END IF;
    remedy := 'pgaudit.log = ''read, write, function, role, ddl''';
    RETURN NEXT;

    -- 6. Statement parameters in the audit log (they can carry PHI).
    control := 'pgaudit_log_parameter';
    v := (SELECT s.setting FROM pg_settings s WHERE s.name = 'pgaudit.log_parameter');
    status := CASE WHEN v IS NULL THEN 'unknown' WHEN v = 'off' THEN 'pass' ELSE 'fail' END;
    detail := format('pgaudit.log_parameter = %s', coalesce(v, 'not set'));
    remedy := 'pgaudit.log_parameter = off, or document why parameters must be logged and protect the log as PHI';
    RETURN NEXT;

    -- 7. Connection logging.
    control := 'connection_logging';
    v := (SELECT s.setting FROM pg_settings s WHERE s.name = 'log_connections');
    v2 := (SELECT s.setting FROM pg_settings s WHERE s.name = 'log_disconnections');
    status := CASE WHEN v IS NULL OR v2 IS NULL THEN 'unknown'
                   WHEN v = 'on' AND v2 = 'on' THEN 'pass' ELSE 'fail' END;
    detail := format('log_connections = %s, log_disconnections = %s', coalesce(v, '?'), coalesce(v2, '?'));
    remedy := 'log_connections = on, log_disconnections = on';
    RETURN NEXT;

    -- 8. Idle session timeout of the login roles of the pg_enkf roles (or the server default).
    control := 'idle_session_timeout';
    v := (SELECT s.setting FROM pg_settings s WHERE s.name = 'idle_session_timeout');  -- in ms
    -- Members through pg_auth_members, not pg_has_role, which is true for every superuser.
    WITH RECURSIVE members(roleid) AS (
        SELECT r.oid FROM pg_roles r
         WHERE r.rolname IN ('enkf_reader', 'enkf_analyst', 'enkf_operator', 'enkf_admin')
        UNION
        SELECT m.member FROM pg_auth_members m JOIN members ON m.roleid = members.roleid
    ), logins AS (
        SELECT r.oid, r.rolname
          FROM pg_roles r JOIN members ON members.roleid = r.oid
         WHERE r.rolcanlogin
    ), effective AS (
        -- A per-role (and per-database) setting overrides the server's.
        SELECT l.rolname,
               coalesce(enkf.duration_ms((
                   SELECT substr(c, length('idle_session_timeout=') + 1)
                     FROM pg_db_role_setting d, unnest(d.setconfig) c
                    WHERE d.setrole = l.oid
                      AND d.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
                      AND c LIKE 'idle_session_timeout=%'
                    ORDER BY d.setdatabase DESC LIMIT 1)), v::float8) AS ms
          FROM logins l
    )
    SELECT count(*),
           string_agg(format('%s: %s', e.rolname, CASE WHEN e.ms IS NULL THEN '?' WHEN e.ms = 0 THEN 'none' ELSE (e.ms / 60000)::numeric(10, 1) || ' min' END), ', ')
             FILTER (WHERE e.ms IS NULL OR e.ms <= 0 OR e.ms > 900000)
      INTO roles_checked, too_long
      FROM effective e;
    IF roles_checked = 0 THEN
        status := CASE WHEN v IS NULL THEN 'unknown' WHEN v::float8 BETWEEN 1 AND 900000 THEN 'pass' ELSE 'fail' END;
        detail := format('no login role is a member of the enkf_* roles; server idle_session_timeout = %s ms', coalesce(v, '?'));
    ELSIF too_long IS NULL THEN
        status := 'pass';
        detail := format('%s login role(s) of the enkf_* roles time out within 15 minutes', roles_checked);
    ELSE
        status := 'fail';
        detail := format('over 15 minutes or none: %s', too_long);
    END IF;
    remedy := 'ALTER ROLE <login> SET idle_session_timeout = ''15min'' for each analyst login (or set it server-wide)';
    RETURN NEXT;

    -- 9. Row-level security on the twins' tables.
    control := 'row_level_security';
    SELECT string_agg(c.relname::text, ', ') INTO lines
      FROM pg_class c
     WHERE c.oid IN ('enkf.checkpoints'::regclass, 'enkf.forecasts'::regclass)
       AND NOT (c.relrowsecurity AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid));
    status := CASE WHEN lines IS NULL THEN 'pass' ELSE 'fail' END;
    detail := CASE WHEN lines IS NULL THEN 'enabled with location policies on enkf.checkpoints and enkf.forecasts'
                   ELSE format('not enabled (or no policy) on: %s', lines) END;
    remedy := 'ALTER TABLE enkf.checkpoints ENABLE ROW LEVEL SECURITY (likewise enkf.forecasts); grant locations in enkf.location_grants';
    RETURN NEXT;

    -- 10. Data checksums (detect silent corruption of stored PHI).
    control := 'data_checksums';
    v := (SELECT s.setting FROM pg_settings s WHERE s.name = 'data_checksums');
    status := CASE WHEN v IS NULL THEN 'unknown' WHEN v = 'on' THEN 'pass' ELSE 'fail' END;
    detail := format('data_checksums = %s', coalesce(v, 'not visible'));
    remedy := 'initdb --data-checksums, or pg_checksums --enable on the stopped cluster';
    RETURN NEXT;

    -- 11. WAL archiving for point-in-time recovery.
    control := 'wal_archiving';
    v := (SELECT s.setting FROM pg_settings s WHERE s.name = 'archive_mode');
    v2 := (SELECT s.setting FROM pg_settings s WHERE s.name = 'archive_command');
    lines := (SELECT s.setting FROM pg_settings s WHERE s.name = 'archive_library');
    IF v IS NULL THEN
        status := 'unknown'; detail := 'archive_mode is not visible to this role';
    ELSIF v NOT IN ('on', 'always') THEN
        status := 'fail'; detail := format('archive_mode = %s', v);
    ELSIF v2 IS NULL AND coalesce(lines, '') = '' THEN
        status := 'unknown'; detail := format('archive_mode = %s; archive_command is visible to superusers and pg_read_all_settings only', v);
    ELSIF coalesce(v2, '') IN ('', '(disabled)') AND coalesce(lines, '') = '' THEN
        status := 'fail'; detail := format('archive_mode = %s but neither archive_command nor archive_library is set', v);
    ELSE
        status := 'pass';
        detail := format('archive_mode = %s, %s', v,
                         CASE WHEN coalesce(lines, '') <> '' THEN 'archive_library = ' || lines ELSE 'archive_command set' END);
    END IF;
    remedy := 'archive_mode = on with archive_command or archive_library shipping WAL off the host (e.g. to S3), base backups kept 7 years';
    RETURN NEXT;
END
$$;

-- A duration setting as PostgreSQL writes it ('15min', '900s', '900000') in milliseconds.
CREATE FUNCTION enkf.duration_ms(v text) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT m[1]::float8 * CASE coalesce(m[2], 'ms')
               WHEN 'us' THEN 0.001 WHEN 'ms' THEN 1 WHEN 's' THEN 1000 WHEN 'min' THEN 60000
               WHEN 'h' THEN 3600000 WHEN 'd' THEN 86400000 END
      FROM regexp_match(trim(v), '^(\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?$') AS m
$$;

COMMENT ON TABLE enkf.location_grants IS 'Minimum necessary access: members of role may see (and, as operators, assimilate) location of every twin; location ''*'' means all. Row-level security on enkf.checkpoints and enkf.forecasts and the BI views use it. Managed by enkf_admin.';
COMMENT ON FUNCTION enkf.location_visible(text) IS 'Whether the current user may see a location''s results: through enkf.location_grants, or always when row-level security does not apply to them (table owner, superuser).';
COMMENT ON FUNCTION enkf.is_member_of(name) IS 'Whether the current user is a member of the role; false when the role does not exist.';
COMMENT ON FUNCTION enkf.suppressed(float8) IS 'Whether a count is withheld by small-cell suppression: 0 < count < enkf.suppression_threshold.';
COMMENT ON FUNCTION enkf.suppression_threshold() IS 'The setting enkf.suppression_threshold (default 11): counts from 1 to this value minus 1 are withheld in the publication views.';
COMMENT ON VIEW enkf.observed_counts IS 'Publication view: the counts each twin assimilated, per location and week, with small cells (1 to enkf.suppression_threshold - 1) withheld as NULL and flagged in suppressed.';
COMMENT ON VIEW enkf.forecast_summary IS 'Publication view: one row per forecast (twin, model, location, reference_date, horizon) with median, 50% and 95% intervals and the observed count of the target week, small cells withheld (observed_suppressed).';
COMMENT ON FUNCTION enkf.create_roles() IS 'Creates (if missing) the NOLOGIN group roles enkf_reader, enkf_analyst, enkf_operator and enkf_admin, each including the previous, and grants their privileges. Idempotent; needs CREATEROLE and ownership of the extension. See docs/hipaa.md.';
COMMENT ON FUNCTION enkf.compliance_report() IS 'One row per HIPAA technical control PostgreSQL can see (TLS, password hashing, pg_hba methods, pgaudit, connection logging, idle timeout, row-level security, checksums, WAL archiving): status pass, fail or unknown (not visible to the caller), detail and remedy.';
COMMENT ON FUNCTION enkf.duration_ms(text) IS 'A duration setting as written in postgresql.conf or ALTER ROLE SET (''15min'', ''900s'', ''900000'') in milliseconds.';

-- ---- from sql/finalize.sql: nothing to PUBLIC ----
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA enkf FROM PUBLIC;

-- run_log.duration (interval) becomes duration_seconds (float8): BI views keep to plain types.
DROP VIEW enkf.run_log;
CREATE VIEW enkf.run_log AS
SELECT r.run_id, t.name AS twin, r.kind, r.status, r.run_by, r.session_user_name, r.started_at,
       r.finished_at,
       -- Seconds as float8: an interval is not a plain type for JDBC (it reports OTHER).
       extract(epoch FROM r.finished_at - r.started_at)::float8 AS duration_seconds,
       r.through, r.first_week,
       r.last_week, r.locations, r.observations, r.reassimilated, r.source, r.config_hash,
       r.extension_version, r.seed, r.detail
FROM enkf.runs r JOIN enkf.twins t USING (twin_id);
COMMENT ON VIEW enkf.run_log IS 'Runs with their twin name and duration in seconds, plain SQL types.';

-- Every function documented (DatabaseMetaData remarks for BI tools).
COMMENT ON FUNCTION enkf.create_twin(text, regclass, regclass, name, name, name, text, int4, jsonb) IS
'Registers an epidemic twin over the caller''s observation table (one row per time and location; counts, NULL or NaN = not reported) and location table (location, population): model seirh, members, configuration (docs/twin.md). Returns the twin id. Needs SELECT on both tables.';
COMMENT ON FUNCTION enkf.drop_twin(text) IS
'Removes a twin with its runs, checkpoints and forecasts. Returns whether it existed.';
COMMENT ON FUNCTION enkf.assimilate(text, timestamptz) IS
'Assimilates the twin''s observations through the given time (default now()), incrementally from the last analysis; revised counts are re-assimilated from the earliest changed week. Reads the observation table under the caller; only locations granted to the caller (enkf.location_grants) when row-level security applies. Returns the run id, locations, observations and the time range.';
COMMENT ON FUNCTION enkf.forecast(text, int4, float8[]) IS
'Forecasts every location of the twin from its latest analysis, horizons 0 to horizons - 1 weeks after the last assimilated week, at the given quantile levels (default the 23 FluSight levels), with the FluSight-style baseline; stores them in enkf.forecasts and returns the twin''s.';
COMMENT ON FUNCTION enkf.score(text, date, date) IS
'Scores the twin''s stored forecasts (reference dates in the given range) against the observations that have arrived: WIS, absolute error of the median, 50% and 95% coverage, per location and horizon, with the same for the baseline and the WIS ratio.';
COMMENT ON FUNCTION enkf.synthetic_surveillance(int4, int4, date, int8, jsonb) IS
'Synthetic weekly admissions from the seirh model with known parameters (beta, ihr per location), for tests and demos: never real data.';
