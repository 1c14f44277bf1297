"""The demo: the real-time backtest of the epidemic twin on the bundled FluSight data, run inside
an embedded PostgreSQL 15 with pg_enkf, scored the way the CDC FluSight hub scores its models.

For every reference date R of four seasons (2021-22 and 2022-23 from the CDC's earlier FluSight
repository, 2023-24 and 2024-25 from the newer hub), enkf.backtest assimilates only the data as
published one week before R (the archived releases, with their revisions), forecasts horizons
0..3 with every model of the product (the twin, the pooled model, the trend model, their
combination, the built-in baseline), and keeps the forecasts. Each season is forecast with the
configuration chosen without looking at it (leave one season out, docs/backtest.md). The
forecasts are then scored by WIS on exactly the hub's tasks, beside the hub's own
FluSight-baseline and FluSight-ensemble, and a fan chart of the real-time forecasts is written.

    scripts/demo.sh [--timescaledb] [--seasons 2023-24,2024-25] [--configs FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fanchart import write_fan_chart  # noqa: E402
from flusight import SEASONS, hub_scores, load, stored  # noqa: E402
import hubfile  # noqa: E402
from pgcluster import TIMESCALEDB_INSTALLER, Cluster, preload, timescaledb_version  # noqa: E402

CHART_LOCATIONS = ["US", "06", "48", "36", "12"]  # US, California, Texas, New York, Florida
# The configuration each season is forecast with: chosen by the leave-one-season-out tuning
# (scripts/tune_realtime.py) on the other seasons only; docs/backtest.md has the grid and the
# choice. Every key not named here takes its default.
CONFIGS = json.loads((Path(__file__).resolve().parent / "loso-configs.json").read_text())
MODELS = [("combined", "pg_enkf's combination"), ("pooled", "pooled model alone"), ("enkf", "twin alone"),
          ("trend", "trend model alone"), ("baseline", "pg_enkf's baseline")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "demo-output"), help="directory for the cluster, the chart and the tables")
    ap.add_argument("--members", type=int, default=300)
    ap.add_argument("--port", type=int, default=0, help="port of the demo cluster (default: a free one)")
    ap.add_argument("--seasons", default=",".join(SEASONS), help="the seasons to replay, comma-separated (default: all four)")
    ap.add_argument("--configs", default=None,
                    help="a JSON file of each season's configuration (default: demo/loso-configs.json, the leave-one-season-out choice)")
    ap.add_argument("--timescaledb", action="store_true",
                    help="keep the counts in TimescaleDB hypertables (TimescaleDB must be installed)")
    args = ap.parse_args()
    seasons = {s: SEASONS[s] for s in args.seasons.split(",")}
    configs = json.loads(Path(args.configs).read_text()) if args.configs else CONFIGS
    if args.timescaledb and not timescaledb_version():
        print(f"--timescaledb: TimescaleDB is not installed in this PostgreSQL; install it (as root: {TIMESCALEDB_INSTALLER},"
              " or the timescaledb-2-postgresql-15 package) or run the demo without --timescaledb", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    datadir = out / "pgdata"
    if datadir.exists():
        Cluster(datadir=datadir, keep=True).stop()
        shutil.rmtree(out / "pgdata", ignore_errors=True)
        shutil.rmtree(out / "sock", ignore_errors=True)
    cluster = Cluster(datadir=datadir, port=args.port or None, keep=True,
                      conf=preload(None, "timescaledb") if args.timescaledb else None)
    cluster.start()
    print(f"PostgreSQL 15 started: data directory {datadir}, port {cluster.port}")
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE flu_demo")
    with psycopg.connect(cluster.dsn("flu_demo"), autocommit=True) as conn:
        if args.timescaledb:
            conn.execute("CREATE EXTENSION timescaledb")
        conn.execute("CREATE EXTENSION pg_enkf")
        load(conn, hypertables=args.timescaledb)
        n = conn.execute("SELECT count(*), count(DISTINCT as_of) FROM flu.admissions_versions").fetchone()
        print(f"loaded {n[0]} versions of weekly counts from {n[1]} releases ({'hypertable' if args.timescaledb else 'table'} flu.admissions_versions)")

        models: dict[str, dict] = {}
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        for season, (first, last) in seasons.items():
            twin = "realtime_" + season.replace("-", "_")
            print(f"\n{season}: enkf.backtest('{twin}', ...) from {first} to {last}, data as published a week "
                  f"before each reference date, configuration {json.dumps(configs[season])}")
            t0 = time.monotonic()
            cur = conn.cursor()
            seen = 0
            # The NOTICEs arrive as the function runs; shown as they come.
            for _ in cur.execute(
                    """SELECT * FROM enkf.backtest(%s, 'flu.admissions_versions', 'flu.locations', %s, %s,
                                                    time_column => 'date', members => %s, config => %s::jsonb,
                                                    classification => 'public_aggregate')""",
                    (twin, first, last, args.members, json.dumps(configs[season]))):
                pass
            for line in notices[seen:]:
                print("  " + line.replace("enkf.backtest: ", ""))
            seen = len(notices)
            notices.clear()
            print(f"  {season} done in {time.monotonic() - t0:.1f} s")
            for model, fc in stored(conn, twin).items():
                models.setdefault(model, {}).update(fc)

        scores = hub_scores(conn, {name: models[name] for name, _ in MODELS})
        rows = []
        print("\nWIS relative to the hub's FluSight-baseline and FluSight-ensemble, on exactly the hub's tasks")
        print("(real time, each season forecast with a configuration chosen without it; lower is better)")
        print(f"{'season':<9}{'model':<38}{'horizon':>8}{'tasks':>7}{'WIS':>9}{'/ FluSight-baseline':>21}"
              f"{'/ FluSight-ensemble':>21}{'50% cov.':>10}{'95% cov.':>10}")
        for season in seasons:
            for name, label in MODELS + [("FluSight-ensemble", None), ("FluSight-baseline", None)]:
                for h in [0, 1, 2, 3, "all"]:
                    ref = scores["combined"].get((season, h))
                    if name.startswith("FluSight"):
                        if ref is None:
                            continue
                        n, _, b, e, _, _ = ref
                        w = e if name == "FluSight-ensemble" else b
                        cov = cov50 = None
                    else:
                        s = scores[name].get((season, h))
                        if s is None:
                            continue
                        n, w, b, e, c, c50 = s
                        cov = c / n
                        cov50 = c50 / n
                    rows.append((season, label or name, h, n, w / n, w / b, w / e, cov50, cov))
                    if h == "all" or name == "combined":
                        covtxt = f"{cov50:>10.2f}{cov:>10.2f}" if cov is not None else f"{'':>20}"
                        print(f"{season:<9}{(label or name):<38}{str(h):>8}{n:>7}{w / n:>9.1f}{w / b:>21.3f}{w / e:>21.3f}{covtxt}")
            print()
        with open(out / "relative_wis.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["season", "model", "horizon", "tasks", "wis", "relative_to_flusight_baseline",
                        "relative_to_flusight_ensemble", "coverage_50", "coverage_95"])
            w.writerows(rows)
        with open(out / "hubverse-combined.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["model_id", "reference_date", "target", "horizon", "target_end_date", "location",
                        "output_type", "output_type_id", "value"])
            for r in conn.execute(
                    """SELECT 'pg_enkf-combined', reference_date, 'wk inc flu hosp', horizon, target_end_date, location,
                              'quantile', quantile, value FROM enkf.forecast_quantiles
                        WHERE model = 'combined' ORDER BY reference_date, location, horizon, quantile"""):
                w.writerow(r)
        print_target_scores(conn, out / "target_scores.csv", seasons)
        submission = write_submission(conn, out, seasons)
        chart = out / "fan_chart.svg"
        twins = ["realtime_" + s.replace("-", "_") for s in seasons]
        write_fan_chart(conn, twins, "combined", CHART_LOCATIONS, min(f for f, _ in seasons.values()),
                        max(l for _, l in seasons.values()), chart)
        print(f"fan chart:  {chart}")
        print(f"scores:     {out / 'relative_wis.csv'}, {out / 'target_scores.csv'}")
        print(f"forecasts:  {out / 'hubverse-combined.csv'} (hubverse format)")
        print(f"submission: {submission} (the last reference date's file for the hub, checked)")
    print("\nThe demo database is still running. Connect with:")
    print(f"    {cluster.psql_command('flu_demo')}")
    print("for example: SELECT * FROM enkf.hubverse_forecasts WHERE model_id = 'realtime_2024_25-combined' LIMIT 23;")
    print("Stop it with:")
    stop = f"pg_ctl -D {datadir} stop"
    print(f"    {'runuser -u postgres -- ' if cluster_is_root() else ''}/usr/lib/postgresql/15/bin/{stop}")
    return 0


# Every hub target of the twin, its horizons pooled: (label, target, output type, score).
TARGET_LINES = [
    ("wk inc flu hosp, WIS, h -1 (nowcast)", "wk inc flu hosp", "quantile", "wis"),
    ("samples over h -1..3, energy score", "wk inc flu hosp", "sample", "energy"),
    ("rate change h 0..3, RPS", "wk flu hosp rate change", "pmf", "rps"),
    ("rate change h 0..3, log score", "wk flu hosp rate change", "pmf", "log"),
    ("peak intensity, WIS", "peak inc flu hosp", "quantile", "wis"),
    ("peak week, RPS", "peak week inc flu hosp", "pmf", "rps"),
    ("peak week, log score", "peak week inc flu hosp", "pmf", "log"),
]


def print_target_scores(conn, path: Path, seasons) -> None:
    """Every hub target of the twin (its own trajectories) and of the combination (drawn from the
    distribution it submits), scored in SQL (enkf.score_targets) against the final counts,
    relative to its reference: the climatological pmf of past seasons for rate change (the hub
    publishes no baseline pmf), pg_enkf's baseline for the rest."""
    print("Every hub target (enkf.score_targets; real time; against the final counts): mean score, and ratio to the reference")
    print(f"{'season':<9}{'target, score':<40}{'tasks':>7}{'twin':>10}{'combined':>10}{'reference':>11}"
          f"{'twin/ref':>10}{'comb/ref':>10}")
    rows = []
    for season in seasons:
        twin = "realtime_" + season.replace("-", "_")
        got = {
            (model, t, o, sc): (n, m, ref, rm)
            for model, t, o, sc, n, m, ref, rm in conn.execute(
                """SELECT model, target, output_type, score, sum(tasks), sum(mean * tasks) / sum(tasks), min(reference),
                          sum(reference_mean * tasks) / sum(tasks)
                     FROM enkf.score_targets(%s) WHERE model IN ('enkf', 'combined') GROUP BY 1, 2, 3, 4""",
                (twin,),
            ).fetchall()
        }
        for label, target, output_type, score in TARGET_LINES:
            mine = got.get(("enkf", target, output_type, score))
            comb = got.get(("combined", target, output_type, score))
            if mine is None:
                continue
            n, m, ref, rm = mine
            cm = comb[1] if comb else float("nan")
            crm = comb[3] if comb else float("nan")
            ratio = m / rm if rm else float("nan")
            cratio = cm / crm if comb and crm else float("nan")
            rows.append((season, label, n, m, cm, ref, rm, ratio, cratio))
            print(f"{season:<9}{label:<40}{n:>7}{m:>10.3f}{cm:>10.3f}{rm:>11.3f}{ratio:>10.3f}{cratio:>10.3f}  vs {ref}")
        print()
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["season", "target_score", "tasks", "twin", "combined", "reference_model", "reference",
                    "twin_ratio", "combined_ratio"])
        w.writerows(rows)


