"""The bundled FluSight data (data/flusight/, provenance in its README) in a database, and the
hub's own scoring: used by the demo (demo/backtest.py) and the backtest benchmark
(bench/backtest.py).

Every table is loaded with COPY into a temporary staging table and then INSERT ... SELECT into
its place: with pgaudit preloaded, COPY straight into a TimescaleDB hypertable crashes the
backend (timescale/timescaledb#7667), and the same loader serves plain tables and hypertables.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "flusight"
LEVELS = [0.01, 0.025] + [round(0.05 * k, 2) for k in range(1, 20)] + [0.975, 0.99]
# The FluSight seasons with real-time data (vintages) and the hub's forecasts: the reference
# dates the hub's FluSight-baseline and FluSight-ensemble forecast from.
SEASONS = {
    "2021-22": (dt.date(2022, 1, 15), dt.date(2022, 6, 25)),
    "2022-23": (dt.date(2022, 10, 8), dt.date(2023, 5, 20)),
    "2023-24": (dt.date(2023, 10, 14), dt.date(2024, 5, 4)),
    "2024-25": (dt.date(2024, 11, 23), dt.date(2025, 5, 31)),
}
# Seasons scored against the earlier repository's own latest release (HHS Protect counts, as
# FluSight scored them; data/flusight/README.md), not against the newer hub's NHSN counts.
HISTORY_SEASONS = {"2021-22", "2022-23"}


def _na(v: str) -> str | None:
    return None if v in ("NA", "") else v


def _copy_rows(conn, staging: str, columns: str, rows) -> None:
    with conn.cursor() as cur:
        with cur.copy(f"COPY {staging} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def load(conn, schema: str = "flu", hypertables: bool = False) -> None:
    """Schema `schema` with tables locations, admissions (final counts), admissions_history
    (the earlier repository's latest release: the truth of 2021-22 and 2022-23),
    admissions_versions (every archived release of both, column as_of) and reference_forecasts
    (the hub's models); with
    `hypertables`, the two tables of counts are TimescaleDB hypertables on their date."""
    conn.execute(f"CREATE SCHEMA {schema}")
    conn.execute(f"""CREATE TABLE {schema}.locations (abbreviation text, location text PRIMARY KEY,
                                                      location_name text, population numeric NOT NULL)""")
    conn.execute(f"""CREATE TABLE {schema}.admissions (date date NOT NULL, location text NOT NULL,
                                                       value numeric, PRIMARY KEY (date, location))""")
    conn.execute(f"""CREATE TABLE {schema}.admissions_history (date date NOT NULL, location text NOT NULL,
                                                               value numeric, PRIMARY KEY (date, location))""")
    conn.execute(f"""CREATE TABLE {schema}.admissions_versions (as_of date NOT NULL, date date NOT NULL,
                                                                location text NOT NULL, value numeric,
                                                                PRIMARY KEY (location, date, as_of))""")
    if hypertables:
        for table in ("admissions", "admissions_versions"):
            conn.execute(f"SELECT create_hypertable('{schema}.{table}', 'date', chunk_time_interval => interval '52 weeks')")
    else:
        # The twin's span queries read min and max of the time column (a hypertable has this
        # index already).
        conn.execute(f"CREATE INDEX ON {schema}.admissions_versions (date)")
    conn.execute(f"""CREATE TABLE {schema}.reference_forecasts (model_id text, reference_date date, horizon int4,
                                                                target_end_date date, location text,
                                                                output_type_id float8, value float8)""")
    with open(DATA / "locations.csv", newline="") as f:
        locs = [(r["abbreviation"], r["location"], r["location_name"], r["population"]) for r in csv.DictReader(f)]
    with open(DATA / "target-hospital-admissions.csv", newline="") as f:
        final = [(r["date"], r["location"], _na(r["value"])) for r in csv.DictReader(f)]
    # Both families of releases in one table of versions: the earlier repository's (2021-12-04
    # to 2023-06-24) and the newer hub's (from 2023-09-23): a week's latest version published by
    # a day is the newest of either.
    versions, history = [], {}
    for name in ("vintages-hospital-admissions-2021-2023.csv.gz", "vintages-hospital-admissions.csv.gz"):
        with gzip.open(DATA / name, "rt", newline="") as f:
            for r in csv.DictReader(f):
                versions.append((r["as_of"], r["date"], r["location"], _na(r["value"])))
                if "2021" in name:
                    key = (r["date"], r["location"])
                    if key not in history or history[key][0] < r["as_of"]:
                        history[key] = (r["as_of"], _na(r["value"]))
    reference = []
    for name in ("reference-forecasts-2021-2023.csv.gz", "reference-forecasts.csv.gz"):
        with gzip.open(DATA / name, "rt", newline="") as f:
            reference += [(r["model_id"], r["reference_date"], r["horizon"], r["target_end_date"], r["location"],
                           r["output_type_id"], r["value"]) for r in csv.DictReader(f)]
    for table, columns, rows in [
        ("locations", "abbreviation, location, location_name, population", locs),
        ("admissions", "date, location, value", final),
        ("admissions_history", "date, location, value", [(d, loc, v) for (d, loc), (_, v) in history.items()]),
        ("admissions_versions", "as_of, date, location, value", versions),
        ("reference_forecasts", "model_id, reference_date, horizon, target_end_date, location, output_type_id, value", reference),
    ]:
        conn.execute(f"CREATE TEMP TABLE staging (LIKE {schema}.{table})")
        _copy_rows(conn, "staging", columns, rows)
        conn.execute(f"INSERT INTO {schema}.{table} SELECT * FROM staging")
        conn.execute("DROP TABLE staging")
    conn.execute(f"ANALYZE {schema}.admissions_versions")
    conn.execute(f"COMMENT ON TABLE {schema}.admissions_versions IS 'Every archived release of the weekly influenza admissions (NHSN via the CDC FluSight hub), public aggregate data'")


def wis(q: dict[float, float], y: float) -> float:
    """The weighted interval score of the 23 FluSight quantiles q (level -> value) at y."""
    total = 0.5 * abs(y - q[0.5])
    for lo in LEVELS[:11]:
        hi = round(1 - lo, 3)
        a = 2 * lo
        total += a / 2 * ((q[hi] - q[lo]) + 2 / a * max(q[lo] - y, 0) + 2 / a * max(y - q[hi], 0))
    return total / 11.5


def stored(conn, twin: str) -> dict[str, dict]:
    """A twin's stored quantiles, as {model: {(reference_date, location, horizon): {level: value}}}
    (from the analysts' view: raw values, no small-cell suppression)."""
    out: dict[str, dict] = defaultdict(lambda: defaultdict(dict))
    for model, ref, loc, h, level, value in conn.execute(
            "SELECT model, reference_date, location, horizon, quantile, value FROM enkf.forecast_quantiles WHERE twin = %s",
            (twin,)):
        out[model][(ref, loc, h)][round(level, 3)] = value
    return out


def season_of(reference: dt.date) -> str:
    start = reference.year if reference.month >= 8 else reference.year - 1
    return f"{start}-{str(start + 1)[2:]}"


def hub_scores(conn, models: dict[str, dict], schema: str = "flu") -> dict:
    """Scores each of `models` (name -> {(reference_date, location, horizon): {level: value}})
    against the final counts on exactly the tasks the hub's FluSight-baseline and
    FluSight-ensemble also forecast (all 23 levels): per (model, season, horizon or 'all'),
    tasks, WIS, the hub models' WIS on the same tasks, and how many fell inside the 95% and the
    50% intervals."""
    truth = {(d, loc): float(v) for d, loc, v in conn.execute(
        f"SELECT date, location, value FROM {schema}.admissions WHERE value IS NOT NULL").fetchall()}
    history = {(d, loc): float(v) for d, loc, v in conn.execute(
        f"SELECT date, location, value FROM {schema}.admissions_history WHERE value IS NOT NULL").fetchall()}
    hub: dict[str, dict] = defaultdict(lambda: defaultdict(dict))
    for model, ref, h, loc, level, value in conn.execute(
            f"SELECT model_id, reference_date, horizon, location, output_type_id, value FROM {schema}.reference_forecasts"):
        hub[model][(ref, loc, h)][round(level, 3)] = value
    out = {}
    for name, fc in models.items():
        s: dict = defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0, 0])
        for key, q in fc.items():
            ref, loc, h = key
            b, e = hub["FluSight-baseline"].get(key), hub["FluSight-ensemble"].get(key)
            target = (ref + dt.timedelta(days=7 * h), loc)
            final = history if season_of(ref) in HISTORY_SEASONS else truth
            if not b or not e or target not in final or min(len(b), len(e)) < 23 or any(l not in q for l in LEVELS):
                continue
            y = final[target]
            for k in ((season_of(ref), h), (season_of(ref), "all")):
                t = s[k]
                t[0] += 1
                t[1] += wis(q, y)
                t[2] += wis(b, y)
                t[3] += wis(e, y)
                t[4] += q[0.025] <= y <= q[0.975]
                t[5] += q[0.25] <= y <= q[0.75]
        out[name] = dict(s)
    return out
