-- HIPAA technical safeguards that live in the database (docs/hipaa.md): row-level security by
-- location on the twins' results, small-cell suppression in the publication views, provenance
-- that only pg_enkf's functions write, the group roles of minimum necessary access, and a
-- compliance report. Nothing here is SECURITY DEFINER: every function runs under its caller,
-- so pgaudit logs the caller and grants and row-level security apply to them. Every function
-- pins its search_path or, where it must stay inlinable, qualifies every name it uses.

-- Whether the current user is a member of a role that may not exist yet (pg_has_role raises
-- for unknown roles; policies must work before enkf.create_roles() is called).
CREATE FUNCTION enkf.is_member_of(r name) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) r)
                THEN pg_catalog.pg_has_role(r, 'MEMBER') ELSE false END
$$;

-- Row-level security by location. Assimilation and forecasts run under the caller, so an
-- operator reads and writes only the locations granted to them; the twin functions skip the
-- others (see enkf.assimilate) instead of failing on them. And a twin's results follow the
-- grants of its observation table: its checkpoints (which hold the counts it assimilated) are
-- read only by roles that may read the table's columns and, under the table's own row-level
-- security, a row of the location (enkf.analyses_readable); its forecasts, computed from
-- them, likewise or through a publication of the twin to one of the roles
-- (enkf.outputs_readable, enkf.twin_publications).
ALTER TABLE enkf.checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE enkf.forecasts ENABLE ROW LEVEL SECURITY;
ALTER TABLE enkf.target_forecasts ENABLE ROW LEVEL SECURITY;
CREATE POLICY by_location ON enkf.checkpoints
    USING (enkf.location_visible(location) AND enkf.analyses_readable(twin_id, location))
    WITH CHECK (enkf.location_visible(location));
CREATE POLICY by_location ON enkf.forecasts
    USING (enkf.location_visible(location) AND enkf.outputs_readable(twin_id, location)
           AND enkf.model_readable(twin_id, model))
    WITH CHECK (enkf.location_visible(location));
CREATE POLICY by_location ON enkf.target_forecasts
    USING (enkf.location_visible(location) AND enkf.outputs_readable(twin_id, location)
           AND enkf.model_readable(twin_id, model))
    WITH CHECK (enkf.location_visible(location));

-- Each role sees its own grants and publications; administrators of twins see and manage
-- all of them.
ALTER TABLE enkf.location_grants ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_grants ON enkf.location_grants FOR SELECT
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                    WHERE r.oid OPERATOR(pg_catalog.=) role::pg_catalog.oid
                      AND pg_catalog.pg_has_role(r.oid, 'MEMBER')));
CREATE POLICY administrators ON enkf.location_grants
    USING (enkf.is_member_of('enkf_admin')) WITH CHECK (enkf.is_member_of('enkf_admin'));
ALTER TABLE enkf.twin_publications ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_publications ON enkf.twin_publications FOR SELECT
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                    WHERE r.oid OPERATOR(pg_catalog.=) role::pg_catalog.oid
                      AND pg_catalog.pg_has_role(r.oid, 'MEMBER')));
CREATE POLICY administrators ON enkf.twin_publications
    USING (enkf.is_member_of('enkf_admin')) WITH CHECK (enkf.is_member_of('enkf_admin'));

-- Small-cell suppression (docs/hipaa.md): for a twin of protected data, counts from 1 to
-- threshold - 1 are withheld from readers (NULL, suppressed = true); zeros and missing weeks
-- are shown as they are. Threshold: enkf.suppression_threshold; 1 turns suppression off, for
-- forecast values below 1 too. Twins of public aggregate data (published anyway) have no rule.
CREATE FUNCTION enkf.suppressed(observed float8) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(enkf.suppression_threshold() OPERATOR(pg_catalog.>) 1
                    AND observed OPERATOR(pg_catalog.>) 0
                    AND observed OPERATOR(pg_catalog.<) enkf.suppression_threshold(), false)
$$;

-- Whether a twin's count is withheld from readers: a small count of protected data.
CREATE FUNCTION enkf.count_withheld(classification text, observed float8) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(classification OPERATOR(pg_catalog.<>) 'public_aggregate', true)
       AND enkf.suppressed(observed)
$$;

-- Whether a forecast value of a twin is withheld from readers. Protected data only: hiding the
-- small counts is not enough, since every forecast is a deterministic function of the counts
-- (the baseline's spread gave a withheld count back exactly). So a protected twin's models
-- see each small count as the midpoint of the withheld range (enkf-core, twin/suppression.rs),
-- and a reader sees a forecast only when its inputs were censored at least as far as the
-- threshold now in force requires (censored_below: stored with it; NULL, not censored, for
-- rows made as public data or before 0.3.0); and a value that is itself a count (is_count:
-- not a probability or a proportion) strictly between 0 and the threshold is withheld too.
CREATE FUNCTION enkf.forecast_withheld(classification text, censored_below float8, value float8, is_count boolean)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(classification OPERATOR(pg_catalog.<>) 'public_aggregate', true)
       AND enkf.suppression_threshold() OPERATOR(pg_catalog.>) 1
       AND (coalesce(censored_below, 0) OPERATOR(pg_catalog.<) enkf.suppression_threshold()
            OR (coalesce(is_count, true) AND enkf.suppressed(value)))
$$;

-- A forecast's value at one quantile level as readers may see it (NULL when withheld or
-- when the forecast has no such level).
CREATE FUNCTION enkf.published_quantile(classification text, censored_below float8, levels float8[], vals float8[], level float8)
RETURNS float8
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN enkf.forecast_withheld(classification, censored_below,
                                            vals[pg_catalog.array_position(levels, level)], true)
                THEN NULL ELSE vals[pg_catalog.array_position(levels, level)] END
$$;

