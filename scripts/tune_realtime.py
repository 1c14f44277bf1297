#!/usr/bin/env python3
"""Leave-one-season-out tuning of the twin and its combination on the real-time backtest.

Every candidate configuration of a small grid runs through the three seasons in time order
(2022-23 from the final counts, training only; 2023-24 and 2024-25 from the vintages as
published one week before each reference date), with the example `realtime_backtest`. For each
season S scored out of sample, the candidate with the lowest mean relative WIS of the combined
forecast on the *other* seasons is chosen; its forecasts of S are then written and scored with
the hub's scorer. The shipped defaults are the candidate that is best over all three seasons.

usage: scripts/tune_realtime.py [--data DIR] [--out DIR] [--model combined] [--quick]
Standard library only. Needs `cargo build --release -p enkf-core --examples` first.
"""
import argparse
import itertools
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXAMPLE = os.path.join(ROOT, "target", "release", "examples", "realtime_backtest")
SEASONS = ["2022-23", "2023-24", "2024-25"]
SCORED = ["2023-24", "2024-25"]


def grid(quick):
    """The candidates: a few knobs, each with a reason to be there (docs/backtest.md)."""
    knobs = {
        # The filter may deplete susceptibles to explain a turn, or leave S to the dynamics.
        "update_susceptible": [True, False],
        # Weekly random walk of transmission (log sd).
        "beta_noise": [0.05, 0.1],
        # Trend model: weeks in the slope fit and damping per week ahead.
        "trend": [(2, 0.5), (3, 0.5), (4, 0.8)],
        # Which components the combination averages.
        "components": [("enkf", "trend"), ("enkf", "trend", "baseline")],
        # Weight = (recent WIS)^-power; 0 = equal weights.
        "power": [0.0, 2.0],
    }
    if quick:
        knobs = {k: v[:1] if k != "update_susceptible" else v for k, v in knobs.items()}
    for values in itertools.product(*knobs.values()):
        k = dict(zip(knobs.keys(), values))
        yield {
            "filter": {"update_susceptible": k["update_susceptible"]},
            "process_noise": {"beta": k["beta_noise"]},
            "trend": {"window": k["trend"][0], "damping": k["trend"][1]},
            "combination": {"components": list(k["components"]), "power": k["power"]},
        }


def run(config, data, out=None):
    cmd = [EXAMPLE, "--data", data, "--seasons", ",".join(SEASONS), "--config", json.dumps(config)]
    if out:
        cmd += ["--out", out]
    env = dict(os.environ, THREADS=os.environ.get("THREADS", "2"))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, check=True)
    summary = {}
    for line in res.stdout.splitlines():
        f = line.split()
        if f[0] == "SUMMARY":
            # SUMMARY season model horizon rel X wis X n X cov50 X cov95 X
            summary[(f[1], f[2], f[3])] = {"rel": float(f[5]), "cov50": float(f[11]), "cov95": float(f[13])}
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "flusight"))
    ap.add_argument("--out", default="/tmp/pg_enkf-loso")
    ap.add_argument("--model", default="combined", help="the model whose WIS is minimised")
    ap.add_argument("--quick", action="store_true", help="a 2-candidate grid (smoke test)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    results = []
    cands = list(grid(a.quick))
    for i, cfg in enumerate(cands):
        s = run(cfg, a.data)
        rel = {se: s[(se, a.model, "all")]["rel"] for se in SEASONS}
        results.append((cfg, rel))
        print(f"[{i + 1}/{len(cands)}] " + " ".join(f"{se} {rel[se]:.3f}" for se in SEASONS) + f"  {json.dumps(cfg)}", flush=True)

    def best(train):
        return min(results, key=lambda r: sum(r[1][t] for t in train) / len(train))

    chosen = {}
    for held in SCORED:
        train = [s for s in SEASONS if s != held]
        cfg, rel = best(train)
        chosen[held] = {"config": cfg, "train": train, "train_rel": {t: rel[t] for t in train}}
        d = os.path.join(a.out, held)
        run(cfg, a.data, out=d)
        chosen[held]["forecasts"] = os.path.join(d, f"forecasts-{held}.csv")
    cfg, rel = best(SEASONS)
    chosen["shipped"] = {"config": cfg, "train": SEASONS, "train_rel": rel}
    with open(os.path.join(a.out, "loso.json"), "w") as f:
        json.dump({"model": a.model, "candidates": [{"config": c, "rel": r} for c, r in results], "chosen": chosen}, f, indent=1)
    for k, v in chosen.items():
        print(f"{k}: chosen on {','.join(v['train'])} " + json.dumps(v["config"]))
    files = [chosen[h]["forecasts"] for h in SCORED]
    print("score: python3 /work/shared/tools/score-vs-hub.py " + " ".join(files))
    subprocess.run([sys.executable, os.path.join(a.data, "..", "..", "tools", "score-vs-hub.py"), *files], check=False)


if __name__ == "__main__":
    main()
