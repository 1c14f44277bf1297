-- Runs last in the extension script: documentation of every SQL object, visible with \df+ and
-- to BI tools through DatabaseMetaData remarks.
COMMENT ON SCHEMA enkf IS 'pg_enkf: ensemble Kalman filter data assimilation and epidemic forecasting';

COMMENT ON FUNCTION enkf.analyze(float8[], float8[], float8[], int4[], text, float8, float8, float8, bool, int8) IS
'One ensemble Kalman filter analysis step. ensemble is a 2-D array [state_dim][members]; observations, obs_variance (diagonal of R) and obs_index (1-based state element each observation sees) are 1-D of equal length. method: etkf (default, symmetric square root), enkf (perturbed observations, seeded by seed), eakf (serial adjustment), letkf (local ETKF). inflation multiplies the prior anomalies (>= 1); rtps relaxes the analysis spread back to the prior''s (0..1); loc_radius is the Gaspari-Cohn half-width c in state elements (weight 0 from 2c on; NULL = none); periodic makes distances wrap at state_dim. Returns the analysis ensemble, same shape. IMMUTABLE: same inputs and seed, same output.';

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

COMMENT ON FUNCTION enkf.record_failed_run(text, text, timestamptz, text) IS
'Records a failed attempt at a twin''s assimilation or forecast (kind) that started at started_at, with the caller''s identity and the error''s SQLSTATE only (messages can quote data). For schedulers, whose failed work is rolled back. Returns the run id.';
COMMENT ON FUNCTION enkf.writing() IS
'Whether the statement running was issued by one of pg_enkf''s own functions: read by the guard triggers that keep runs, checkpoints, forecasts and twins from being written directly.';
COMMENT ON FUNCTION enkf.has_null_elements(float8[]) IS
'Whether the array holds a NULL element (from its header, without a scan): the CHECK constraints of enkf.checkpoints and enkf.forecasts.';
COMMENT ON FUNCTION enkf.twin_config(jsonb) IS
'A twin configuration as stored, every default filled in (the text whose SHA-256 is config_hash); raises 22023 naming the key of an invalid one.';

-- Privileges. PostgreSQL grants EXECUTE on new functions to PUBLIC; pg_enkf grants nothing to
-- PUBLIC: no one but the owner has USAGE on schema enkf until enkf.create_roles() (or the
-- DBA) grants it, and function by function to the roles that need it (sql/security.sql).
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA enkf FROM PUBLIC;
