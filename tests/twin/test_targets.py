"""Every FluSight hub target from the twin's trajectories, through SQL, on synthetic data from
the twin's own generator: the stored rows, the submission file against the hub's own task
definitions (hub-tasks.json), a season whose peak has passed, scores of every output type
against a computation of them here, and row-level security over the new rows."""

from __future__ import annotations

import csv
import io
import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest

import hubfile
from support.errors import sqlstate

ROOT = Path(__file__).resolve().parents[2]
HUB_TASKS = ROOT / "data" / "flusight" / "hub-tasks.json"
# Synthetic locations under hub location codes, so that the file can be checked against the
# hub's task definitions.
CODES = {"L00001": "06", "L00002": "36", "L00003": "48"}
RATE_CLASSES = ["large_decrease", "decrease", "stable", "increase", "large_increase"]


def hub_data(conn, weeks: int, first_week: str = "2025-08-02", seed: int = 3) -> None:
    recode = "CASE location " + " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in CODES.items()) + " END"
    conn.execute(
        f"""CREATE TABLE obs AS SELECT time, {recode} AS location, value
              FROM enkf.synthetic_surveillance(3, {weeks}, '{first_week}', {seed})"""
    )
    conn.execute(
        f"""CREATE TABLE locs AS SELECT DISTINCT {recode} AS location, population
              FROM enkf.synthetic_surveillance(3, 1, '{first_week}', {seed})"""
    )


def submission_csv(cluster, dbname, twin, reference) -> list[dict]:
    """The submission file as `\\copy ... TO` writes it, read back as the hub would."""
    out = cluster.psql(
        f"\\copy (SELECT * FROM enkf.hub_submission('{twin}', '{reference}', partial => true)) TO STDOUT CSV HEADER", dbname
    ).stdout
    return list(csv.DictReader(io.StringIO(out)))


@pytest.fixture()
def forecast_2025(conn):
    """A twin over the three locations through 2025-12-13, forecast for 2025-12-20."""
    hub_data(conn, weeks=20)
    conn.execute("SELECT enkf.create_twin('sub', 'obs', 'locs', members => 100)")
    conn.execute("SELECT * FROM enkf.assimilate('sub')")
    conn.execute("SELECT count(*) FROM enkf.forecast('sub')")
    return "2025-12-20"


@pytest.mark.skipif(not HUB_TASKS.exists(), reason="needs data/flusight/hub-tasks.json")
def test_the_submission_file_obeys_the_hubs_task_definitions(cluster, dbname, conn, forecast_2025):
    rows = submission_csv(cluster, dbname, "sub", forecast_2025)
    tasks = hubfile.model_tasks(HUB_TASKS)
    assert hubfile.problems(rows, tasks) == []
    # The check finds what the hub would refuse: each change below alone.
    first = {(r["target"], r["output_type"]): i for i, r in reversed(list(enumerate(rows)))}

    def changed(key, **edit):
        bad = [dict(r) for r in rows]
        bad[first[key]].update(edit)
        return hubfile.problems(bad, tasks)

    assert changed(("wk inc flu hosp", "quantile"), value="0.5")  # not whole, and out of order
    assert changed(("wk inc flu hosp", "quantile"), horizon="4")
    assert changed(("wk inc flu hosp", "sample"), value="-1")
    assert changed(("wk flu hosp rate change", "pmf"), value="0.9")
    assert changed(("peak week inc flu hosp", "pmf"), output_type_id="2026-01-01")
    assert changed(("wk inc flu hosp", "quantile"), location="99")
    assert hubfile.problems([r for r in rows if r["output_type_id"] != "0.5"], tasks)
    groups = {(r["location"], r["target"], r["output_type"]) for r in rows}
    # Every target and output type the twin makes is in the file, for every location shown.
    made = {(k[1], k[2]) for k in groups}
    assert made == {
        ("wk inc flu hosp", "quantile"), ("wk inc flu hosp", "sample"), ("wk flu hosp rate change", "pmf"),
        ("peak inc flu hosp", "quantile"), ("peak week inc flu hosp", "pmf"),
    }
    # A location with a withheld value is left out whole; the others are complete.
    shown = {k[0] for k in groups}
    withheld = {
        r[0] for r in conn.execute(
            "SELECT DISTINCT location FROM enkf.hubverse_forecasts WHERE model_id IN ('sub', 'sub-combined') AND value IS NULL"
        ).fetchall()
    }
    assert shown == set(CODES.values()) - withheld and shown


