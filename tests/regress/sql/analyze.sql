-- enkf.analyze: results on small known cases, and every bad input with its SQLSTATE.
\set VERBOSITY default
SET extra_float_digits = 0;

-- One scalar observation of a 1-variable state: prior mean 2, variance 1; y = 2.5, R = 1.
-- Kalman: mean 2.25, variance 0.5. Every deterministic method gives exactly that.
SELECT m, round(avg(v)::numeric, 12) AS mean, round(var_samp(v)::numeric, 12) AS variance
FROM unnest(ARRAY['etkf', 'eakf', 'letkf']) AS m,
     LATERAL unnest(enkf.analyze(ARRAY[[1.0, 2.0, 3.0]], ARRAY[2.5], ARRAY[1.0], ARRAY[1], m)) AS v
GROUP BY m ORDER BY m;

-- The shape is kept: [state_dim][members].
SELECT array_dims(enkf.analyze(ARRAY[[1,2,3,4],[2,3,4,5],[0,0,1,1]]::float8[], ARRAY[1.0, 2.0], ARRAY[1.0, 1.0], ARRAY[1, 3]));

-- The unobserved element moves through its covariance with the observed one.
SELECT enkf.analyze(ARRAY[[1.0, 3.0], [10.0, 30.0]], ARRAY[4.0], ARRAY[1.0], ARRAY[1]);

-- Same seed, same output; another seed, another draw.
SELECT enkf.analyze(e, y, r, i, 'enkf', seed => 3) = enkf.analyze(e, y, r, i, 'enkf', seed => 3) AS same_seed_same_result,
       enkf.analyze(e, y, r, i, 'enkf', seed => 3) <> enkf.analyze(e, y, r, i, 'enkf', seed => 4) AS other_seed_other_result
FROM (SELECT ARRAY[[1.0, 2.0, 4.0], [0.0, 1.0, 1.0]] AS e, ARRAY[2.0, 0.5] AS y, ARRAY[1.0, 1.0] AS r, ARRAY[1, 2] AS i) AS t;

-- Zero spread: the observations cannot move the ensemble; the result is defined (no NaN).
SELECT enkf.analyze(ARRAY[[5.0, 5.0, 5.0]], ARRAY[7.0], ARRAY[1.0], ARRAY[1], m) FROM unnest(ARRAY['etkf','eakf','letkf','enkf']) m;

-- No observations: the prior, inflated.
SELECT enkf.analyze(ARRAY[[1.0, 3.0]], '{}', '{}', '{}', inflation => 2.0);