def write_submission(conn, out: Path, seasons) -> Path:
    """The file a team would send the hub for the last reference date of the last season
    (enkf.hub_submission, as its CSV), checked against the hub's task definitions
    (data/flusight/hub-tasks.json) with the hub's rules; a file the hub would refuse stops the
    demo."""
    season = list(seasons)[-1]
    twin, reference = "realtime_" + season.replace("-", "_"), seasons[season][1]
    path = out / f"{reference}-pg_enkf-combined.csv"
    with open(path, "wb") as f, conn.cursor().copy(
            "COPY (SELECT * FROM enkf.hub_submission(%s, %s)) TO STDOUT WITH (FORMAT csv, HEADER)",
            (twin, reference)) as copy:
        for chunk in copy:
            f.write(chunk)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    problems = hubfile.problems(rows, hubfile.model_tasks(ROOT / "data" / "flusight" / "hub-tasks.json"))
    locations = len({r["location"] for r in rows})
    if problems:
        raise SystemExit(f"{path}: the hub would refuse it:\n  " + "\n  ".join(problems[:20]))
    print(f"\nSubmission for {reference}: {path.name}, {len(rows)} rows, {locations} locations, every target from"
          " the combination's distribution; valid against data/flusight/hub-tasks.json")
    return path


def cluster_is_root() -> bool:
    import os

    return os.geteuid() == 0


if __name__ == "__main__":
    sys.exit(main())
