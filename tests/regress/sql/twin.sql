-- The twin's SQL functions and views on synthetic data from pg_enkf's own generator: what each
-- returns and stores, and every refusal with its SQLSTATE, message and hint. Values are rounded
-- to what is meaningful; they come from fixed seeds.
\set VERBOSITY default
SET extra_float_digits = 0;
SET enkf.threads = 1;

-- Three locations, 40 weeks from 2023-10-07 (Saturdays), seed 5.
CREATE TABLE obs AS
SELECT time, location, value FROM enkf.synthetic_surveillance(3, 40, '2023-10-07', 5);
CREATE TABLE locs AS
SELECT DISTINCT location, population FROM enkf.synthetic_surveillance(3, 1, '2023-10-07', 5);
SELECT location, round(population) AS population FROM locs ORDER BY 1;
SELECT location, count(*) AS weeks, min(time)::date AS first, max(time)::date AS last,
       round(sum(value)) AS total FROM obs GROUP BY 1 ORDER BY 1;

-- The defaults a twin stores (every key filled in): the configuration contract.
SELECT jsonb_pretty(enkf.twin_config('{}')::jsonb);

SELECT enkf.create_twin('reg', 'obs', 'locs', members => 40, config => '{"seed": 7}') > 0 AS created;
SELECT name, observations, locations, model, members, origin, last_week, locations_assimilated
FROM enkf.twin_summary;

-- Refusals before any analysis.
SELECT regress.try($$SELECT * FROM enkf.forecast('reg')$$);
SELECT regress.try($$SELECT * FROM enkf.assimilate('nosuch')$$);
SELECT regress.try($$SELECT * FROM enkf.assimilate(NULL)$$);
SELECT regress.try($$SELECT * FROM enkf.assimilate('reg', through => '1999-01-01')$$);
SELECT regress.try($$SELECT enkf.create_twin('reg', 'obs', 'locs')$$);
SELECT regress.try($$SELECT enkf.create_twin('bad', 'obs', 'locs', value_column => 'location')$$);
SELECT regress.try($$SELECT enkf.create_twin('bad', 'obs', 'locs', time_column => 'nosuch')$$);
SELECT regress.try($$SELECT enkf.create_twin('bad', 'obs', 'locs', members => 1)$$);
SELECT regress.try($$SELECT enkf.create_twin('bad', 'obs', 'locs', config => '{"filter": {"method": "kalman"}}')$$);
SELECT regress.try($$SELECT enkf.create_twin('bad', 'obs', 'locs', config => '{"horizon": 4}')$$);
SELECT regress.try($$SELECT enkf.create_twin('bad', 'obs', 'locs', config => '{"ed": {"enabled": true}}')$$);
SELECT regress.try($$SELECT enkf.create_twin('bad', 'obs', 'locs', ed_column => 'ed')$$);
SELECT regress.try($$SELECT enkf.create_twin('bad', 'obs', 'locs', ed_column => 'location')$$);

-- Thirty weeks assimilated, then the rest: incremental.
SELECT locations, observations, first_time::date, last_time::date
FROM enkf.assimilate('reg', through => '2024-04-30');
SELECT locations, observations, first_time::date, last_time::date FROM enkf.assimilate('reg');
SELECT locations, observations, first_time::date, last_time::date FROM enkf.assimilate('reg');
SELECT kind, status, locations, observations, reassimilated, first_week, last_week
FROM enkf.run_log WHERE twin = 'reg' ORDER BY run_id;

-- The latest analysis: the transmission rate and admission fraction the twin has learned, and
-- the last week's admissions against the count.
SELECT s.location, s.week_end, s.variable, round(s.mean::numeric, 3) AS mean
FROM enkf.state_estimates s WHERE s.twin = 'reg' AND s.variable IN ('H', 'beta', 'ihr')
ORDER BY 1, 3;
SELECT location, week_end, observed, suppressed FROM enkf.observed_counts
WHERE twin = 'reg' AND week_end = (SELECT max(week_end) FROM enkf.checkpoints) ORDER BY 1;

-- Forecasts: every model stored, the twin's returned; 4 horizons x 23 levels per location.
SELECT count(*) AS rows, count(DISTINCT location) AS locations, min(reference_date), max(target_end_date)
FROM enkf.forecast('reg');
SELECT model, count(*) AS forecasts FROM enkf.forecasts GROUP BY 1 ORDER BY 1;
SELECT model, location, horizon, round(median) AS median, round(lower_95) AS lower_95,
       round(upper_95) AS upper_95
FROM enkf.forecast_summary WHERE twin = 'reg' AND location = (SELECT min(location) FROM locs)
ORDER BY 1, 3;
-- Quantiles increase with the level; the hubverse rows carry the hub's target name.
SELECT bool_and(value >= lag) AS monotone FROM (
  SELECT value, lag(value, 1, 0.0) OVER (PARTITION BY model, location, horizon ORDER BY quantile) AS lag
  FROM enkf.forecast_quantiles WHERE twin = 'reg') q;