def test_the_submission_describes_one_distribution(cluster, dbname, conn, forecast_2025):
    """Every output of the default file is the combination's: its samples follow its quantiles
    (the median within the samples' middle half at every horizon), the horizon -1 quantiles and
    the pmfs are its rows, and no class of a rate change has probability 0."""
    rows = submission_csv(cluster, dbname, "sub", forecast_2025)
    assert rows
    combined = {
        (r[0], r[1], r[2], r[3]): r[4]
        for r in conn.execute(
            """SELECT location, target, output_type, coalesce(horizon, -9), output_values FROM enkf.target_forecasts
                WHERE model = 'combined' AND reference_date = %s""",
            (forecast_2025,),
        ).fetchall()
    }
    medians = {
        (r[0], r[1]): r[2]
        for r in conn.execute(
            """SELECT location, horizon, quantile_values[12] FROM enkf.forecasts
                WHERE model = 'combined' AND reference_date = %s""",
            (forecast_2025,),
        ).fetchall()
    }
    samples: dict[tuple, list[float]] = {}
    for r in rows:
        if r["output_type"] == "sample":
            samples.setdefault((r["location"], int(r["horizon"])), []).append(float(r["value"]))
        elif r["output_type"] == "pmf":
            h = int(r["horizon"]) if r["horizon"] else -9
            stored = combined[(r["location"], r["target"], "pmf", h)]
            assert float(r["value"]) in stored
            if r["target"] == "wk flu hosp rate change":
                assert float(r["value"]) > 0, r
    assert samples
    for (location, h), values in samples.items():
        assert len(values) == 100
        assert sorted(values) == sorted(combined[(location, "wk inc flu hosp", "sample", h)])
        if h >= 0:
            lo, hi = np.quantile(values, [0.25, 0.75])
            assert lo - 0.5 <= round(medians[(location, h)]) <= hi + 0.5, (location, h, medians[(location, h)], lo, hi)
    # The twin's file, asked for, is the twin's alone.
    twin = [r for r in conn.execute("SELECT * FROM enkf.hub_submission('sub', %s, 'enkf', partial => true)", (forecast_2025,)).fetchall()
            if r[5] == "sample"]
    stored = conn.execute(
        """SELECT sum(array_length(output_values, 1)) FROM enkf.target_forecasts
            WHERE model = 'enkf' AND output_type = 'sample' AND reference_date = %s AND location = ANY(%s)""",
        (forecast_2025, list({r[4] for r in twin})),
    ).fetchone()[0]
    assert twin and len(twin) == stored
    # A model without trajectories gives its quantiles only; horizons beyond the hub's are left out
    # (nothing withheld, for the comparison).
    conn.execute("SET enkf.suppression_threshold = 1")
    trend = conn.execute("SELECT DISTINCT target, output_type FROM enkf.hub_submission('sub', %s, 'trend', true)",
                         (forecast_2025,)).fetchall()
    assert trend == [("wk inc flu hosp", "quantile")]
    conn.execute("SELECT count(*) FROM enkf.forecast('sub', horizons => 5)")
    assert conn.execute("SELECT max(horizon) FROM enkf.hub_submission('sub', %s, partial => true)", (forecast_2025,)).fetchone()[0] == 3
    conn.execute("RESET enkf.suppression_threshold")


def test_the_submission_reports_its_coverage_and_refuses_what_the_hub_would(conn, forecast_2025):
    """Below the hub's 75% of locations the file is refused (55000) unless partial => true, which
    warns; every file's coverage is in a NOTICE; levels or sample counts other than the hub's are
    refused (22023)."""
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(f"{d.severity}: {d.message_primary}"))
    conn.execute("SET enkf.suppression_threshold = 100000")  # every count withheld
    state = sqlstate(conn, "SELECT * FROM enkf.hub_submission('sub', %s)", (forecast_2025,))
    assert state[0] == "55000" and "75 percent" in state[1], state
    assert conn.execute("SELECT count(*) FROM enkf.hub_submission('sub', %s, partial => true)", (forecast_2025,)).fetchone()[0] == 0
    assert any(n.startswith("WARNING") and "keeps 0 of 3 locations" in n for n in notices), notices
    assert sqlstate(conn, "SELECT * FROM enkf.hub_submission('sub', %s, partial => NULL)", (forecast_2025,))[0] == "22004"
    conn.execute("SET enkf.suppression_threshold = 1")  # nothing withheld
    notices.clear()
    assert conn.execute("SELECT count(DISTINCT location) FROM enkf.hub_submission('sub', %s)", (forecast_2025,)).fetchone()[0] == 3
    assert any(n.startswith("NOTICE") and "3 of 3 locations (100 percent)" in n for n in notices), notices
    # Levels and sample counts the hub would reject.
    conn.execute("SELECT count(*) FROM enkf.forecast('sub', quantile_levels => '{0.1,0.5,0.9}')")
    state = sqlstate(conn, "SELECT * FROM enkf.hub_submission('sub', %s)", (forecast_2025,))
    assert state[0] == "22023" and "quantile levels" in state[1], state
    conn.execute("UPDATE enkf.twins SET config = jsonb_set(config, '{targets,samples}', '50') WHERE name = 'sub'")
    conn.execute("SELECT count(*) FROM enkf.forecast('sub')")
    state = sqlstate(conn, "SELECT * FROM enkf.hub_submission('sub', %s)", (forecast_2025,))
    assert state[0] == "22023" and "50 to 50 samples" in state[1], state
    conn.execute("RESET enkf.suppression_threshold")


