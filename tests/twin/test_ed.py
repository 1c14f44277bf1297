"""The ED-visit proportion as the twin's second observed stream, through SQL (issue 17 item 2):
a column named by create_twin's ed_column is assimilated jointly with the counts, the
checkpoints hold 10 state rows, enkf.forecast stores the hub target `wk inc flu prop ed visits`
(quantiles in [0, 1], horizons -1..3), the submission file has it, enkf.score_targets scores it
against the baseline, and a bad proportion is refused by name. Synthetic data only: the
proportions are derived from the generator's counts, so the truth is known."""

from __future__ import annotations

from support.errors import sqlstate

ED_TARGET = "wk inc flu prop ed visits"
# Proportion = background + k * admissions per person: 0.4% plus 300 per admission per 1,000
# people (about 1-3% at the synthetic peaks).
BACKGROUND, K = 0.004, 300.0


def ed_data(conn, weeks: int, first_week: str = "2025-08-02", seed: int = 3) -> None:
    conn.execute(
        f"""CREATE TABLE locs AS SELECT DISTINCT location, population
              FROM enkf.synthetic_surveillance(3, 1, '{first_week}', {seed})"""
    )
    conn.execute(
        f"""CREATE TABLE obs AS
            SELECT s.time, s.location, s.value,
                   {BACKGROUND} + {K} * s.value / l.population AS ed_prop
              FROM enkf.synthetic_surveillance(3, {weeks}, '{first_week}', {seed}) s
              JOIN locs l USING (location)"""
    )