SELECT model_id, target, output_type, count(*) FROM enkf.hubverse_forecasts GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
-- One reference date's submission file: locations with a withheld value left out whole (in
-- July's small counts, every one), so the file is refused below the hub's 75% coverage, and
-- written (empty here) with a warning when asked for anyway.
SELECT regress.try($$SELECT * FROM enkf.hub_submission('reg', '2024-07-13')$$);
SELECT target, output_type, count(*), count(DISTINCT location) AS locations
FROM enkf.hub_submission('reg', '2024-07-13', partial => true) GROUP BY 1, 2 ORDER BY 1, 2;
SELECT regress.try($$SELECT * FROM enkf.hub_submission('reg', '2024-07-13', partial => NULL)$$);
SELECT regress.try($$SELECT * FROM enkf.hub_submission('reg', '2024-07-13', 'ensemble')$$);
SELECT regress.try($$SELECT * FROM enkf.hub_submission('nosuch', '2024-07-13')$$);

-- Forecast arguments.
SELECT regress.try($$SELECT * FROM enkf.forecast('reg', horizons => 0)$$);
SELECT regress.try($$SELECT * FROM enkf.forecast('reg', quantile_levels => '{0.5, 0.1}')$$);
SELECT regress.try($$SELECT * FROM enkf.forecast('reg', reference_date => '2024-07-09')$$);
SELECT regress.try($$SELECT * FROM enkf.forecast('reg', model => 'ensemble')$$);
SELECT count(*) FROM enkf.forecast('reg', horizons => 2, quantile_levels => '{0.1, 0.5, 0.9}', model => 'baseline');

-- Scores need counts for the targets: a twin forecast from week 30 of a copy, scored against
-- all 40 weeks.
SELECT enkf.create_twin('reg30', 'obs', 'locs', members => 40, config => '{"seed": 7}') > 0 AS created;
SELECT locations FROM enkf.assimilate('reg30', through => '2024-04-30');
SELECT count(*) FROM enkf.forecast('reg30');
SELECT location, horizon, forecasts, round(wis::numeric, 2) AS wis, round(baseline_wis::numeric, 2) AS baseline_wis,
       round(relative_wis::numeric, 3) AS relative_wis, coverage_95, baseline_coverage_95