-- The hubverse forecast format of the FluSight hubs, every output type: the quantile forecasts
-- of every model (enkf.forecasts) and every target from trajectories (enkf.target_forecasts).
-- model_id = twin name for the twin, and the twin name with the model's as suffix for the
-- others: -baseline, -trend, -combined, -climatology. A publication view: twins the caller
-- may read (enkf.outputs_readable), locations granted to them, and values a reader may not
-- see under small-cell suppression NULL (enkf.forecast_withheld).
CREATE VIEW enkf.hubverse_forecasts WITH (security_barrier) AS
SELECT CASE WHEN f.model OPERATOR(pg_catalog.=) 'enkf' THEN t.name
            ELSE t.name OPERATOR(pg_catalog.||) '-' OPERATOR(pg_catalog.||) f.model END AS model_id,
       f.reference_date,
       (t.config OPERATOR(pg_catalog.#>>) '{forecast,target}'::pg_catalog.text[])::pg_catalog.text AS target,
       f.horizon,
       f.target_end_date,
       f.location,
       'quantile'::pg_catalog.text AS output_type,
       q.quantile::pg_catalog.text AS output_type_id,
       CASE WHEN enkf.forecast_withheld(t.classification, f.inputs_censored_below, q.value, true)
            THEN NULL ELSE q.value END AS value
FROM enkf.forecasts f
JOIN enkf.twins t USING (twin_id)
CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(f.quantile_levels), pg_catalog.unnest(f.quantile_values)) AS q(quantile, value)
WHERE enkf.location_visible(f.location) AND enkf.outputs_readable(f.twin_id, f.location)
  AND enkf.model_readable(f.twin_id, f.model)
UNION ALL
SELECT CASE WHEN g.model OPERATOR(pg_catalog.=) 'enkf' THEN t.name
            ELSE t.name OPERATOR(pg_catalog.||) '-' OPERATOR(pg_catalog.||) g.model END,
       g.reference_date, g.target, g.horizon, g.target_end_date, g.location, g.output_type, o.id,
       CASE WHEN enkf.forecast_withheld(t.classification, g.inputs_censored_below, o.value, g.counts)
            THEN NULL ELSE o.value END
FROM enkf.target_forecasts g
JOIN enkf.twins t USING (twin_id)
CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(g.output_type_ids), pg_catalog.unnest(g.output_values)) AS o(id, value)
WHERE enkf.location_visible(g.location) AND enkf.outputs_readable(g.twin_id, g.location)
  AND enkf.model_readable(g.twin_id, g.model);

