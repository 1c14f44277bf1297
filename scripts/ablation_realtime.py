#!/usr/bin/env python3
"""What each change contributed, in the real-time backtest (vintages as of R - 7): one run of
`realtime_backtest` per step, its forecasts renamed `<step>:<model>` and scored together with
the hub's scorer (score-vs-hub.py), plus 50% / 95% coverage on the same tasks.

These runs use one configuration for both seasons, so they are in-sample with respect to the
choices made while looking at them; the out-of-sample figures are those of tune_realtime.py.

usage: scripts/ablation_realtime.py [--data DIR] [--out DIR]
Standard library only. Needs `cargo build --release -p enkf-core --examples` first.
"""
import argparse
import csv
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXAMPLE = os.path.join(ROOT, "target", "release", "examples", "realtime_backtest")
SCORED = ["2023-24", "2024-25"]

# The configuration of 0.2.0 (before this work), then each change on top of the previous one.
OLD = {
    "filter": {"update_susceptible": True},
    "forecast": {"growth_damping": 1.0},
    "dynamics": {"seasonal_amplitude": 0.15},
    "trend": {"window": 4, "damping": 0.8},
    "combination": {"components": ["enkf", "baseline", "trend"], "power": 2.0, "recalibrate": True},
}
STEPS = [
    ("A-old-defaults", OLD, ["enkf", "baseline"]),
    ("B-S-left-to-dynamics", {**OLD, "filter": {"update_susceptible": False}}, ["enkf"]),
    ("C-growth-damping", {**OLD, "filter": {"update_susceptible": False}, "forecast": {"growth_damping": 0.7}}, ["enkf"]),
    ("D0-forcing-0.3", {**OLD, "filter": {"update_susceptible": False}, "forecast": {"growth_damping": 0.7}, "dynamics": {"seasonal_amplitude": 0.3}}, ["enkf"]),
    ("D-shipped", {}, ["enkf", "trend", "combined"]),
    ("E-with-recalibration", {"combination": {"recalibrate": True}}, ["combined"]),
    ("F-with-baseline-component", {"combination": {"components": ["enkf", "trend", "baseline"]}}, ["combined"]),
    ("G-equal-weights", {"combination": {"power": 0.0}}, ["combined"]),
    ("H-backfill-1-week", {"backfill": {"lags": 1}}, ["enkf", "trend", "combined"]),
    ("I-no-seasonal-forcing", {"dynamics": {"seasonal_amplitude": 0.0}}, ["enkf", "combined"]),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "flusight"))
    ap.add_argument("--out", default="/tmp/pg_enkf-ablation")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    merged = {s: os.path.join(a.out, f"all-{s}.csv") for s in SCORED}
    writers = {}
    files = {}
    for s in SCORED:
        files[s] = open(merged[s], "w", newline="")
        writers[s] = csv.writer(files[s])
        writers[s].writerow(["model_id", "reference_date", "target", "horizon", "target_end_date", "location", "output_type", "output_type_id", "value"])
    coverage = []
    for name, cfg, models in STEPS:
        d = os.path.join(a.out, name)
        cmd = [EXAMPLE, "--data", a.data, "--out", d, "--config", json.dumps(cfg)]
        env = dict(os.environ, THREADS=os.environ.get("THREADS", "2"))
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, check=True)
        for line in res.stdout.splitlines():
            f = line.split()
            if f[0] == "SUMMARY" and f[1] in SCORED and f[2] in models:
                coverage.append((f[1], f"{name}:{f[2]}", f[3], f[11], f[13]))
        for s in SCORED:
            with open(os.path.join(d, f"forecasts-{s}.csv"), newline="") as f:
                for r in csv.DictReader(f):
                    if r["model_id"] in models:
                        r["model_id"] = f"{name}:{r['model_id']}"
                        writers[s].writerow(r.values())
        print(f"ran {name}", file=sys.stderr, flush=True)
    for f in files.values():
        f.close()
    print("coverage (same tasks as the scorer):")
    print(f"{'season':8} {'model':40} {'horizon':>7} {'cov50':>6} {'cov95':>6}")
    for s, m, h, c50, c95 in coverage:
        print(f"{s:8} {m:40} {h:>7} {float(c50):6.3f} {float(c95):6.3f}")
    sys.stdout.flush()
    scorer = os.path.join(a.data, "..", "..", "tools", "score-vs-hub.py")
    subprocess.run([sys.executable, scorer, *merged.values()], check=False)


if __name__ == "__main__":
    main()