-- Bad input ------------------------------------------------------------------------------
-- wrong dimensions
SELECT regress.try($$SELECT enkf.analyze(ARRAY[1.0, 2.0], ARRAY[1.0], ARRAY[1.0], ARRAY[1])$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[[1.0, 2.0]]], ARRAY[1.0], ARRAY[1.0], ARRAY[1])$$);
SELECT regress.try($$SELECT enkf.analyze('{}', ARRAY[1.0], ARRAY[1.0], ARRAY[1])$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[[1.0]], ARRAY[1.0], ARRAY[1])$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[1.0], ARRAY[[1.0]], ARRAY[1])$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[1.0], ARRAY[1.0], ARRAY[[1]])$$);
-- non-rectangular arrays are refused by PostgreSQL itself
SELECT regress.try($$SELECT enkf.analyze('{{1,2},{3}}'::float8[], ARRAY[1.0], ARRAY[1.0], ARRAY[1])$$);
-- lengths that do not match
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[1.0, 2.0], ARRAY[1.0], ARRAY[1, 1])$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[1.0, 2.0], ARRAY[1.0, 1.0], ARRAY[1])$$);
-- NULL arguments and NULL elements
SELECT regress.try($$SELECT enkf.analyze(NULL, ARRAY[1.0], ARRAY[1.0], ARRAY[1])$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], NULL, ARRAY[1.0], ARRAY[1])$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, NULL], [3.0, 4.0]], ARRAY[1.0], ARRAY[1.0], ARRAY[1])$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[NULL::float8], ARRAY[1.0], ARRAY[1])$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[1.0], ARRAY[1.0], ARRAY[NULL::int4])$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[1.0], ARRAY[1.0], ARRAY[1], method => NULL)$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[1.0], ARRAY[1.0], ARRAY[1], inflation => NULL)$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[1.0], ARRAY[1.0], ARRAY[1], seed => NULL)$$);
-- NaN and infinite values
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 'NaN']], ARRAY[1.0], ARRAY[1.0], ARRAY[1])$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0], ['-Infinity'::float8, 0]], ARRAY[1.0], ARRAY[1.0], ARRAY[1])$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY['Infinity'::float8], ARRAY[1.0], ARRAY[1])$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[1.0], ARRAY['NaN'::float8], ARRAY[1])$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[1.0], ARRAY[1.0], ARRAY[1], inflation => 'NaN')$$);
-- non-positive variances
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[1.0], ARRAY[0.0], ARRAY[1])$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[1.0], ARRAY[-1.0], ARRAY[1])$$);
-- obs_index out of range (1-based)
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[1.0], ARRAY[1.0], ARRAY[2])$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[1.0], ARRAY[1.0], ARRAY[0])$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[1.0], ARRAY[1.0], ARRAY[-3])$$);
-- unknown method
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[1.0], ARRAY[1.0], ARRAY[1], 'kalman')$$);
-- inflation < 1, rtps outside [0, 1], negative radius, etkf with a radius
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[1.0], ARRAY[1.0], ARRAY[1], inflation => 0.99)$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[1.0], ARRAY[1.0], ARRAY[1], rtps => 1.5)$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[1.0], ARRAY[1.0], ARRAY[1], rtps => -0.1)$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[1.0], ARRAY[1.0], ARRAY[1], 'letkf', loc_radius => -1)$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0]], ARRAY[1.0], ARRAY[1.0], ARRAY[1], 'etkf', loc_radius => 2)$$);
-- fewer than 2 members, for every method
SELECT m, regress.try(format($$SELECT enkf.analyze(ARRAY[[1.0], [2.0]], ARRAY[1.0], ARRAY[1.0], ARRAY[1], %L)$$, m))
FROM unnest(ARRAY['enkf', 'etkf', 'eakf', 'letkf']) AS m;
-- an ensemble larger than enkf.max_ensemble_elements
SET enkf.max_ensemble_elements = 5;
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], ARRAY[1.0], ARRAY[1.0], ARRAY[1])$$);
SELECT array_dims(enkf.analyze(ARRAY[[1.0, 2.0], [1.0, 2.0]], ARRAY[1.0], ARRAY[1.0], ARRAY[1]));
RESET enkf.max_ensemble_elements;
-- an analyst cannot raise the limit (SUSET)
CREATE ROLE enkf_regress_analyst;
SET ROLE enkf_regress_analyst;
SELECT regress.try($$SET enkf.max_ensemble_elements = 100000000$$);
RESET ROLE;
DROP ROLE enkf_regress_analyst;
-- overflow from finite input is reported, never returned as Infinity or NaN
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1e300, -1e300]], ARRAY[1.0], ARRAY[1.0], ARRAY[1])$$);
-- the localized stochastic EnKF's m x m matrix is held to the same limit
SET enkf.max_ensemble_elements = 8;
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]], ARRAY[1.0, 1.0, 1.0], ARRAY[1.0, 1.0, 1.0], ARRAY[1, 2, 3], 'enkf', loc_radius => 1)$$);
SELECT regress.try($$SELECT enkf.analyze(ARRAY[[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]], ARRAY[1.0, 1.0, 1.0], ARRAY[1.0, 1.0, 1.0], ARRAY[1, 2, 3], 'letkf', loc_radius => 1)$$);
RESET enkf.max_ensemble_elements;
-- every matrix a method builds is bounded, not only the ensemble: 100,000 observations of a
-- 100,000-member ensemble would need a 10^10-value matrix (80 GB), refused before any work
SELECT m, regress.try(format($$SELECT enkf.analyze(array_fill(1.0::float8, ARRAY[1, 100000]), array_fill(0.0::float8, ARRAY[100000]), array_fill(1.0::float8, ARRAY[100000]), array_fill(1, ARRAY[100000]), %L)$$, m))
FROM unnest(ARRAY['etkf', 'enkf', 'letkf']) AS m;