def test_an_ed_twin_assimilates_forecasts_submits_and_scores_the_ed_stream(conn):
    ed_data(conn, weeks=24)
    # One week without a proportion anywhere: no ED observation that week, counts still read.
    conn.execute("UPDATE obs SET ed_prop = NULL WHERE time = '2025-09-13'")
    conn.execute("SELECT enkf.create_twin('ed', 'obs', 'locs', members => 60, ed_column => 'ed_prop')")
    enabled, column = conn.execute(
        "SELECT config #> '{ed,enabled}', ed_column::text FROM enkf.twins WHERE name = 'ed'"
    ).fetchone()
    assert (enabled, column) == (True, "ed_prop")
    for through in ("2025-12-06", "2025-12-13", "2025-12-20"):
        conn.execute("SELECT * FROM enkf.assimilate('ed', %s)", (through + " 23:59",))
        conn.execute("SELECT count(*) FROM enkf.forecast('ed')")

    # 10 rows per member; the assimilated proportions are those of the table.
    shapes = conn.execute(
        """SELECT DISTINCT array_length(ensemble, 1), array_length(ensemble, 2)
             FROM enkf.checkpoints c JOIN enkf.twins t USING (twin_id) WHERE t.name = 'ed'"""
    ).fetchall()
    assert shapes == [(10, 60)]
    mismatched = conn.execute(
        """SELECT count(*) FROM enkf.checkpoints c JOIN enkf.twins t USING (twin_id)
             JOIN obs o ON o.location = c.location AND o.time = c.week_end
            WHERE t.name = 'ed' AND c.observed_ed IS DISTINCT FROM o.ed_prop"""
    ).fetchone()[0]
    assert mismatched == 0
    assert conn.execute(
        "SELECT count(*) FROM enkf.checkpoints WHERE week_end = '2025-09-13' AND observed_ed IS NULL AND observed IS NOT NULL"
    ).fetchone()[0] == 3
    variables = {r[0] for r in conn.execute("SELECT DISTINCT variable FROM enkf.state_estimates WHERE twin = 'ed'")}
    assert {"ed_p", "ed_ratio", "ed_background", "beta", "ihr"} <= variables

    # The twin learns the stream: its latest modelled proportion lies near the last observed one.
    last = dict(conn.execute(
        "SELECT location, ed_prop FROM obs WHERE time = '2025-12-20'"
    ).fetchall())
    for location, mean in conn.execute(
        "SELECT location, mean FROM enkf.state_estimates WHERE twin = 'ed' AND variable = 'ed_p'"
    ):
        assert abs(mean - last[location]) < 0.5 * last[location] + 0.002, (location, mean, last[location])

    # The ED target: quantiles of the twin and the baseline, horizons -1..3, in [0, 1], ordered,
    # not counts (small-cell suppression does not apply value by value).
    rows = conn.execute(
        """SELECT f.model, f.location, f.horizon, f.output_type, f.counts, f.output_type_ids, f.output_values
             FROM enkf.target_forecasts f JOIN enkf.twins t USING (twin_id)
            WHERE t.name = 'ed' AND f.target = %s AND f.reference_date = '2025-12-27'""",
        (ED_TARGET,),
    ).fetchall()
    assert {r[0] for r in rows} == {"enkf", "baseline"}
    for model in ("enkf", "baseline"):
        horizons = sorted((r[1], r[2]) for r in rows if r[0] == model)
        assert horizons == sorted((loc, h) for loc in last for h in range(-1, 4))
    for model, _, _, output_type, counts, ids, values in rows:
        assert output_type == "quantile" and counts is False
        assert len(ids) == 23 and len(values) == 23
        assert all(0.0 <= v <= 1.0 for v in values), values
        assert all(a <= b for a, b in zip(values, values[1:])), values

    sub = conn.execute(
        "SELECT location, horizon, output_type_id, value FROM enkf.hub_submission('ed', '2025-12-27', partial => true) WHERE target = %s",
        (ED_TARGET,),
    ).fetchall()
    # Every location not withheld by the small-cell rule, whole.
    assert sub and len(sub) == len({r[0] for r in sub}) * 5 * 23
    assert all(0.0 <= r[3] <= 1.0 for r in sub)
    hub = {r[0] for r in conn.execute(
        "SELECT DISTINCT location FROM enkf.hubverse_forecasts WHERE target = %s", (ED_TARGET,)
    ).fetchall()}
    assert hub == set(last)

    # Scored against the baseline once the proportion of the target week is known (the
    # forecasts of 2025-12-13 and 2025-12-20 at horizon 0 are, for instance).
    scores = {
        (r[0], r[1]): r[2:]
        for r in conn.execute(
            """SELECT model, horizon, tasks, mean, reference, relative FROM enkf.score_targets('ed')
                WHERE target = %s AND score = 'wis'""",
            (ED_TARGET,),
        ).fetchall()
    }
    assert ("enkf", 0) in scores and ("baseline", 0) in scores
    tasks, mean, reference, relative = scores[("enkf", 0)]
    assert tasks >= 3 and reference == "baseline"
    assert 0.0 <= mean < 0.05 and relative is not None


def test_twins_without_the_column_are_unchanged_and_bad_columns_and_values_are_refused(conn):
    ed_data(conn, weeks=12)
    conn.execute("ALTER TABLE obs ADD COLUMN ed_text text")
    state, message, hint = sqlstate(
        conn, "SELECT enkf.create_twin('x', 'obs', 'locs', ed_column => 'nope')"
    )
    assert state == "42703" and "ed_column" in message and hint
    state, message, hint = sqlstate(
        conn, "SELECT enkf.create_twin('x', 'obs', 'locs', ed_column => 'ed_text')"
    )
    assert state == "42804" and "ed_column" in message and hint
    state, message, hint = sqlstate(
        conn, """SELECT enkf.create_twin('x', 'obs', 'locs', config => '{"ed": {"enabled": true}}')"""
    )
    assert state == "22023" and "ed.enabled" in message and "ed_column" in hint

    # A twin over the same table without ed_column: 7 rows, no proportion read.
    conn.execute("SELECT enkf.create_twin('plain', 'obs', 'locs', members => 20)")
    conn.execute("SELECT * FROM enkf.assimilate('plain')")
    assert conn.execute(
        "SELECT DISTINCT array_length(ensemble, 1), count(observed_ed) FROM enkf.checkpoints GROUP BY 1"
    ).fetchall() == [(7, 0)]

    # A percentage instead of a proportion: refused by name, and nothing stored.
    conn.execute("SELECT enkf.create_twin('ed', 'obs', 'locs', members => 20, ed_column => 'ed_prop')")
    conn.execute("UPDATE obs SET ed_prop = 2.5 WHERE time = '2025-09-06'")
    state, message, hint = sqlstate(conn, "SELECT * FROM enkf.assimilate('ed')")
    assert state == "22023", message
    assert "ed_prop" in message and "outside [0, 1]" in message and "2025-09-06" in message
    assert hint
    assert conn.execute(
        "SELECT count(*) FROM enkf.checkpoints c JOIN enkf.twins t USING (twin_id) WHERE t.name = 'ed'"
    ).fetchone()[0] == 0