def test_stored_targets_are_coherent_trajectories(conn, forecast_2025):
    twin = conn.execute(
        """SELECT location, output_type_ids, output_values FROM enkf.target_forecasts
            WHERE model = 'enkf' AND target = 'wk inc flu hosp' AND output_type = 'quantile' AND horizon = -1"""
    ).fetchall()
    assert len(twin) == 3
    for location, levels, values in twin:
        samples = [
            r[0] for r in conn.execute(
                """SELECT output_values FROM enkf.target_forecasts WHERE model = 'enkf' AND location = %s
                     AND output_type = 'sample' AND horizon = -1""",
                (location,),
            ).fetchall()
        ][0]
        assert len(samples) == 100 and all(v == int(v) for v in samples)
        # The samples are 100 of the trajectories the quantiles summarise: their quantiles
        # agree within sampling error (a binomial 99.9% band on the level reached).
        for level, q in zip(map(float, levels), values):
            if 0.1 <= level <= 0.9:
                below = np.mean(np.array(samples) <= q)
                band = 3.3 * math.sqrt(level * (1 - level) / 100)
                assert below >= level - band - 0.02, (location, level, q, below)
    pmfs = conn.execute(
        "SELECT model, horizon, output_type_ids, output_values FROM enkf.target_forecasts WHERE output_type = 'pmf'"
    ).fetchall()
    for model, horizon, ids, values in pmfs:
        assert sum(values) == 1.0, (model, horizon)
        if horizon is not None:
            assert ids == RATE_CLASSES and 0 <= horizon <= 3
    # Forecasting again from the same analysis replaces the rows.
    before = conn.execute("SELECT count(*) FROM enkf.target_forecasts").fetchone()[0]
    conn.execute("SELECT count(*) FROM enkf.forecast('sub')")
    assert conn.execute("SELECT count(*) FROM enkf.target_forecasts").fetchone()[0] == before == 3 * 3 * 12 + 3 * 4


def test_a_season_whose_peak_has_passed_puts_certainty_on_it(conn):
    # Through 2026-05-16: the synthetic epidemic peaked in the winter and has declined since.
    hub_data(conn, weeks=42)
    conn.execute("SELECT enkf.create_twin('late', 'obs', 'locs', members => 100)")
    conn.execute("SELECT * FROM enkf.assimilate('late')")
    conn.execute("SELECT count(*) FROM enkf.forecast('late')")
    for location in CODES.values():
        peak_week, peak = conn.execute(
            """SELECT time, value FROM obs WHERE location = %s AND time BETWEEN '2025-11-22' AND '2026-05-16'
                ORDER BY value DESC, time LIMIT 1""",
            (location,),
        ).fetchone()
        ids, probs = conn.execute(
            """SELECT output_type_ids, output_values FROM enkf.target_forecasts
                WHERE model = 'enkf' AND location = %s AND target = 'peak week inc flu hosp'""",
            (location,),
        ).fetchone()
        assert probs[ids.index(str(peak_week))] == 1.0, (location, peak_week)
        intensity = conn.execute(
            """SELECT output_values FROM enkf.target_forecasts
                WHERE model = 'enkf' AND location = %s AND target = 'peak inc flu hosp'""",
            (location,),
        ).fetchone()[0]
        assert set(intensity) == {peak}, (location, peak, intensity)


def rps(probs, k):
    cdf = np.cumsum(probs)[:-1]
    obs = (np.arange(len(probs))[:-1] >= k).astype(float)
    return float(np.sum((cdf - obs) ** 2))


def rate_class(base, target, population, horizon):
    stable, large = [(0.3, 1.7), (0.5, 3.0), (0.7, 4.0), (1.0, 5.0)][horizon]
    change = round(target) - round(base)
    rate = change * 100000 / population
    if abs(change) < 10 or abs(rate) < stable:
        return 2
    if rate >= large:
        return 4
    if rate <= -large:
        return 0
    return 3 if rate > 0 else 1