-- One reference date's submission to the hub, as its CSV wants it (\copy (SELECT ...) TO
-- 'file.csv' CSV HEADER): every output of one model, so that the file describes one
-- predictive distribution. By default the combination (the product's best): its quantiles at
-- horizons 0.., and its samples, horizon -1 quantiles, rate-change pmf and season peaks, all
-- drawn from that same distribution by enkf.forecast. enkf (the twin) and baseline have every
-- output too; trend and pooled only their quantiles. The ED-visit proportion, a target of its
-- own, comes from the twin (or the baseline). Counts rounded to whole numbers; horizons beyond
-- the hub's -1..3 are left out; other quantile levels or another number of samples than the
-- hub's are refused. A location with any value withheld by small-cell suppression is left out
-- whole (the hub takes locations as optional; a NULL value it would refuse); the hub scores a
-- model only where it submitted at least 75% of the tasks, so a file that keeps fewer than 75%
-- of the locations forecast is refused (55000), or written with a WARNING when partial is true.
-- A NOTICE reports the coverage of every file.
CREATE FUNCTION enkf.hub_submission(twin text, reference date, quantile_model text DEFAULT 'combined',
                                     partial boolean DEFAULT false)
RETURNS TABLE (reference_date date, target text, horizon int4, target_end_date date, location text,
               output_type text, output_type_id text, value float8)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    count_target text;
    chosen_id text;
    ed_id text;
    forecast_locations int8;
    kept int8;
    levels float8[];
    fewest_samples int8;
    most_samples int8;
    file_rows enkf.hubverse_forecasts[];
BEGIN
    IF partial IS NULL THEN
        RAISE EXCEPTION 'partial must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'false refuses a file below the hub''s 75% coverage; true writes it with a warning';
    END IF;
    IF quantile_model IS NULL OR quantile_model NOT IN ('enkf', 'baseline', 'trend', 'pooled', 'combined') THEN
        RAISE EXCEPTION 'quantile_model "%" is not a model of the twin', quantile_model
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'one of enkf (the twin), baseline, trend, pooled, combined';
    END IF;
    -- Readers see twins through twin_summary and forecasts through the view, not enkf.twins:
    -- the weekly count's target is the one of the trend model, which forecasts only that.
    PERFORM FROM enkf.twin_summary t WHERE t.name OPERATOR(pg_catalog.=) hub_submission.twin;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'twin "%" does not exist', hub_submission.twin
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT name FROM enkf.twin_summary lists the twins you can see';
    END IF;
    SELECT h.target INTO count_target FROM enkf.hubverse_forecasts h
     WHERE h.model_id OPERATOR(pg_catalog.=) (hub_submission.twin OPERATOR(pg_catalog.||) '-trend')
       AND h.reference_date OPERATOR(pg_catalog.=) hub_submission.reference
     LIMIT 1;
    chosen_id := CASE WHEN quantile_model OPERATOR(pg_catalog.=) 'enkf' THEN hub_submission.twin
                      ELSE hub_submission.twin OPERATOR(pg_catalog.||) '-' OPERATOR(pg_catalog.||) quantile_model END;
    ed_id := CASE WHEN quantile_model OPERATOR(pg_catalog.=) 'baseline' THEN chosen_id ELSE hub_submission.twin END;
    -- What the file would hold, read once, checked against the hub's rules, then returned.
    SELECT pg_catalog.array_agg(h) INTO file_rows FROM (
        SELECT h.* FROM enkf.hubverse_forecasts h
         WHERE h.reference_date OPERATOR(pg_catalog.=) hub_submission.reference
           AND (h.horizon IS NULL OR h.horizon OPERATOR(pg_catalog.<=) 3)
           AND h.model_id OPERATOR(pg_catalog.=) CASE WHEN h.target OPERATOR(pg_catalog.=) 'wk inc flu prop ed visits'
                                                      THEN ed_id ELSE chosen_id END
    ) h;
    WITH chosen AS (
        SELECT * FROM pg_catalog.unnest(file_rows)
    ), per_location AS (
        SELECT c.location, pg_catalog.bool_or(c.value IS NULL) AS withheld,
               pg_catalog.count(DISTINCT c.output_type_id) FILTER (WHERE c.output_type OPERATOR(pg_catalog.=) 'sample') AS samples
          FROM chosen c GROUP BY c.location
    )
    SELECT pg_catalog.count(*), pg_catalog.count(*) FILTER (WHERE NOT p.withheld),
           pg_catalog.min(p.samples), pg_catalog.max(p.samples),
           (SELECT pg_catalog.array_agg(DISTINCT c.output_type_id::pg_catalog.float8) FROM chosen c
             WHERE c.target OPERATOR(pg_catalog.=) count_target AND c.output_type OPERATOR(pg_catalog.=) 'quantile')
      INTO forecast_locations, kept, fewest_samples, most_samples, levels
      FROM per_location p;
    IF levels OPERATOR(pg_catalog.<>) '{0.01,0.025,0.05,0.1,0.15,0.2,0.25,0.3,0.35,0.4,0.45,0.5,0.55,0.6,0.65,0.7,0.75,0.8,0.85,0.9,0.95,0.975,0.99}'::pg_catalog.float8[] THEN
        RAISE EXCEPTION 'the forecasts of twin "%" for % have the quantile levels %, not the hub''s 23', hub_submission.twin, pg_catalog.to_char(hub_submission.reference, 'YYYY-MM-DD'), levels
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'forecast with the default quantile_levels (the hub''s: 0.01, 0.025, 0.05, 0.1, ..., 0.95, 0.975, 0.99)';
    END IF;
    IF most_samples OPERATOR(pg_catalog.>) 0 AND (fewest_samples OPERATOR(pg_catalog.<>) 100 OR most_samples OPERATOR(pg_catalog.<>) 100) THEN
        RAISE EXCEPTION 'the forecasts of twin "%" for % have % to % samples per location, not the hub''s 100', hub_submission.twin, pg_catalog.to_char(hub_submission.reference, 'YYYY-MM-DD'), fewest_samples, most_samples
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'set targets.samples to 100 in the twin''s config (the default)';
    END IF;
    IF forecast_locations OPERATOR(pg_catalog.>) 0 THEN
        RAISE NOTICE 'hub_submission of twin "%" for %: % of % locations (% percent)', hub_submission.twin, pg_catalog.to_char(hub_submission.reference, 'YYYY-MM-DD'),
            kept, forecast_locations, pg_catalog.round(100.0 OPERATOR(pg_catalog.*) kept OPERATOR(pg_catalog./) forecast_locations);
        IF kept OPERATOR(pg_catalog.<) (0.75 OPERATOR(pg_catalog.*) forecast_locations) THEN
            IF partial THEN
                RAISE WARNING 'hub_submission of twin "%" for % keeps % of % locations: the hub scores a model only where it submitted at least 75 percent of the tasks',
                    hub_submission.twin, pg_catalog.to_char(hub_submission.reference, 'YYYY-MM-DD'), kept, forecast_locations;
            ELSE
                RAISE EXCEPTION 'hub_submission of twin "%" for % would keep % of % locations, fewer than the hub''s 75 percent', hub_submission.twin, pg_catalog.to_char(hub_submission.reference, 'YYYY-MM-DD'), kept, forecast_locations
                    USING ERRCODE = 'object_not_in_prerequisite_state',
                          DETAIL = 'a location with any value withheld by small-cell suppression is left out whole',
                          HINT = 'pass partial => true to write it anyway; counts published anyway (public aggregate data) belong in a twin created with classification => ''public_aggregate''';
            END IF;
        END IF;
    END IF;
    RETURN QUERY
    WITH chosen AS (
        SELECT * FROM pg_catalog.unnest(file_rows)
    ), withheld AS (
        SELECT DISTINCT c.location FROM chosen c WHERE c.value IS NULL
    )
    SELECT c.reference_date, c.target, c.horizon, c.target_end_date, c.location, c.output_type,
           c.output_type_id,
           -- Counts are whole numbers in the file (rounding keeps quantiles in order).
           CASE WHEN c.output_type OPERATOR(pg_catalog.<>) 'pmf'
                     AND c.target IN (count_target, 'peak inc flu hosp')
                THEN pg_catalog.round(c.value) ELSE c.value END
      FROM chosen c
     WHERE NOT EXISTS (SELECT 1 FROM withheld w WHERE w.location OPERATOR(pg_catalog.=) c.location)
     ORDER BY c.location, c.target, c.output_type, c.horizon NULLS FIRST, c.output_type_id;
END
$$;

-- Publication views. Observed counts, as assimilated, with the small cells of protected data
-- withheld.
CREATE VIEW enkf.observed_counts WITH (security_barrier) AS
SELECT t.name AS twin, c.location, c.week_end,
       CASE WHEN enkf.count_withheld(t.classification, c.observed) THEN NULL ELSE c.observed END AS observed,
       enkf.count_withheld(t.classification, c.observed) AS suppressed
FROM enkf.checkpoints c
JOIN enkf.twins t USING (twin_id)
WHERE enkf.location_visible(c.location) AND enkf.outputs_readable(c.twin_id, c.location);

-- One row per forecast: median, 50% and 95% intervals, and the count observed for the target
-- week once it is known, each withheld as the publication rules require (NULL).
CREATE VIEW enkf.forecast_summary WITH (security_barrier) AS
SELECT t.name AS twin, f.model, f.location, f.reference_date, f.horizon, f.target_end_date,
       enkf.published_quantile(t.classification, f.inputs_censored_below, f.quantile_levels, f.quantile_values, 0.5) AS median,
       enkf.published_quantile(t.classification, f.inputs_censored_below, f.quantile_levels, f.quantile_values, 0.25) AS lower_50,
       enkf.published_quantile(t.classification, f.inputs_censored_below, f.quantile_levels, f.quantile_values, 0.75) AS upper_50,
       enkf.published_quantile(t.classification, f.inputs_censored_below, f.quantile_levels, f.quantile_values, 0.025) AS lower_95,
       enkf.published_quantile(t.classification, f.inputs_censored_below, f.quantile_levels, f.quantile_values, 0.975) AS upper_95,
       CASE WHEN enkf.count_withheld(t.classification, o.observed) THEN NULL ELSE o.observed END AS observed,
       enkf.count_withheld(t.classification, o.observed) AS observed_suppressed
FROM enkf.forecasts f
JOIN enkf.twins t USING (twin_id)
LEFT JOIN enkf.checkpoints o
       ON o.twin_id OPERATOR(pg_catalog.=) f.twin_id AND o.location OPERATOR(pg_catalog.=) f.location
      AND o.week_end OPERATOR(pg_catalog.=) f.target_end_date
WHERE enkf.location_visible(f.location) AND enkf.outputs_readable(f.twin_id, f.location)
  AND enkf.model_readable(f.twin_id, f.model);

-- Provenance and analyses that no role can forge. pg_enkf's functions run under their caller,
-- so an operator holds INSERT on enkf.runs (and write access to checkpoints and forecasts) for
-- them; these triggers refuse any write that is not issued by one of pg_enkf's own functions
-- (enkf.writing(), true only while such a statement runs: extension/src/writes.rs), except by
-- members of the tables' owner (the DBA, who could drop the triggers anyway; pg_restore and
-- cascades from enkf.drop_twin run as them).
CREATE FUNCTION enkf.guard_writes() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT enkf.writing()
       AND NOT pg_has_role((SELECT c.relowner FROM pg_class c WHERE c.oid = TG_RELID), 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied: % on %.% is done only by pg_enkf''s functions',
                        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege',
                  HINT = CASE TG_TABLE_NAME
                             WHEN 'runs' THEN 'runs are recorded by enkf.assimilate, enkf.forecast and enkf.record_failed_run, with the caller''s identity'
                             ELSE 'analyses and forecasts are written by enkf.assimilate and enkf.forecast, and removed with their twin by enkf.drop_twin'
                         END;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER guard_writes BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON enkf.runs
    FOR EACH STATEMENT EXECUTE FUNCTION enkf.guard_writes();
CREATE TRIGGER guard_writes BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON enkf.checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION enkf.guard_writes();
CREATE TRIGGER guard_writes BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON enkf.forecasts
    FOR EACH STATEMENT EXECUTE FUNCTION enkf.guard_writes();
CREATE TRIGGER guard_writes BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON enkf.target_forecasts
    FOR EACH STATEMENT EXECUTE FUNCTION enkf.guard_writes();

-- Twins: created by enkf.create_twin, removed by enkf.drop_twin; what a twin reads, its model,
-- its ensemble size and its creator never change afterwards (a twin re-pointed at a table
-- only the scheduler's login may read would hand its weekly sums to whoever re-pointed it).
-- Administrators may rename a twin and change its configuration, which is checked and
-- normalised (every default filled in) exactly as at creation, with its hash recomputed.
CREATE FUNCTION enkf.guard_twins() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    trusted boolean := enkf.writing()
        OR pg_has_role((SELECT c.relowner FROM pg_class c WHERE c.oid = TG_RELID), 'MEMBER');
    canonical text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF NOT trusted THEN
            RAISE EXCEPTION 'permission denied: twin "%" is removed only by enkf.drop_twin()', OLD.name
                USING ERRCODE = 'insufficient_privilege', HINT = format('SELECT enkf.drop_twin(%L)', OLD.name);
        END IF;
        RETURN OLD;
    END IF;
    IF TG_OP = 'INSERT' AND NOT trusted THEN
        RAISE EXCEPTION 'permission denied: twins are created only by enkf.create_twin()'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'enkf.create_twin() checks that its caller may read the tables the twin reads';
    END IF;
    IF TG_OP = 'UPDATE' AND NOT trusted THEN
        IF (NEW.twin_id, NEW.observations::oid, NEW.locations::oid, NEW.time_column, NEW.location_column,
            NEW.value_column, NEW.as_of_column, NEW.ed_column, NEW.model, NEW.members, NEW.created_by::oid, NEW.created_at,
            NEW.backtest)
           IS DISTINCT FROM
           (OLD.twin_id, OLD.observations::oid, OLD.locations::oid, OLD.time_column, OLD.location_column,
            OLD.value_column, OLD.as_of_column, OLD.ed_column, OLD.model, OLD.members, OLD.created_by::oid, OLD.created_at,
            OLD.backtest) THEN
            RAISE EXCEPTION 'permission denied: the tables and columns twin "%" reads, its model, members, creator and purpose are fixed at creation', OLD.name
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'drop the twin with enkf.drop_twin() and create it again with enkf.create_twin()';
        END IF;
        IF NEW.origin IS DISTINCT FROM OLD.origin THEN
            RAISE EXCEPTION 'permission denied: the origin of twin "%" is set by its first enkf.assimilate()', OLD.name
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'drop and re-create the twin to start its weeks elsewhere';
        END IF;
    END IF;
    canonical := enkf.twin_config(NEW.config);
    -- The ED-visit stream is on exactly when the twin reads its column (10 state rows).
    IF ((canonical::jsonb #>> '{ed,enabled}')::boolean) IS DISTINCT FROM (NEW.ed_column IS NOT NULL) THEN
        RAISE EXCEPTION 'config: ed.enabled of twin "%" must be %, as set by its ed_column', NEW.name, NEW.ed_column IS NOT NULL
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'the ED-visit stream is turned on by ed_column at enkf.create_twin; drop and re-create the twin to change it';
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.origin IS NOT NULL
       AND (canonical::jsonb ->> 'week_ends_on') IS DISTINCT FROM (OLD.config ->> 'week_ends_on') THEN
        RAISE EXCEPTION 'config: week_ends_on of twin "%" cannot change after its first assimilation', OLD.name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'its checkpoints sit on weeks ending on that day: drop and re-create the twin';
    END IF;
    NEW.config := canonical::jsonb;
    NEW.config_hash := encode(sha256(convert_to(canonical, 'UTF8')), 'hex');
    RETURN NEW;
END
$$;
CREATE TRIGGER guard_twins BEFORE INSERT OR UPDATE OR DELETE ON enkf.twins
    FOR EACH ROW EXECUTE FUNCTION enkf.guard_twins();
CREATE TRIGGER guard_writes BEFORE TRUNCATE ON enkf.twins
    FOR EACH STATEMENT EXECUTE FUNCTION enkf.guard_writes();

-- Location grants: the grantor and time are recorded by the database, and a grant names a
-- role that exists (regrole input checks names; a bare OID is checked here).
CREATE FUNCTION enkf.guard_location_grants() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = NEW.role::oid) THEN
        RAISE EXCEPTION 'role: no role has OID %', NEW.role::oid
            USING ERRCODE = 'undefined_object', HINT = 'name the role: INSERT ... VALUES (''analyst_jane'', ''06'')';
    END IF;
    IF NEW.granted_by IS NULL
       OR NOT pg_has_role((SELECT c.relowner FROM pg_class c WHERE c.oid = TG_RELID), 'MEMBER') THEN
        NEW.granted_by := current_user::text::regrole;
        NEW.granted_at := now();
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER guard_location_grants BEFORE INSERT OR UPDATE ON enkf.location_grants
    FOR EACH ROW EXECUTE FUNCTION enkf.guard_location_grants();
CREATE TRIGGER guard_location_grants BEFORE INSERT OR UPDATE ON enkf.twin_publications
    FOR EACH ROW EXECUTE FUNCTION enkf.guard_location_grants();

-- Row-level security on the provenance: everyone who may read runs reads all of them, and a
-- run is recorded only under its caller's own identity.
ALTER TABLE enkf.runs ENABLE ROW LEVEL SECURITY;
CREATE POLICY readable ON enkf.runs FOR SELECT USING (true);
CREATE POLICY own_identity ON enkf.runs FOR INSERT
    WITH CHECK (run_by OPERATOR(pg_catalog.=) CURRENT_USER
                AND session_user_name OPERATOR(pg_catalog.=) SESSION_USER
                AND finished_at OPERATOR(pg_catalog.>=) started_at);

-- The scheduler's slots: a slot is recorded only once it is due, and as succeeded only with
-- the succeeded assimilation that ran for it (no one can pre-mark future runs as done).
CREATE FUNCTION enkf.slot_is_honest(twin bigint, due timestamptz, status text, run bigint)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT due OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()
       AND (status OPERATOR(pg_catalog.<>) 'succeeded'
            OR EXISTS (SELECT 1 FROM enkf.runs r
                        WHERE r.run_id OPERATOR(pg_catalog.=) run AND r.twin_id OPERATOR(pg_catalog.=) twin
                          AND r.kind OPERATOR(pg_catalog.=) 'assimilate'
                          AND r.status OPERATOR(pg_catalog.=) 'succeeded'
                          AND r.started_at OPERATOR(pg_catalog.>=) due))
$$;
ALTER TABLE enkf.schedule_slots ENABLE ROW LEVEL SECURITY;
CREATE POLICY readable ON enkf.schedule_slots FOR SELECT USING (true);
CREATE POLICY due_and_true ON enkf.schedule_slots FOR INSERT
    WITH CHECK (enkf.slot_is_honest(twin_id, slot, status, run_id));
CREATE POLICY due_and_true_update ON enkf.schedule_slots FOR UPDATE
    USING (true) WITH CHECK (enkf.slot_is_honest(twin_id, slot, status, run_id));

-- What the policies cannot see from one row: a settled slot (succeeded, failed, superseded) is
-- never rewritten; a failed or retrying slot's attempts each left a failed run of the twin
-- since the slot was due (enkf.record_failed_run, under the writer's own name), so that no
-- one settles a slot as failed, and its run never happens, without a trace in the
-- provenance; and a slot is superseded only by a later slot of the twin that succeeded.
-- Members of the table's owner (the DBA) are trusted, as by the other guards.
CREATE FUNCTION enkf.guard_slots() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    failed_runs bigint;
BEGIN
    IF pg_has_role((SELECT c.relowner FROM pg_class c WHERE c.oid = TG_RELID), 'MEMBER') THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.status IN ('succeeded', 'failed', 'superseded') THEN
        RAISE EXCEPTION 'permission denied: slot % of twin % is settled (%)', OLD.slot, OLD.twin_id, OLD.status
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'a settled slot is history: the next slot of the schedule runs the twin again';
    END IF;
    IF NEW.status IN ('retrying', 'failed') THEN
        SELECT count(*) INTO failed_runs FROM enkf.runs r
         WHERE r.twin_id = NEW.twin_id AND r.status = 'failed' AND r.started_at >= NEW.slot;
        IF failed_runs < NEW.attempts THEN
            RAISE EXCEPTION 'permission denied: slot % of twin % records % failed attempts, but % failed runs were recorded since it was due',
                            NEW.slot, NEW.twin_id, NEW.attempts, failed_runs
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'record each failed attempt with enkf.record_failed_run() first';
        END IF;
    ELSIF NEW.status = 'superseded' AND NOT EXISTS (
            SELECT 1 FROM enkf.schedule_slots s
             WHERE s.twin_id = NEW.twin_id AND s.slot > NEW.slot AND s.status = 'succeeded') THEN
        RAISE EXCEPTION 'permission denied: slot % of twin % is superseded only by a later slot that succeeded', NEW.slot, NEW.twin_id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'only the scheduler supersedes a slot, after a later one ran';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER guard_slots BEFORE INSERT OR UPDATE ON enkf.schedule_slots
    FOR EACH ROW EXECUTE FUNCTION enkf.guard_slots();

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
             'pg_enkf: enkf_reader plus raw forecasts, run log, state estimates, enkf.score, enkf.score_targets and the array functions'),
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
    GRANT SELECT ON enkf.location_grants, enkf.twin_publications TO enkf_reader;
    -- What enkf.outputs_readable reads of a twin under the reader: its observation table
    -- and the columns it reads (twin_summary shows the same).
    GRANT SELECT (twin_id, name, observations, time_column, location_column, value_column,
                  as_of_column, ed_column, classification) ON enkf.twins TO enkf_reader;
    GRANT EXECUTE ON FUNCTION enkf.location_visible(text), enkf.is_member_of(name),
                              enkf.suppressed(float8), enkf.suppression_threshold(),
                              enkf.count_withheld(text, float8),
                              enkf.forecast_withheld(text, float8, float8, boolean),
                              enkf.published_quantile(text, float8, float8[], float8[], float8),
                              enkf.outputs_readable(bigint, text), enkf.analyses_readable(bigint, text),
                              enkf.model_readable(bigint, text), enkf.writing(), enkf.has_null_elements(float8[]),
                              enkf.twin_config(jsonb),
                              enkf.slot_is_honest(bigint, timestamptz, text, bigint),
                              enkf.compliance_report(), enkf.duration_ms(text),
                              enkf.hub_submission(text, date, text, boolean) TO enkf_reader;
    -- Analysts.
    GRANT SELECT ON enkf.forecast_quantiles, enkf.state_estimates, enkf.run_log TO enkf_analyst;
    GRANT SELECT ON enkf.twins, enkf.runs, enkf.forecasts, enkf.target_forecasts TO enkf_analyst;
    GRANT EXECUTE ON FUNCTION
        enkf.score(text, date, date),
        enkf.score_targets(text, date, date),
        enkf.analyze(float8[], float8[], float8[], int4[], text, float8, float8, float8, bool, int8)
        TO enkf_analyst;
    EXECUTE (SELECT format('GRANT EXECUTE ON FUNCTION %s TO enkf_analyst', p.oid::regprocedure)
               FROM pg_proc p WHERE p.pronamespace = 'enkf'::regnamespace
                AND p.proname = 'synthetic_surveillance');
    -- Operators: assimilation and forecasts write checkpoints, forecasts and runs, and set a
    -- twin's origin on its first run.
    GRANT SELECT, INSERT, UPDATE, DELETE ON enkf.checkpoints, enkf.forecasts, enkf.target_forecasts TO enkf_operator;
    GRANT INSERT ON enkf.runs TO enkf_operator;
    GRANT UPDATE (origin) ON enkf.twins TO enkf_operator;
    GRANT USAGE ON SEQUENCE enkf.runs_run_id_seq TO enkf_operator;
    GRANT EXECUTE ON FUNCTION enkf.assimilate(text, timestamptz, date),
                              enkf.forecast(text, int4, float8[], date, text),
                              enkf.record_failed_run(text, text, timestamptz, text) TO enkf_operator;
    -- Administrators of twins.
    GRANT INSERT, UPDATE, DELETE ON enkf.twins TO enkf_admin;
    GRANT USAGE ON SEQUENCE enkf.twins_twin_id_seq TO enkf_admin;
    GRANT INSERT, UPDATE, DELETE ON enkf.location_grants, enkf.twin_publications TO enkf_admin;
    EXECUTE (SELECT string_agg(format('GRANT EXECUTE ON FUNCTION %s TO enkf_admin', p.oid::regprocedure), '; ')
               FROM pg_proc p WHERE p.pronamespace = 'enkf'::regnamespace
                AND p.proname IN ('create_twin', 'drop_twin', 'backtest'));
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

    -- 3. Client authentication methods, and TLS on every network line. A host or hostnossl
    --    line accepts connections without TLS (passwords and PHI in clear on the network),
    --    unless it admits only the loopback address.
    control := 'pg_hba_auth_methods';
    remedy := 'hostssl lines only for network connections (host lines for 127.0.0.1/32 or ::1/128 at most), with scram-sha-256 or cert; remove trust, password and md5 lines';
    IF has_table_privilege('pg_catalog.pg_hba_file_rules', 'SELECT') THEN
        SELECT count(*), string_agg(format('line %s: %s', h.line_number,
                                           coalesce(h.error,
                                                    CASE WHEN h.auth_method IN ('trust', 'password', 'md5') THEN h.auth_method
                                                         ELSE format('%s without TLS from %s', h.type, coalesce(h.address, 'any address')) END)),
                                    '; ' ORDER BY h.line_number)
          INTO n, lines
          FROM pg_hba_file_rules h
         WHERE h.auth_method IN ('trust', 'password', 'md5') OR h.error IS NOT NULL
            OR (h.type IN ('host', 'hostnossl', 'hostgssenc', 'hostnogssenc')
                AND NOT (coalesce(h.address, '') IN ('127.0.0.1', '::1', 'localhost')
                         AND coalesce(h.netmask, '255.255.255.255') IN ('255.255.255.255', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff')));
        status := CASE WHEN n = 0 THEN 'pass' ELSE 'fail' END;
        detail := CASE WHEN n = 0 THEN 'no trust, password or md5 line, and no network line without TLS, in pg_hba.conf' ELSE lines END;
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
    --    The server's value, not the caller's session's: from the configuration file when the
    --    session has not overridden it, else from pg_file_settings (superusers), else unknown.
    control := 'idle_session_timeout';
    SELECT CASE WHEN s.source IN ('default', 'configuration file', 'command line', 'environment variable', 'override')
                THEN s.setting END, s.boot_val
      INTO v, v2
      FROM pg_settings s WHERE s.name = 'idle_session_timeout';
    IF v IS NULL AND has_table_privilege('pg_catalog.pg_file_settings', 'SELECT') THEN
        v := coalesce((SELECT f.setting FROM pg_file_settings f
                        WHERE f.name = 'idle_session_timeout' AND f.applied AND f.error IS NULL
                        ORDER BY f.seqno DESC LIMIT 1), v2);
    END IF;
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
        -- A per-role setting (in this database, then in all) overrides this database's, which
        -- overrides the server's.
        SELECT l.rolname,
               coalesce(enkf.duration_ms((
                   SELECT substr(c, length('idle_session_timeout=') + 1)
                     FROM pg_db_role_setting d, unnest(d.setconfig) c
                    WHERE d.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
                      AND d.setrole IN (0, l.oid)
                      AND c LIKE 'idle_session_timeout=%'
                    ORDER BY d.setrole <> 0 DESC, d.setdatabase <> 0 DESC LIMIT 1)), enkf.duration_ms(v)) AS ms
          FROM logins l
    )
    SELECT count(*),
           string_agg(format('%s: %s', e.rolname, CASE WHEN e.ms IS NULL THEN '?' WHEN e.ms = 0 THEN 'none' ELSE (e.ms / 60000)::numeric(10, 1) || ' min' END), ', ')
             FILTER (WHERE e.ms IS NULL OR e.ms <= 0 OR e.ms > 900000)
      INTO roles_checked, too_long
      FROM effective e;
    IF roles_checked = 0 THEN
        status := CASE WHEN v IS NULL THEN 'unknown' WHEN enkf.duration_ms(v) BETWEEN 1 AND 900000 THEN 'pass' ELSE 'fail' END;
        detail := format('no login role is a member of the enkf_* roles; server idle_session_timeout = %s', coalesce(v || ' ms', 'not visible to this role'));
    ELSIF too_long IS NULL THEN
        status := 'pass';
        detail := format('%s login role(s) of the enkf_* roles time out within 15 minutes', roles_checked);
    ELSE
        status := CASE WHEN too_long ~ '\?' AND v IS NULL THEN 'unknown' ELSE 'fail' END;
        detail := format('over 15 minutes, none or not visible: %s', too_long);
    END IF;
    remedy := 'ALTER ROLE <login> SET idle_session_timeout = ''15min'' for each analyst login (or set it server-wide)';
    RETURN NEXT;

    -- 8b. Location grants of roles that no longer exist: ignored by the row-level security
    --     policies, but a sign that grants are not cleaned up when people leave.
    control := 'location_grants';
    SELECT count(*), string_agg(format('%s (role OID %s)', g.location, g.role::oid), ', ')
      INTO n, lines
      FROM enkf.location_grants g
     WHERE NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = g.role::oid);
    status := CASE WHEN n = 0 THEN 'pass' ELSE 'fail' END;
    detail := CASE WHEN n = 0 THEN 'every location grant names an existing role'
                   ELSE format('%s grant(s) of dropped roles: %s', n, lines) END;
    remedy := 'DELETE FROM enkf.location_grants g WHERE NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = g.role::oid), and remove a role''s grants before DROP ROLE';
    RETURN NEXT;

    -- 9. Row-level security on the twins' tables, which have no child tables: a child (such as
    --    a TimescaleDB chunk) has its parent's grants but not its policies when read directly.
    control := 'row_level_security';
    SELECT string_agg(c.relname::text, ', ') INTO lines
      FROM pg_class c
     WHERE c.oid IN ('enkf.checkpoints'::regclass, 'enkf.forecasts'::regclass, 'enkf.target_forecasts'::regclass)
       AND NOT (c.relrowsecurity AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid)
                AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = c.oid));
    -- A hypertable without chunks yet (TimescaleDB's view, when it is installed).
    IF to_regclass('timescaledb_information.hypertables') IS NOT NULL THEN
        EXECUTE 'SELECT string_agg(h.hypertable_name::text, '', '') FROM timescaledb_information.hypertables h
                  WHERE h.hypertable_schema = ''enkf''' INTO v;
        lines := (SELECT string_agg(DISTINCT x, ', ') FROM unnest(string_to_array(lines, ', ') || string_to_array(v, ', ')) x);
    END IF;
    status := CASE WHEN lines IS NULL THEN 'pass' ELSE 'fail' END;
    detail := CASE WHEN lines IS NULL THEN 'enabled with location policies on enkf.checkpoints, enkf.forecasts and enkf.target_forecasts, which have no child tables'
                   ELSE format('not enabled, no policy, or child tables (TimescaleDB chunks) on: %s', lines) END;
    remedy := 'ALTER TABLE enkf.checkpoints ENABLE ROW LEVEL SECURITY (likewise enkf.forecasts and enkf.target_forecasts); grant locations in enkf.location_grants; never make them hypertables (docs/operations.md, "TimescaleDB")';
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
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT m[1]::float8 * CASE coalesce(m[2], 'ms')
               WHEN 'us' THEN 0.001 WHEN 'ms' THEN 1 WHEN 's' THEN 1000 WHEN 'min' THEN 60000
               WHEN 'h' THEN 3600000 WHEN 'd' THEN 86400000 END
      FROM regexp_match(trim(v), '^(\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?$') AS m
$$;

COMMENT ON FUNCTION enkf.forecast_withheld(text, float8, float8, boolean) IS 'Whether a forecast value is withheld from readers by small-cell suppression: for a protected twin only, any value of a forecast whose inputs were censored below less than enkf.suppression_threshold (censored_below NULL: not censored), and a count (is_count) strictly between 0 and the threshold.';
COMMENT ON FUNCTION enkf.published_quantile(text, float8, float8[], float8[], float8) IS 'A forecast''s value at one quantile level as readers may see it: NULL when withheld (enkf.forecast_withheld) or when there is no such level.';
COMMENT ON FUNCTION enkf.count_withheld(text, float8) IS 'Whether a twin''s count is withheld from readers: a count from 1 to enkf.suppression_threshold - 1 of a twin that is not public_aggregate.';
COMMENT ON FUNCTION enkf.guard_writes() IS 'Trigger: refuses writes to enkf.runs, enkf.checkpoints, enkf.forecasts and enkf.target_forecasts (and TRUNCATE of enkf.twins) that are not issued by pg_enkf''s own functions, except by members of the tables'' owner.';
COMMENT ON FUNCTION enkf.guard_twins() IS 'Trigger: twins are created and removed only by enkf.create_twin and enkf.drop_twin; their tables, columns, model, members, creator and origin never change afterwards; configurations are checked and normalised and their hash recomputed.';
COMMENT ON FUNCTION enkf.guard_location_grants() IS 'Trigger: a location grant names an existing role; the grantor and time are recorded by the database.';
COMMENT ON FUNCTION enkf.guard_slots() IS 'Trigger: settled scheduler slots (succeeded, failed, superseded) are never rewritten; a failed or retrying slot needs a failed run of the twin for each attempt since it was due; a slot is superseded only by a later one that succeeded.';
COMMENT ON FUNCTION enkf.slot_is_honest(bigint, timestamptz, text, bigint) IS 'Row-level security of enkf.schedule_slots: a slot is recorded only once due, and as succeeded only with the succeeded assimilation that ran for it.';
COMMENT ON TABLE enkf.location_grants IS 'Minimum necessary access: members of role (by OID) may see (and, as operators, assimilate) location of every twin; location ''*'' means all. Row-level security on enkf.checkpoints and enkf.forecasts and the BI views use it; rows of dropped roles are ignored and listed by enkf.compliance_report. Managed by enkf_admin.';
COMMENT ON FUNCTION enkf.location_visible(text) IS 'Whether the current user may see a location''s results: through enkf.location_grants, or always when row-level security does not apply to them (table owner, superuser).';
COMMENT ON FUNCTION enkf.is_member_of(name) IS 'Whether the current user is a member of the role; false when the role does not exist.';
COMMENT ON FUNCTION enkf.suppressed(float8) IS 'Whether a count (or forecast value) is withheld by small-cell suppression: 0 < value < enkf.suppression_threshold, when the threshold is above 1 (1 turns suppression off).';
COMMENT ON FUNCTION enkf.suppression_threshold() IS 'The setting enkf.suppression_threshold (default 11): counts from 1 to this value minus 1 are withheld in the publication views.';
COMMENT ON VIEW enkf.observed_counts IS 'Publication view: the counts each twin assimilated, per location and week, with small cells (1 to enkf.suppression_threshold - 1) withheld as NULL and flagged in suppressed.';
COMMENT ON VIEW enkf.hubverse_forecasts IS 'Stored forecasts in the hubverse format of the FluSight hubs, every output type (quantile, pmf, sample) of every target: model_id, reference_date, target, horizon, target_end_date, location, output_type, output_type_id (text), value, with values withheld as in enkf.forecast_summary (NULL).';
COMMENT ON FUNCTION enkf.hub_submission(text, date, text, boolean) IS 'One reference date''s submission file for the FluSight hub (\copy (SELECT * FROM enkf.hub_submission(...)) TO ''file.csv'' CSV HEADER): every output of one model (default combined: its quantiles, and its samples, horizon -1 quantiles, rate-change pmf and peaks drawn from the same distribution), counts rounded to whole numbers, horizons -1..3; locations with a withheld value are left out, and below 75% of the locations (the hub''s bar for scoring a model) the file is refused unless partial is true.';
COMMENT ON VIEW enkf.forecast_summary IS 'Publication view: one row per forecast (twin, model, location, reference_date, horizon) with median, 50% and 95% intervals and the observed count of the target week, small cells withheld (observed_suppressed).';
COMMENT ON FUNCTION enkf.create_roles() IS 'Creates (if missing) the NOLOGIN group roles enkf_reader, enkf_analyst, enkf_operator and enkf_admin, each including the previous, and grants their privileges. Idempotent; needs CREATEROLE and ownership of the extension. See docs/hipaa.md.';
COMMENT ON FUNCTION enkf.compliance_report() IS 'One row per HIPAA technical control PostgreSQL can see (TLS, password hashing, pg_hba methods and TLS on network lines, pgaudit, connection logging, idle timeout, grants of dropped roles, row-level security, checksums, WAL archiving): status pass, fail or unknown (not visible to the caller), detail and remedy.';
COMMENT ON FUNCTION enkf.duration_ms(text) IS 'A duration setting as written in postgresql.conf or ALTER ROLE SET (''15min'', ''900s'', ''900000'') in milliseconds.';
