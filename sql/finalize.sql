-- Runs last in the extension script: documentation of every SQL object, visible with \df+ and
-- to BI tools through DatabaseMetaData remarks.
COMMENT ON SCHEMA enkf IS 'pg_enkf: ensemble Kalman filter data assimilation and epidemic forecasting';

COMMENT ON FUNCTION enkf.analyze(float8[], float8[], float8[], int4[], text, float8, float8, float8, bool, int8) IS
'One ensemble Kalman filter analysis step. ensemble is a 2-D array [state_dim][members]; observations, obs_variance (diagonal of R) and obs_index (1-based state element each observation sees) are 1-D of equal length. method: etkf (default, symmetric square root), enkf (perturbed observations, seeded by seed), eakf (serial adjustment), letkf (local ETKF). inflation multiplies the prior anomalies (>= 1); rtps relaxes the analysis spread back to the prior''s (0..1); loc_radius is the Gaspari-Cohn half-width c in state elements (weight 0 from 2c on; NULL = none); periodic makes distances wrap at state_dim. Returns the analysis ensemble, same shape. IMMUTABLE: same inputs and seed, same output.';

-- Privileges. PostgreSQL grants EXECUTE on new functions to PUBLIC; pg_enkf grants nothing to
-- PUBLIC: no one but the owner has USAGE on schema enkf until enkf.create_roles() (or the
-- DBA) grants it, and function by function to the roles that need it (sql/security.sql).
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA enkf FROM PUBLIC;