def test_scores_of_every_output_type_match_a_computation_here(conn):
    hub_data(conn, weeks=30)
    conn.execute("SELECT enkf.create_twin('sc', 'obs', 'locs', members => 60)")
    for through in ("2025-11-29", "2025-12-06", "2025-12-13"):
        conn.execute("SELECT * FROM enkf.assimilate('sc', %s)", (through + " 23:59",))
        conn.execute("SELECT count(*) FROM enkf.forecast('sc')")
    scores = {
        (r[0], r[1], r[2], r[3], r[4]): r[5:]
        for r in conn.execute(
            """SELECT model, target, output_type, horizon, score, tasks, mean, reference, reference_mean, relative
                 FROM enkf.score_targets('sc')"""
        ).fetchall()
    }
    kinds = {(k[1], k[2], k[4]) for k in scores}
    assert {("wk inc flu hosp", "quantile", "wis"), ("wk inc flu hosp", "sample", "energy"),
            ("wk flu hosp rate change", "pmf", "rps"), ("wk flu hosp rate change", "pmf", "log")} <= kinds
    # The season (2025-11-22 .. 2026-05-23) is not over: no peak scores yet.
    assert not any(k[1].startswith("peak") for k in scores)
    # The twin's rate-change RPS at horizon 0 and its reference, computed here from the stored
    # pmfs and the counts.
    counts = {(r[0], str(r[1])): r[2] for r in conn.execute("SELECT location, time, value FROM obs").fetchall()}
    pops = dict(conn.execute("SELECT location, population FROM locs").fetchall())
    mine = {"enkf": [], "climatology": []}
    for model, location, reference, ted, probs in conn.execute(
        """SELECT model, location, reference_date, target_end_date, output_values FROM enkf.target_forecasts
            WHERE target = 'wk flu hosp rate change' AND horizon = 0 AND model IN ('enkf', 'climatology')
            ORDER BY model, location, reference_date"""
    ).fetchall():
        base = counts.get((location, str(reference - timedelta(days=7))))
        target = counts.get((location, str(ted)))
        if base is None or target is None:
            continue
        mine[model].append(rps(probs, rate_class(base, target, pops[location], 0)))
    tasks, mean, reference, reference_mean, relative = scores[("enkf", "wk flu hosp rate change", "pmf", 0, "rps")]
    assert reference == "climatology" and tasks == len(mine["enkf"]) == len(mine["climatology"]) > 0
    assert math.isclose(mean, np.mean(mine["enkf"]), rel_tol=1e-12, abs_tol=1e-12)
    assert math.isclose(reference_mean, np.mean(mine["climatology"]), rel_tol=1e-12, abs_tol=1e-12)
    assert math.isclose(relative, mean / reference_mean, rel_tol=1e-12)
    # Quantiles at horizon -1 against the baseline's.
    assert scores[("enkf", "wk inc flu hosp", "quantile", -1, "wis")][2] == "baseline"


def test_target_rows_obey_row_level_security_and_only_pg_enkf_writes_them(cluster, conn, dbname, forecast_2025):
    conn.execute("SELECT * FROM enkf.create_roles()")
    conn.execute("CREATE ROLE tgt_reader LOGIN IN ROLE enkf_analyst")
    try:
        conn.execute("INSERT INTO enkf.location_grants (role, location) VALUES ('tgt_reader', '36')")
        conn.execute("INSERT INTO enkf.twin_publications (twin_id, role) SELECT twin_id, 'tgt_reader' FROM enkf.twins")
        with psycopg.connect(cluster.dsn(dbname, user="tgt_reader"), autocommit=True) as r:
            seen = {x[0] for x in r.execute("SELECT DISTINCT location FROM enkf.target_forecasts").fetchall()}
            assert seen == {"36"}
            hub = {x[0] for x in r.execute("SELECT DISTINCT location FROM enkf.hubverse_forecasts").fetchall()}
            assert hub == {"36"}
            sub = {x[0] for x in r.execute("SELECT DISTINCT location FROM enkf.hub_submission('sub', %s, partial => true)", (forecast_2025,)).fetchall()}
            assert sub <= {"36"}
            assert sqlstate(r, "DELETE FROM enkf.target_forecasts")[0] == "42501"
            assert sqlstate(r, "SELECT * FROM enkf.hub_submission('sub', %s, 'ensemble')", (forecast_2025,))[0] == "22023"
        conn.execute("GRANT enkf_operator TO tgt_reader")
        with psycopg.connect(cluster.dsn(dbname, user="tgt_reader"), autocommit=True) as r:
            # An operator may write through enkf.forecast only: a direct write is refused.
            state = sqlstate(
                r,
                """INSERT INTO enkf.target_forecasts SELECT twin_id, reference_date, model, location, target, output_type,
                          horizon, target_end_date, run_id, output_type_ids, output_values, counts, inputs_censored_below
                     FROM enkf.target_forecasts LIMIT 1""",
            )
            assert state[0] == "42501", state
    finally:
        conn.execute("DELETE FROM enkf.location_grants WHERE role = 'tgt_reader'::regrole")
        conn.execute("DELETE FROM enkf.twin_publications WHERE role = 'tgt_reader'::regrole")
        conn.execute("DROP OWNED BY tgt_reader")
        conn.execute("DROP ROLE tgt_reader")