FROM enkf.score('reg30') ORDER BY 1, 2;
-- Every hub target scored once its truth is known (the season's peak: not before its end).
SELECT model, target, output_type, horizon, score, tasks, round(mean::numeric, 3) AS mean, reference,
       round(relative::numeric, 3) AS relative
FROM enkf.score_targets('reg30') ORDER BY 1, 2, 3, 4, 5;
SELECT regress.try($$SELECT * FROM enkf.score_targets(NULL)$$);
SELECT regress.try($$SELECT * FROM enkf.score_targets('nosuch')$$);
SELECT regress.try($$SELECT * FROM enkf.score_targets('reg30', '2024-06-01', '2024-05-01')$$);
-- reg30's submission file with nothing withheld: every target, counts as whole numbers.
SET enkf.suppression_threshold = 1;
SELECT target, output_type, count(*), count(DISTINCT location) AS locations,
       min(horizon), max(horizon), bool_and(output_type = 'pmf' OR value = round(value)) AS whole
FROM enkf.hub_submission('reg30', '2024-05-04') GROUP BY 1, 2 ORDER BY 1, 2;
RESET enkf.suppression_threshold;

-- Bad data in the table: each refused by name, nothing stored.
CREATE TABLE obs_bad AS SELECT * FROM obs;
SELECT enkf.create_twin('bad', 'obs_bad', 'locs', members => 20) > 0 AS created;
UPDATE obs_bad SET value = -1 WHERE location = (SELECT min(location) FROM locs) AND time = '2023-11-04';
SELECT regress.try($$SELECT * FROM enkf.assimilate('bad')$$);
UPDATE obs_bad SET value = 3 WHERE value = -1;
INSERT INTO obs_bad SELECT * FROM obs WHERE time = '2023-12-02' LIMIT 1;
SELECT regress.try($$SELECT * FROM enkf.assimilate('bad')$$);
DELETE FROM obs_bad WHERE ctid = (SELECT max(ctid) FROM obs_bad);
INSERT INTO obs_bad VALUES ('2023-12-02', 'nowhere', 4);
SELECT regress.try($$SELECT * FROM enkf.assimilate('bad')$$);
SELECT count(*) AS checkpoints FROM enkf.checkpoints JOIN enkf.twins USING (twin_id) WHERE name = 'bad';

-- A checkpoint altered outside pg_enkf (by a superuser, past the guard) is detected.
ALTER TABLE enkf.checkpoints DISABLE TRIGGER USER;
UPDATE enkf.checkpoints SET ensemble = ensemble[1:6][:]
WHERE twin_id = (SELECT twin_id FROM enkf.twins WHERE name = 'reg')
  AND week_end = (SELECT max(week_end) FROM enkf.checkpoints) AND location = (SELECT min(location) FROM locs);
ALTER TABLE enkf.checkpoints ENABLE TRIGGER USER;
SELECT regress.try($$SELECT * FROM enkf.forecast('reg')$$);

-- Small-cell suppression, for protected data only: counts in (0, t) withheld; forecast values
-- in (0, t) that are counts, and every value of a forecast whose inputs were censored below
-- less than t (NULL: not censored).
SELECT enkf.suppression_threshold();
SELECT v, enkf.suppressed(v), enkf.count_withheld('protected', v), enkf.count_withheld('public_aggregate', v)
  FROM unnest(ARRAY[0, 1, 10, 11, NULL]::float8[]) v;
SELECT cls, below, value, is_count, enkf.forecast_withheld(cls, below, value, is_count)
  FROM (VALUES ('protected', 11, 5, true), ('protected', 11, 5, false), ('protected', 11, 50, true),
               ('protected', NULL, 50, true), ('protected', 10, 50, true), ('protected', 20, 50, true),
               ('public_aggregate', NULL, 5, true)) AS c(cls, below, value, is_count);
SELECT enkf.published_quantile('protected', 11, '{0.25, 0.5, 0.75}', '{20, 30, 40}', 0.5),
       enkf.published_quantile('protected', NULL, '{0.25, 0.5, 0.75}', '{20, 30, 40}', 0.5),
       enkf.published_quantile('public_aggregate', NULL, '{0.25, 0.5, 0.75}', '{2, 3, 4}', 0.5);

-- The ED-visit proportion as a second stream: the column named by ed_column (here derived
-- from the counts: 0.5% background plus 40 per 100 admissions per 100,000 people; NULL some
-- weeks), assimilated with the counts; 10 state rows; its hub target forecast and scored.
CREATE TABLE obs_ed AS
SELECT o.time, o.location, o.value,
       CASE WHEN o.time <> '2023-11-04' THEN 0.005 + 0.4 * o.value / l.population * 1e3 END AS ed
FROM obs o JOIN locs l USING (location);
SELECT enkf.create_twin('reg_ed', 'obs_ed', 'locs', members => 20, config => '{"seed": 7}', ed_column => 'ed') > 0 AS created;
SELECT config->'ed'->'enabled' AS ed_enabled, ed_column FROM enkf.twins WHERE name = 'reg_ed';
SELECT ed_column FROM enkf.twin_summary WHERE name = 'reg_ed';
SELECT locations, observations FROM enkf.assimilate('reg_ed', through => '2024-04-30');
SELECT pg_catalog.array_length(ensemble, 1) AS rows, pg_catalog.array_length(ensemble, 2) AS members,
       count(*) AS checkpoints, count(observed_ed) AS with_ed
FROM enkf.checkpoints JOIN enkf.twins USING (twin_id) WHERE name = 'reg_ed' GROUP BY 1, 2;
SELECT variable, count(*) AS locations FROM enkf.state_estimates WHERE twin = 'reg_ed' GROUP BY variable ORDER BY 1;
SELECT min(reference_date) AS reference_date, count(*) > 0 AS forecast FROM enkf.forecast('reg_ed');
SELECT f.model, count(*) AS rows, min(f.horizon) AS first_horizon, max(f.horizon) AS last_horizon,
       bool_or(f.counts) AS counts,
       bool_and(f.output_values[1] >= 0 AND f.output_values[cardinality(f.output_values)] <= 1) AS in_0_1
FROM enkf.target_forecasts f JOIN enkf.twins t USING (twin_id)
WHERE t.name = 'reg_ed' AND f.target = 'wk inc flu prop ed visits' GROUP BY f.model ORDER BY f.model;
-- The submission file has it (small counts of these synthetic locations withheld otherwise).
SET enkf.suppression_threshold = 1;
SELECT location, count(*) AS ed_rows, min(value) >= 0 AND max(value) <= 1 AS in_0_1
FROM enkf.hub_submission('reg_ed', '2024-05-04') WHERE target = 'wk inc flu prop ed visits' GROUP BY 1 ORDER BY 1;
RESET enkf.suppression_threshold;
-- A proportion outside [0, 1] (a percentage) is refused by name, and nothing is stored.
UPDATE obs_ed SET ed = 2.5 WHERE time = '2024-05-04' AND location = (SELECT min(location) FROM locs);
SELECT regress.try($$SELECT * FROM enkf.assimilate('reg_ed')$$);
SELECT max(week_end) AS last_week FROM enkf.checkpoints JOIN enkf.twins USING (twin_id) WHERE name = 'reg_ed';
SELECT enkf.drop_twin('reg_ed');

-- The generator's bounds.
SELECT regress.try($$SELECT * FROM enkf.synthetic_surveillance(0, 10)$$);
SELECT regress.try($$SELECT * FROM enkf.synthetic_surveillance(100000, 10000)$$);
SELECT regress.try($$SELECT * FROM enkf.synthetic_surveillance(100000, 5000)$$);

SELECT enkf.drop_twin('bad'), enkf.drop_twin('reg30');
SELECT regress.try($$SELECT enkf.drop_twin('bad')$$);
SELECT name FROM enkf.twin_summary ORDER BY 1;
