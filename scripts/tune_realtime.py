#!/usr/bin/env python3
"""Leave-one-season-out choice of a twin's configuration, through the product itself.

Every candidate configuration of a grid is replayed by `enkf.backtest` (the product's own code
path: data as published a week before each reference date) over every season of the bundled
FluSight data, in an embedded PostgreSQL it starts, and scored on exactly the hub's tasks
(demo/flusight.py's scorer). For each season S, the candidate chosen is the one with the lowest
mean WIS of `combined` relative to FluSight-baseline on the *other* seasons, among those whose
95% intervals covered 92-97% there; the configuration shipped is the one best on all seasons.
Writes OUT/scores.csv (every candidate, season and model) and OUT/loso-configs.json (the form of
demo/loso-configs.json).

usage: scripts/tune_realtime.py [--out DIR] [--grid FILE] [--seasons 2021-22,...] [--members N]
                                [--quick]
--grid: a JSON list of configurations (default: the grid below). --quick: the first three
reference dates of each season, 30 members and two candidates (a smoke run of the procedure).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import shutil
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "demo"))

from flusight import SEASONS, hub_scores, load, stored  # noqa: E402
from pgcluster import Cluster  # noqa: E402

MODELS = ["combined", "pooled", "enkf", "trend"]
# What every candidate shares: the twin's settings chosen earlier (docs/backtest.md) and the
# pooled model's first training origin (influenza was hardly reported before 2021-22).
BASE = {"forecast": {"growth_damping": 0.7}, "dynamics": {"seasonal_amplitude": 0.3},
        "trend": {"window": 2, "damping": 0.5}, "pooled": {"train_from": "2021-08-07"}}


def default_grid() -> list[dict]:
    """The combination's components, and the pooled model's seasonal window."""
    grid = []
    for components in (["enkf", "trend", "pooled"], ["enkf", "pooled"], ["pooled"]):
        for window in (8, 12):
            grid.append(merge(BASE, {"combination": {"components": components},
                                     "pooled": {"window_weeks": window}}))
    return grid


def merge(a: dict, b: dict) -> dict:
    out = json.loads(json.dumps(a))
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def choose(scores: dict, candidates: range, seasons: list[str]) -> int | None:
    """The candidate with the lowest mean relative WIS of `combined` over `seasons`, among those
    covering 92-97% with their 95% intervals on average there."""
    best = None
    for k in candidates:
        rel = [scores[(k, s)]["combined"][0] for s in seasons]
        cov = [scores[(k, s)]["combined"][1] for s in seasons]
        if not 0.92 <= sum(cov) / len(cov) <= 0.97:
            continue
        mean = sum(rel) / len(rel)
        if best is None or mean < best[1]:
            best = (k, mean)
    return best[0] if best else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/pg_enkf-tune")
    ap.add_argument("--grid", default=None)
    ap.add_argument("--seasons", default=",".join(SEASONS))
    ap.add_argument("--members", type=int, default=300)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    grid = json.loads(Path(args.grid).read_text()) if args.grid else default_grid()
    seasons = args.seasons.split(",")
    members = args.members
    if args.quick:
        grid, members = grid[:2], 30
    cluster = Cluster(datadir=out / "pgdata")
    cluster.start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE flu_demo")
        with psycopg.connect(cluster.dsn("flu_demo"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_enkf")
            load(conn)
            scores = run_grid(conn, grid, seasons, members, args.quick)
    finally:
        cluster.stop()
    with open(out / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["candidate", "season", "model", "relative_wis", "coverage_95", "config"])
        for (k, season), models in sorted(scores.items()):
            for model, (rel, cov) in models.items():
                w.writerow([k, season, model, f"{rel:.4f}", f"{cov:.4f}", json.dumps(grid[k])])
    chosen = {}
    print("\nleave one season out: chosen on the other seasons, then scored on the season")
    for season in seasons:
        others = [s for s in seasons if s != season] or [season]
        k = choose(scores, range(len(grid)), others)
        if k is None:
            print(f"{season}: no candidate covered 92-97% on {others}")
            continue
        chosen[season] = grid[k]
        rel, cov = scores[(k, season)]["combined"]
        print(f"{season}: candidate {k}, combined {rel:.3f} x FluSight-baseline, 95% coverage {cov:.2f}: {json.dumps(grid[k])}")
    k = choose(scores, range(len(grid)), seasons)
    if k is not None:
        print(f"shipped (best on all seasons): candidate {k}: {json.dumps(grid[k])}")
        chosen["shipped"] = grid[k]
    (out / "loso-configs.json").write_text(json.dumps(chosen, indent=1) + "\n")
    print(f"written: {out / 'scores.csv'}, {out / 'loso-configs.json'}")
    return 0


def run_grid(conn, grid: list[dict], seasons: list[str], members: int, quick: bool) -> dict:
    """Every candidate over every season: {(candidate, season): {model: (relative WIS, 95% cov.)}}."""
    scores = {}
    for k, config in enumerate(grid):
        for season in seasons:
            first, last = SEASONS[season]
            if quick:
                last = min(last, first + dt.timedelta(days=14))
            twin = f"tune{k}_{season.replace('-', '_')}"
            t0 = time.monotonic()
            conn.execute(
                """SELECT count(*) FROM enkf.backtest(%s, 'flu.admissions_versions', 'flu.locations', %s, %s,
                                                     time_column => 'date', members => %s, config => %s::jsonb,
                                                     classification => 'public_aggregate')""",
                (twin, first, last, members, json.dumps(config)))
            fc = stored(conn, twin)
            s = hub_scores(conn, {m: fc[m] for m in MODELS if m in fc})
            scores[(k, season)] = {
                m: (v[(season, "all")][1] / v[(season, "all")][2], v[(season, "all")][4] / v[(season, "all")][0])
                for m, v in s.items() if (season, "all") in v
            }
            conn.execute("SELECT enkf.drop_twin(%s)", (twin,))
            line = " ".join(f"{m} {r:.3f}" for m, (r, _) in scores[(k, season)].items())
            print(f"[{k + 1}/{len(grid)}] {season}: {line} ({time.monotonic() - t0:.0f} s)", flush=True)
    return scores


if __name__ == "__main__":
    sys.exit(main())
