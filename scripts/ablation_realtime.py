#!/usr/bin/env python3
"""What each part of the forecast contributes, through the product itself: the shipped
configuration (with the demo's pooled.train_from), then the same with one part taken away at a
time, each replayed by `enkf.backtest` over every season with the data as published, and scored
on the hub's tasks (scripts/tune_realtime.py's machinery; its scores.csv per candidate, season
and model).

These rows compare settings on the seasons the settings were looked at with: they say what a
part is worth, not how well the product forecasts a season it was not tuned on (that is
tune_realtime.py's leave-one-season-out figure).

usage: scripts/ablation_realtime.py [--out DIR] [--seasons ...] [--members N] [--quick]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tune_realtime  # noqa: E402

FULL = tune_realtime.merge(tune_realtime.BASE, {"combination": {"components": ["enkf", "pooled"]}})
STEPS = [
    ("full (shipped)", {}),
    ("no nowcast", {"nowcast": {"lags": 0}}),
    ("no seasonal window (pooled.window_weeks 26)", {"pooled": {"window_weeks": 26}}),
    ("no population weights", {"pooled": {"population_weights": False}}),
    ("without the pooled model (twin + trend, as in 0.2.0)", {"pooled": {"enabled": False},
                                                              "combination": {"components": ["enkf", "trend"]}}),
]


def main() -> int:
    argv = sys.argv[1:]
    grid = [tune_realtime.merge(FULL, change) for _, change in STEPS]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(grid, f)
    if "--out" not in argv:
        argv += ["--out", "/tmp/pg_enkf-ablation"]
    print("ablation steps: " + "; ".join(f"{k}: {name}" for k, (name, _) in enumerate(STEPS)))
    sys.argv = [sys.argv[0], "--grid", f.name] + argv
    return tune_realtime.main()


if __name__ == "__main__":
    sys.exit(main())