def test_the_backtest_reads_the_ed_column_as_it_was_published(conn):
    """enkf.backtest with ed_column: the twin it creates assimilates the proportions (10-row
    checkpoints), forecasts the ED target at every reference date with both models, and
    score_targets scores it; a version of the proportions published after the last reference
    date changes no forecast; continuing the backtest without the column is refused."""
    conn.execute(
        """CREATE TABLE locs AS SELECT DISTINCT location, population
             FROM enkf.synthetic_surveillance(3, 1, '2022-10-01', 5)"""
    )
    conn.execute(
        f"""CREATE TABLE rel AS
            SELECT s.time, s.location, s.value, s.as_of, {BACKGROUND} + {K} * s.value / l.population AS ed_prop
              FROM enkf.synthetic_surveillance(3, 40, '2022-10-01', 5, versions => 3) s
              JOIN locs l USING (location)"""
    )
    conn.execute("CREATE TABLE poisoned AS SELECT * FROM rel")
    conn.execute(
        "INSERT INTO poisoned SELECT time, location, value, as_of + 400, 0.9 FROM rel"
    )

    def backtest(twin, table):
        return conn.execute(
            f"""SELECT model, forecasts FROM enkf.backtest('{twin}', '{table}', 'locs', '2023-03-04', '2023-04-29',
                                                          members => 30, ed_column => 'ed_prop')
                 WHERE location IS NULL AND horizon IS NULL ORDER BY model"""
        ).fetchall()

    clean = backtest("edbt", "rel")
    assert dict(clean)["enkf"] > 0
    assert backtest("edpoisoned", "poisoned") == clean
    assert conn.execute(
        """SELECT DISTINCT array_length(ensemble, 1) FROM enkf.checkpoints c JOIN enkf.twins t USING (twin_id)
            WHERE t.name = 'edbt'"""
    ).fetchall() == [(10,)]
    per_model = conn.execute(
        """SELECT f.model, count(DISTINCT f.reference_date) FROM enkf.target_forecasts f JOIN enkf.twins t USING (twin_id)
            WHERE t.name = 'edbt' AND f.target = %s GROUP BY 1 ORDER BY 1""",
        (ED_TARGET,),
    ).fetchall()
    assert per_model == [("baseline", 9), ("enkf", 9)]
    forecasts = """SELECT f.model, f.reference_date, f.horizon, f.output_values
                     FROM enkf.target_forecasts f JOIN enkf.twins t USING (twin_id)
                    WHERE t.name = %s AND f.target = %s ORDER BY 1, 2, 3"""
    assert conn.execute(forecasts, ("edbt", ED_TARGET)).fetchall() == conn.execute(
        forecasts, ("edpoisoned", ED_TARGET)
    ).fetchall()
    scored = conn.execute(
        "SELECT model, sum(tasks) FROM enkf.score_targets('edbt') WHERE target = %s GROUP BY 1 ORDER BY 1",
        (ED_TARGET,),
    ).fetchall()
    assert [m for m, n in scored if n > 0] == ["baseline", "enkf"], scored
    state, message, _ = sqlstate(
        conn,
        "SELECT * FROM enkf.backtest('edbt', 'rel', 'locs', '2023-05-06', '2023-05-13', members => 30)",
    )
    assert state == "42710" and "ED column" in message, (state, message)
