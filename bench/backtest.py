"""The real-time backtest as a benchmark: enkf.backtest over the bundled FluSight releases, the
four seasons 2021-22 .. 2024-25, 52 jurisdictions and the US, 300 members, in a throwaway
cluster. Prints the time of each season and the hub-comparable relative WIS of the combination,
the pooled model, the twin and the built-in baseline, so that a speed change that costs skill
shows at once (issue 22's target: a season in about 40 s on this 2-core machine).

    .venv/bin/python bench/backtest.py [--members 300] [--config '{...}']
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "demo")]

import psycopg  # noqa: E402
from flusight import SEASONS, hub_scores, load, stored  # noqa: E402
from pgcluster import Cluster  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=300)
    ap.add_argument("--config", default="{}")
    args = ap.parse_args()
    with Cluster() as c, psycopg.connect(c.dsn(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_enkf")
        load(conn)
        models: dict[str, dict] = {}
        total = 0.0
        for season, (first, last) in SEASONS.items():
            twin = "rt_" + season.replace("-", "_")
            t0 = time.monotonic()
            conn.execute(
                """SELECT count(*) FROM enkf.backtest(%s, 'flu.admissions_versions', 'flu.locations', %s, %s,
                                                       time_column => 'date', members => %s, config => %s::jsonb,
                                                       classification => 'public_aggregate')""",
                (twin, first, last, args.members, json.dumps(json.loads(args.config))))
            took = time.monotonic() - t0
            total += took
            weeks = (last - first).days // 7 + 1
            print(f"{season}: {weeks} reference dates x 53 locations x {args.members} members in {took:.1f} s")
            for model, fc in stored(conn, twin).items():
                models.setdefault(model, {}).update(fc)
        print(f"all seasons: {total:.1f} s")
        scores = hub_scores(conn, models)
        for model in ("combined", "pooled", "enkf", "baseline"):
            for (season, h), (n, w, b, e, cov, _) in sorted(scores[model].items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
                print(f"{model:9s} {season} horizon {str(h):>3}: {n:5d} tasks, WIS / FluSight-baseline {w / b:.3f}, "
                      f"/ FluSight-ensemble {w / e:.3f}, 95% coverage {cov / n:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
