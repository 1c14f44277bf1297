-- Runs last in the extension script: documentation of every SQL object, visible with \df+ and
-- to BI tools through DatabaseMetaData remarks.
COMMENT ON SCHEMA enkf IS 'pg_enkf: ensemble Kalman filter data assimilation and epidemic forecasting';

COMMENT ON FUNCTION enkf.analyze(float8[], float8[], float8[], int4[], text, float8, float8, float8, bool, int8) IS
'One ensemble Kalman filter analysis step. ensemble is a 2-D array [state_dim][members]; observations, obs_variance (diagonal of R) and obs_index (1-based state element each observation sees) are 1-D of equal length. method: etkf (default, symmetric square root), enkf (perturbed observations, seeded by seed), eakf (serial adjustment), letkf (local ETKF). inflation multiplies the prior anomalies (>= 1); rtps relaxes the analysis spread back to the prior''s (0..1); loc_radius is the Gaspari-Cohn half-width c in state elements (weight 0 from 2c on; NULL = none); periodic makes distances wrap at state_dim. Returns the analysis ensemble, same shape. IMMUTABLE: same inputs and seed, same output.';

COMMENT ON FUNCTION enkf.create_twin(text, regclass, regclass, name, name, name, text, int4, jsonb, name, name, text) IS
'Registers an epidemic twin over the caller''s observation table (one row per time and location, or per time, location and version with as_of_column; counts, NULL or NaN = not reported) and location table (location, population): model seirh, members, configuration (docs/twin.md). With ed_column (the weekly proportion of emergency-department visits due to flu, in [0, 1]; NULL = not reported) the twin assimilates that second stream jointly with the counts and forecasts wk inc flu prop ed visits. classification: public_aggregate (counts published anyway: no small-cell rule) or protected (readers never see a count from 1 to enkf.suppression_threshold - 1 nor anything computed from one); default enkf.default_classification. Returns the twin id. Needs SELECT on both tables.';
COMMENT ON FUNCTION enkf.drop_twin(text) IS
'Removes a twin with its runs, checkpoints and forecasts. Returns whether it existed.';
COMMENT ON FUNCTION enkf.assimilate(text, timestamptz, date) IS
'Assimilates the twin''s observations through the given time (default now()), incrementally from the last analysis; revised counts are re-assimilated from the earliest changed week. For a twin over a table of versions, the latest version of each count published on or before as_of (default: all). Reads the observation table under the caller; only locations granted to the caller (enkf.location_grants) when row-level security applies. Returns the run id, locations, observations and the time range.';
COMMENT ON FUNCTION enkf.forecast(text, int4, float8[], date, text) IS
'Forecasts every location of the twin from its latest analysis, horizons 0 to horizons - 1 weeks after the reference date (default: the week after the last assimilated one; a later week end steps the ensemble through the weeks between without data), at the given quantile levels (default the 23 FluSight levels), by every model: the twin (enkf), the FluSight-style baseline, the trend model and their combination weighted by their recent scores (combined). Stores them all in enkf.forecasts, and every FluSight hub target from the twin''s and the baseline''s trajectories (quantiles at horizon -1, 100 sample trajectories, the rate-change pmf, the season''s peak intensity and peak week, with the climatological rate-change pmf) in enkf.target_forecasts; returns the quantiles of model (default enkf).';
COMMENT ON FUNCTION enkf.score(text, date, date) IS
'Scores the twin''s stored forecasts (reference dates in the given range) against the observations that have arrived (the latest version of each count): WIS, absolute error and bias (mean of median - observed) of the median, 50% and 95% coverage, per location and horizon, with the same for the baseline and the WIS ratio.';
COMMENT ON FUNCTION enkf.score_targets(text, date, date) IS
'Scores the stored hub targets (enkf.target_forecasts, reference dates in the given range) whose truth the observation table now holds (the latest version of each count): WIS of quantiles, ranked probability score and log score (truncated at 10 nats) of pmfs, energy score of the sample trajectories; per model, target, output type, horizon and score, with the mean of its reference on the same tasks (climatology for rate change, the baseline otherwise) and the ratio.';
COMMENT ON FUNCTION enkf.backtest(text, regclass, regclass, date, date, name, name, name, name, int4, jsonb, int4, int4, name, text) IS
'The real-time backtest: creates twin (or continues an earlier backtest of it; no other twin), and for every reference date from first_reference to last_reference (week ends) assimilates the versions of the counts published by the reference date less publication_lag days, then forecasts horizons weeks from the reference date; finally scores every forecast against the latest version of the data. Returns per model (enkf, baseline), location and horizon (NULL = all) the forecasts scored, mean WIS, WIS relative to the baseline, 50% and 95% coverage and bias. With ed_column the twin also assimilates that column''s ED-visit proportions (as create_twin''s ed_column); classification as create_twin''s. A NOTICE per reference date shows progress; cancel stops it with nothing written.';
COMMENT ON FUNCTION enkf.synthetic_surveillance(int4, int4, date, int8, jsonb, int4) IS
'Synthetic weekly admissions from the seirh model with known parameters (beta, ihr per location), for tests and demos: never real data. With versions > 1, each week is published as it ends and revised in each of the next versions - 1 weeks (as_of: the publication day), its first releases short of the final count by a known backfill.';

COMMENT ON FUNCTION enkf.analyses_readable(bigint, text) IS
'Whether the current user may read a twin''s checkpoints of a location (the counts it assimilated): SELECT on the columns of its observation table the twin reads and, under that table''s own row-level security, a row of the location. The row-level security of enkf.checkpoints.';
COMMENT ON FUNCTION enkf.outputs_readable(bigint, text) IS
'Whether the current user may read a twin''s forecasts of a location: as enkf.analyses_readable, or through a publication of the twin to one of the user''s roles (enkf.twin_publications). The row-level security of enkf.forecasts and enkf.target_forecasts and the publication views.';
COMMENT ON FUNCTION enkf.model_readable(bigint, text) IS
'Whether the current user may read a model''s forecasts of a twin at all: true except for pooled and combined, which rest on every location the forecast read, and are read only by users whom no row-level security of the observation table limits, or through a publication of the twin. The row-level security of enkf.forecasts and the publication views.';
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
