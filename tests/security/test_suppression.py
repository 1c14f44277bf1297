"""Small-cell suppression that cannot be read around, and twin results that follow the grants
of their source (docs/hipaa.md, "Classification", "Small-cell suppression", "Twin results
follow the source's grants"). Written as the attacks a colleague with a login would try.
Synthetic data only."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from support.data import hypertable, make_data
from support.errors import sqlstate


def login(cluster, dbname, role):
    return psycopg.connect(cluster.dsn(dbname, user=role), autocommit=True)


@pytest.fixture()
def people(cluster, conn, dbname):
    """Login roles of each pg_enkf kind, none granted SELECT on any observation table."""
    conn.execute("SELECT * FROM enkf.create_roles()")
    tag = uuid.uuid4().hex[:6]
    names = {kind: f"{kind}_{tag}" for kind in ("reader", "analyst", "operator", "admin")}
    for kind, role in names.items():
        conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE enkf_{kind}")
    yield names
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        for role in names.values():
            admin.execute(f"DROP ROLE IF EXISTS {role}")


# --- the reconstruction attack -----------------------------------------------------------------

# What a reader can see: every publication view and the submission file. Columns naming the
# twin (or its tables) are left out: the attack compares twins that differ in nothing else.
READER_QUERIES = {
    "hubverse_forecasts": """SELECT pg_catalog.regexp_replace(model_id, '^[^-]+', ''), reference_date, target,
                                    horizon, target_end_date, location, output_type, output_type_id, value
                               FROM enkf.hubverse_forecasts WHERE model_id LIKE %(twin)s || '%%' ORDER BY 1, 2, 3, 4, 6, 7, 8""",
    "forecast_summary": """SELECT model, location, reference_date, horizon, median, lower_50, upper_50, lower_95,
                                  upper_95, observed, observed_suppressed
                             FROM enkf.forecast_summary WHERE twin = %(twin)s ORDER BY 1, 2, 3, 4""",
    "observed_counts": """SELECT location, week_end, observed, suppressed FROM enkf.observed_counts
                           WHERE twin = %(twin)s ORDER BY 1, 2""",
    "twin_summary": """SELECT model, members, config_hash, origin, last_week, locations_assimilated, classification
                         FROM enkf.twin_summary WHERE name = %(twin)s""",
}


def reader_view(c, twin):
    seen = {name: c.execute(q, {"twin": twin}).fetchall() for name, q in READER_QUERIES.items()}
    refs = sorted({r[1] for r in seen["hubverse_forecasts"]})
    seen["hub_submission"] = [
        c.execute("SELECT * FROM enkf.hub_submission(%s, %s, partial => true)", (twin, ref)).fetchall() for ref in refs
    ]
    return seen


def raw_results(conn, twin):
    """Every number the twin computed, as its owner reads them: forecasts of every model and
    target, and the analyses (without the counts the checkpoints record as they are)."""
    return {
        "forecasts": conn.execute(
            """SELECT f.model, f.location, f.reference_date, f.horizon, f.quantile_values
                 FROM enkf.forecasts f JOIN enkf.twins t USING (twin_id) WHERE t.name = %s ORDER BY 1, 2, 3, 4""",
            (twin,)).fetchall(),
        "targets": conn.execute(
            """SELECT g.model, g.location, g.reference_date, g.target, g.output_type, g.horizon, g.output_values
                 FROM enkf.target_forecasts g JOIN enkf.twins t USING (twin_id) WHERE t.name = %s
                ORDER BY 1, 2, 3, 4, 5, 6""", (twin,)).fetchall(),
        "analyses": conn.execute(
            """SELECT c.location, c.week_end, c.ensemble FROM enkf.checkpoints c JOIN enkf.twins t USING (twin_id)
                WHERE t.name = %s ORDER BY 1, 2""", (twin,)).fetchall(),
    }


def test_no_result_depends_on_which_small_count_was_withheld(cluster, conn, dbname, people):
    """The attack of the issue: a location reports 40 a week, but 3 one week (withheld). The
    FluSight-style baseline's spread came from every week-to-week change, so its upper 95%
    bound minus its median was 40 - 3 = 37, and the count was back. Here the same history is
    given to twins that differ only in the withheld counts (3, 7, 1; and 9, 2, 5 in a second
    week and location): for protected twins every value a reader can see, through every view
    and the submission file, is identical, and so is every number the twins computed. So no
    output, however combined, tells the counts apart. A public-aggregate twin (no rule) over
    the same tables does differ: the comparison would see a leak."""
    make_data(conn, locations=3, weeks=52, table="base")
    locs = [r[0] for r in conn.execute("SELECT location FROM locs ORDER BY 1").fetchall()]
    weeks = [r[0] for r in conn.execute("SELECT DISTINCT time FROM base ORDER BY 1").fetchall()]
    conn.execute("UPDATE base SET value = 40 WHERE location = %s", (locs[0],))
    variants = {"a": (3, 9), "b": (7, 2), "c": (1, 5)}
    for tag, (first, second) in variants.items():
        conn.execute(f"CREATE TABLE obs_{tag} AS SELECT * FROM base")
        hypertable(conn, f"obs_{tag}")
        conn.execute(f"UPDATE obs_{tag} SET value = %s WHERE location = %s AND time = %s", (first, locs[0], weeks[30]))
        conn.execute(f"UPDATE obs_{tag} SET value = %s WHERE location = %s AND time = %s", (second, locs[1], weeks[33]))
    twins = {f"p{tag}": f"obs_{tag}" for tag in variants} | {"qa": "obs_a", "qb": "obs_b"}
    for twin, table in twins.items():
        cls = "protected" if twin.startswith("p") else "public_aggregate"
        conn.execute("SELECT enkf.create_twin(%s, %s, 'locs', members => 16, classification => %s)", (twin, table, cls))
        # Forecasts from before, at and after the withheld weeks, and every hub target.
        for k in (28, 31, 32, 34, 36, 40):
            conn.execute("SELECT * FROM enkf.assimilate(%s, %s)", (twin, weeks[k]))
            conn.execute("SELECT count(*) FROM enkf.forecast(%s)", (twin,))
        conn.execute("INSERT INTO enkf.twin_publications (twin_id, role) SELECT twin_id, %s FROM enkf.twins WHERE name = %s",
                     (people["reader"], twin))
    conn.execute("INSERT INTO enkf.location_grants (role, location) VALUES (%s, '*')", (people["reader"],))
    with login(cluster, dbname, people["reader"]) as r:
        seen = {twin: reader_view(r, twin) for twin in twins}
    assert seen["pa"]["hubverse_forecasts"] and seen["pa"]["hub_submission"]
    # Forecasts are shown, not withheld whole: the rule takes nothing from a reader it need not.
    assert sum(v[-1] is not None for v in seen["pa"]["hubverse_forecasts"]) > 0.8 * len(seen["pa"]["hubverse_forecasts"])
    for name in seen["pa"]:
        assert seen["pa"][name] == seen["pb"][name] == seen["pc"][name], name
    assert seen["qa"]["hubverse_forecasts"] != seen["qb"]["hubverse_forecasts"]
    raw = {twin: raw_results(conn, twin) for twin in ("pa", "pb", "pc", "qa", "qb")}
    assert raw["pa"] == raw["pb"] == raw["pc"]
    assert raw["qa"]["forecasts"] != raw["qb"]["forecasts"]
    # The arithmetic, on the twin with the 3: the baseline's bounds no longer give it.
    with login(cluster, dbname, people["reader"]) as r:
        spreads = r.execute(
            """SELECT upper_95 - median FROM enkf.forecast_summary
                WHERE twin = 'pa' AND model = 'baseline' AND location = %s AND horizon = 0 AND reference_date > %s""",
            (locs[0], weeks[30])).fetchall()
        assert spreads and all(s[0] is None or abs(s[0] - 37) > 0.5 for s in spreads), spreads
        # The withheld weeks themselves: NULL and flagged.
        assert r.execute("SELECT observed, suppressed FROM enkf.observed_counts WHERE twin = 'pa' AND location = %s AND week_end = %s",
                         (locs[0], weeks[30])).fetchone() == (None, True)
    # The raw count stays in the checkpoint, for those who may read the table anyway.
    assert conn.execute("""SELECT c.observed FROM enkf.checkpoints c JOIN enkf.twins t USING (twin_id)
                            WHERE t.name = 'pa' AND c.location = %s AND c.week_end = %s""",
                        (locs[0], weeks[30])).fetchone()[0] == 3


def test_no_number_a_reader_sees_is_a_small_count(cluster, conn, dbname, people):
    """Counts 0..12, one location each week in turn: every count and forecast value a reader can
    see through every view and the submission file is 0, NULL, or at least the threshold (11)."""
    make_data(conn, locations=3, weeks=70)
    conn.execute("""UPDATE obs SET value = CASE WHEN (time - DATE '2022-10-01') / 7 % 5 = 0
                                                 THEN ((time - DATE '2022-10-01') / 35 + ascii(right(location, 1))) % 13
                                                 ELSE 30 + (time - DATE '2022-10-01') / 7 END""")
    conn.execute("SELECT enkf.create_twin('tw', 'obs', 'locs', members => 16)")
    assert conn.execute("SELECT classification FROM enkf.twins").fetchone()[0] == "protected"
    for week in range(8, 70, 3):
        conn.execute("SELECT * FROM enkf.assimilate('tw', DATE '2022-10-01' + %s * 7)", (week,))
        conn.execute("SELECT count(*) FROM enkf.forecast('tw')")
    conn.execute("INSERT INTO enkf.location_grants (role, location) VALUES (%s, '*')", (people["reader"],))
    conn.execute("INSERT INTO enkf.twin_publications (twin_id, role) SELECT twin_id, %s FROM enkf.twins", (people["reader"],))

    def small(v):
        return v is not None and 0 < v < 11

    with login(cluster, dbname, people["reader"]) as r:
        rows = r.execute("SELECT model_id, value, output_type, target FROM enkf.hubverse_forecasts").fetchall()
        counts = [row for row in rows if row[2] != "pmf" and "prop" not in row[3]]
        assert counts and not [row for row in counts if small(row[1])]
        assert {row[2] for row in rows if row[1] is not None} == {"quantile", "sample", "pmf"}
        for ref in sorted({row[0] for row in r.execute("SELECT DISTINCT reference_date FROM enkf.hubverse_forecasts").fetchall()}):
            sub = r.execute("SELECT output_type, value FROM enkf.hub_submission('tw', %s, partial => true)", (ref,)).fetchall()
            assert not [s for s in sub if s[1] is None or (s[0] != "pmf" and small(s[1]))], ref
        summary = r.execute(
            "SELECT median, lower_50, upper_50, lower_95, upper_95, observed FROM enkf.forecast_summary").fetchall()
        assert summary and not [s for s in summary if any(small(v) for v in s)]
        observed = r.execute("SELECT observed, suppressed FROM enkf.observed_counts").fetchall()
        assert not [o for o in observed if small(o[0])] and any(o[1] for o in observed)
        for q in ("SELECT count(*) FROM enkf.forecasts", "SELECT count(*) FROM enkf.checkpoints",
                  "SELECT count(*) FROM enkf.forecast_quantiles", "SELECT count(*) FROM enkf.state_estimates",
                  "SELECT count(*) FROM enkf.score('tw')", "SELECT count(*) FROM enkf.score_targets('tw')",
                  "SELECT count(*) FROM enkf.target_forecasts", "SELECT count(*) FROM enkf.runs"):
            assert sqlstate(r, q)[0] == "42501", q


def test_public_aggregate_twins_show_every_count(cluster, conn, dbname, people):
    """Counts published anyway (NHSN's) carry no rule: a public-aggregate twin shows every count
    and forecast value, small ones included, to a reader it is published to."""
    make_data(conn, locations=2, weeks=40)
    conn.execute("UPDATE obs SET value = 4 WHERE time = (SELECT max(time) FROM obs)")
    conn.execute("SELECT enkf.create_twin('pub', 'obs', 'locs', members => 12, classification => 'public_aggregate')")
    conn.execute("SELECT * FROM enkf.assimilate('pub')")
    conn.execute("SELECT count(*) FROM enkf.forecast('pub')")
    conn.execute("INSERT INTO enkf.location_grants (role, location) VALUES (%s, '*')", (people["reader"],))
    conn.execute("INSERT INTO enkf.twin_publications (twin_id, role) SELECT twin_id, %s FROM enkf.twins", (people["reader"],))
    with login(cluster, dbname, people["reader"]) as r:
        assert r.execute("SELECT bool_or(observed = 4), bool_or(suppressed) FROM enkf.observed_counts").fetchone() == (True, False)
        assert r.execute("SELECT count(*) FILTER (WHERE value IS NULL), count(*) FROM enkf.hubverse_forecasts").fetchone()[0] == 0
        baseline = r.execute("SELECT median FROM enkf.forecast_summary WHERE model = 'baseline' AND horizon = 0").fetchall()
        assert {b[0] for b in baseline} == {4.0}
    # The classification is an administrator's, and checked.
    with login(cluster, dbname, people["operator"]) as o:
        assert sqlstate(o, "UPDATE enkf.twins SET classification = 'protected'")[0] == "42501"
    assert sqlstate(conn, "SELECT enkf.create_twin('x', 'obs', 'locs', classification => 'secret')")[0] == "22023"
    assert sqlstate(conn, "UPDATE enkf.twins SET classification = 'open'")[0] == "23514"


def test_a_stricter_rule_withholds_what_was_made_under_a_weaker_one(cluster, conn, dbname, people):
    """Forecasts made while the threshold was 11 rest on counts from 11 to 14; after a DBA raises
    it to 15 readers see none of them, and the next run re-assimilates the twin under the new
    threshold, after which its forecasts are shown again. A twin reclassified as public
    aggregate data is re-assimilated with its counts as they are."""
    make_data(conn, locations=2, weeks=40)
    conn.execute("SELECT enkf.create_twin('tw', 'obs', 'locs', members => 12)")
    conn.execute("SELECT * FROM enkf.assimilate('tw', '2023-05-01')")
    conn.execute("SELECT count(*) FROM enkf.forecast('tw')")
    conn.execute("INSERT INTO enkf.location_grants (role, location) VALUES (%s, '*')", (people["reader"],))
    conn.execute("INSERT INTO enkf.twin_publications (twin_id, role) SELECT twin_id, %s FROM enkf.twins", (people["reader"],))

    def shown():
        with login(cluster, dbname, people["reader"]) as r:
            return r.execute("SELECT count(value), count(*) FROM enkf.hubverse_forecasts").fetchone()

    assert shown()[0] > 0
    assert conn.execute("SELECT DISTINCT inputs_censored_below FROM enkf.checkpoints").fetchall() == [(11.0,)]
    conn.execute(f'ALTER DATABASE "{dbname}" SET enkf.suppression_threshold = 15')
    assert shown()[0] == 0
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as c:
        run = c.execute("SELECT run_id FROM enkf.assimilate('tw', '2023-05-01')").fetchone()[0]
        assert c.execute("SELECT reassimilated FROM enkf.runs WHERE run_id = %s", (run,)).fetchone()[0] == 2
        assert c.execute("SELECT DISTINCT inputs_censored_below FROM enkf.checkpoints").fetchall() == [(15.0,)]
        c.execute("SELECT count(*) FROM enkf.forecast('tw')")
    assert shown()[0] > 0
    with login(cluster, dbname, people["admin"]) as a:
        a.execute("UPDATE enkf.twins SET classification = 'public_aggregate'")
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as c:
        c.execute("SELECT * FROM enkf.assimilate('tw', '2023-05-01')")
        assert c.execute("SELECT DISTINCT inputs_censored_below FROM enkf.checkpoints").fetchall() == [(None,)]


# --- results follow the source's grants --------------------------------------------------------


def counts_seen(c):
    out = {}
    for rel in ("checkpoints", "forecasts", "target_forecasts", "forecast_quantiles", "state_estimates",
                "hubverse_forecasts", "forecast_summary", "observed_counts"):
        try:
            out[rel] = c.execute(f"SELECT count(DISTINCT location) FROM enkf.{rel}").fetchone()[0]
        except psycopg.errors.InsufficientPrivilege:
            out[rel] = "denied"
    return out


def test_twin_results_follow_the_observation_tables_grants(cluster, conn, dbname, people):
    """The issue's leak: an operator with the location granted but no SELECT on the observation
    table read the raw counts in enkf.checkpoints.observed, and an analyst read them as the
    baseline's medians. Now reading a twin's results needs what reading its table needs
    (the columns it reads, and the table's own row-level security), or a publication of the
    twin, which opens its forecasts but never its checkpoints."""
    make_data(conn, locations=3, weeks=40)
    locs = [r[0] for r in conn.execute("SELECT location FROM locs ORDER BY 1").fetchall()]
    conn.execute("SELECT enkf.create_twin('tw', 'obs', 'locs', members => 12)")
    conn.execute("SELECT * FROM enkf.assimilate('tw', '2023-05-01')")
    conn.execute("SELECT count(*) FROM enkf.forecast('tw')")
    for role in people.values():
        conn.execute("INSERT INTO enkf.location_grants (role, location) VALUES (%s, '*')", (role,))
    op, an, rd = people["operator"], people["analyst"], people["reader"]
    nothing = {"checkpoints": 0, "forecasts": 0, "target_forecasts": 0, "forecast_quantiles": 0, "state_estimates": 0,
               "hubverse_forecasts": 0, "forecast_summary": 0, "observed_counts": 0}
    with login(cluster, dbname, op) as o:
        assert counts_seen(o) == nothing
        assert o.execute("SELECT count(*) FROM enkf.checkpoints WHERE observed IS NOT NULL").fetchone()[0] == 0
    with login(cluster, dbname, an) as a:
        assert counts_seen(a) == nothing | {"checkpoints": "denied"}
    with login(cluster, dbname, rd) as r:
        seen = counts_seen(r)
        assert {k: v for k, v in seen.items() if v != "denied"} == {
            "hubverse_forecasts": 0, "forecast_summary": 0, "observed_counts": 0}
    # Some columns are not enough: the twin reads time, location and value.
    conn.execute(f"GRANT SELECT (time, location) ON obs TO {op}")
    with login(cluster, dbname, op) as o:
        assert counts_seen(o) == nothing
    conn.execute(f"GRANT SELECT (value) ON obs TO {op}")
    conn.execute(f"GRANT SELECT ON obs TO {an}")
    with login(cluster, dbname, op) as o:
        assert set(counts_seen(o).values()) == {3}
    with login(cluster, dbname, an) as a:
        assert counts_seen(a) == {k: 3 for k in nothing} | {"checkpoints": "denied"}
    # The table's own row-level security: one location's rows for the analyst.
    conn.execute("ALTER TABLE obs ENABLE ROW LEVEL SECURITY")
    conn.execute(f"CREATE POLICY one ON obs FOR SELECT TO {an} USING (location = '{locs[1]}')")
    conn.execute(f"CREATE POLICY all_rows ON obs FOR SELECT TO {op} USING (true)")
    with login(cluster, dbname, an) as a:
        assert counts_seen(a) == {k: 1 for k in nothing} | {"checkpoints": "denied"}
        assert {r[0] for r in a.execute("SELECT DISTINCT location FROM enkf.forecasts").fetchall()} == {locs[1]}
        # The pooled model and the combination rest on every location's counts (its
        # coefficients, the aggregate's changes): not for a reader the table limits to one.
        for view in ("enkf.forecasts", "enkf.forecast_summary", "enkf.forecast_quantiles"):
            models = {r[0] for r in a.execute(f"SELECT DISTINCT model FROM {view}").fetchall()}
            assert models == {"enkf", "baseline", "trend"}, view
        assert not a.execute("SELECT 1 FROM enkf.hubverse_forecasts WHERE model_id ~ '-(pooled|combined)$'").fetchall()
        # Nor the combination's samples, pmfs and peaks, in the table or in the scores.
        assert {r[0] for r in a.execute("SELECT DISTINCT model FROM enkf.target_forecasts").fetchall()} == {
            "enkf", "baseline", "climatology"}
    assert {r[0] for r in conn.execute("SELECT DISTINCT model FROM enkf.target_forecasts").fetchall()} >= {"combined"}
    # Conservatively, any row-level security of the table that applies to a user hides them, even
    # a policy letting every row through; the owner, whom none applies to, reads them.
    with login(cluster, dbname, op) as o:
        assert {r[0] for r in o.execute("SELECT DISTINCT model FROM enkf.forecasts").fetchall()} == {
            "enkf", "baseline", "trend"}
    assert {r[0] for r in conn.execute("SELECT DISTINCT model FROM enkf.forecast_summary").fetchall()} == {
        "enkf", "baseline", "trend", "pooled", "combined"}
    # A publication opens the forecasts to the reader, never the checkpoints to an operator.
    conn.execute("INSERT INTO enkf.twin_publications (twin_id, role) SELECT twin_id, %s FROM enkf.twins", (rd,))
    conn.execute(f"REVOKE SELECT ON obs FROM {op}")
    conn.execute(f"REVOKE SELECT (time, location, value) ON obs FROM {op}")
    conn.execute("INSERT INTO enkf.twin_publications (twin_id, role) SELECT twin_id, %s FROM enkf.twins", (op,))
    with login(cluster, dbname, rd) as r:
        seen = counts_seen(r)
        assert {k: v for k, v in seen.items() if v != "denied"} == {
            "hubverse_forecasts": 3, "forecast_summary": 3, "observed_counts": 3}
        assert r.execute("SELECT count(*) FROM enkf.twin_publications").fetchone()[0] == 1
        # A publication opens every model's forecasts, the pooled ones included.
        assert {m[0] for m in r.execute("SELECT DISTINCT model FROM enkf.forecast_summary").fetchall()} >= {"pooled", "combined"}
        assert sqlstate(r, "INSERT INTO enkf.twin_publications (twin_id, role) SELECT twin_id, current_user::text::regrole FROM enkf.twin_summary")[0] == "42501"
    with login(cluster, dbname, op) as o:
        seen = counts_seen(o)
        assert seen["checkpoints"] == 0 and seen["forecasts"] == 3
        # And the operator cannot run the twin over a table it may not read.
        assert sqlstate(o, "SELECT * FROM enkf.assimilate('tw')")[0] == "42501"
    # Publications name existing roles, their grantor recorded by the database.
    assert sqlstate(conn, "INSERT INTO enkf.twin_publications (twin_id, role) SELECT twin_id, 999999::oid::regrole FROM enkf.twins")[0] == "42704"
    assert conn.execute("SELECT count(*) FROM enkf.twin_publications WHERE granted_by = 'postgres'::regrole").fetchone()[0] == 2
    # Dropping the twin drops its publications.
    conn.execute("SELECT enkf.drop_twin('tw')")
    assert conn.execute("SELECT count(*) FROM enkf.twin_publications").fetchone()[0] == 0


def test_a_policy_of_the_observation_table_cannot_pass_for_a_pg_enkf_write(cluster, conn, dbname, people):
    """The check of the table's row-level security runs the table's owner's policies, possibly
    in the middle of one of pg_enkf's own writes (a DELETE of checkpoints under row-level
    security). Whatever those policies call runs with pg_enkf's write flag down: a function
    planted in a policy cannot forge a run."""
    make_data(conn, locations=2, weeks=30)
    op = people["operator"]
    conn.execute("SELECT enkf.create_twin('tw', 'obs', 'locs', members => 8)")
    conn.execute("SELECT * FROM enkf.assimilate('tw', '2023-03-01')")
    conn.execute("INSERT INTO enkf.location_grants (role, location) VALUES (%s, '*')", (op,))
    conn.execute(f"GRANT SELECT ON obs, locs TO {op}")
    conn.execute("CREATE TABLE seen (writing boolean)")
    conn.execute(f"GRANT INSERT ON seen TO {op}")
    conn.execute("""CREATE FUNCTION public.note_writing() RETURNS boolean LANGUAGE plpgsql AS $$
                    BEGIN INSERT INTO public.seen VALUES (enkf.writing()); RETURN true; END $$""")
    conn.execute("ALTER TABLE obs ENABLE ROW LEVEL SECURITY")
    conn.execute(f"CREATE POLICY noted ON obs FOR SELECT TO {op} USING (public.note_writing())")
    conn.execute("UPDATE obs SET value = value + 1 WHERE time = (SELECT min(time) FROM obs)")  # a revision
    with login(cluster, dbname, op) as o:
        o.execute("SELECT * FROM enkf.assimilate('tw', '2023-04-01')")
    flags = conn.execute("SELECT DISTINCT writing FROM seen").fetchall()
    assert flags == [(False,)], flags
