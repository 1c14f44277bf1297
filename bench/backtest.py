"""The real-time backtest as a benchmark: enkf.backtest over the bundled FluSight releases, the
four seasons 2021-22 .. 2024-25, 52 jurisdictions and the US, 300 members, in a throwaway
cluster. Prints the time of each season and the hub-comparable relative WIS of the combination,
the pooled model, the twin and the built-in baseline, so that a speed change that costs skill
shows at once (issue 22's target: a season in about 40 s on this 2-core machine).

    .venv/bin/python bench/backtest.py [--members 300] [--config '{...}'] [--smoke]

--smoke is the test command's run: the first three reference dates of the first season, 20
members; it checks that every model was scored on the hub's tasks (finite WIS) and times
nothing worth reading.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
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
    ap.add_argument("--members", type=int)
    ap.add_argument("--config", default="{}")
    ap.add_argument("--smoke", action="store_true", help="the first season's first three reference dates, 20 members")
    args = ap.parse_args()
    members = args.members or (20 if args.smoke else 300)
    seasons = SEASONS
    if args.smoke:
        season, (first, _) = next(iter(SEASONS.items()))
        seasons = {season: (first, first + dt.timedelta(days=14))}
    with Cluster() as c, psycopg.connect(c.dsn(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_enkf")
        load(conn)
        models: dict[str, dict] = {}
        total = 0.0
        for season, (first, last) in seasons.items():
            twin = "rt_" + season.replace("-", "_")
            t0 = time.monotonic()
            rows = conn.execute(
                """SELECT count(*) FROM enkf.backtest(%s, 'flu.admissions_versions', 'flu.locations', %s, %s,
                                                       time_column => 'date', members => %s, config => %s::jsonb,
                                                       classification => 'public_aggregate')""",
                (twin, first, last, members, json.dumps(json.loads(args.config)))).fetchone()[0]
            took = time.monotonic() - t0
            total += took
            assert rows > 0, f"enkf.backtest returned no scores for {season}"
            weeks = (last - first).days // 7 + 1
            print(f"{season}: {weeks} reference dates x 53 locations x {members} members in {took:.1f} s")
            for model, fc in stored(conn, twin).items():
                models.setdefault(model, {}).update(fc)
        print(f"all seasons: {total:.1f} s")
        if args.smoke:
            # hub_scores reads every hub forecast (1.1 million rows, 5 s) and uses only those of
            # the dates replayed: keep those alone.
            conn.execute("DELETE FROM flu.reference_forecasts WHERE reference_date NOT BETWEEN %s AND %s",
                         next(iter(seasons.values())))
        scores = hub_scores(conn, models)
        for model in ("combined", "pooled", "enkf", "baseline"):
            assert scores.get(model), f"{model}: no forecast scored on the hub's tasks"
            for (season, h), (n, w, b, e, cov, _) in sorted(scores[model].items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
                assert n > 0 and all(math.isfinite(x) for x in (w, b, e)) and b > 0 and e > 0, (model, season, h, n, w, b, e)
                print(f"{model:9s} {season} horizon {str(h):>3}: {n:5d} tasks, WIS / FluSight-baseline {w / b:.3f}, "
                      f"/ FluSight-ensemble {w / e:.3f}, 95% coverage {cov / n:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
