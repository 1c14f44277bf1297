"""SQLsmith as a benchmark: 100,000 random queries (by default) over pg_enkf's objects as an
analyst and as an operator, each in a throwaway cluster. Prints, per role, the queries, the time,
crashes of the server and internal errors (XX000) of statements touching pg_enkf (target: 0 and
0), and the SQLSTATEs of the other errors. Figures go to docs/benchmarks.md.

    .venv/bin/python bench/sqlsmith.py [--queries N] [--roles analyst,operator] [--seed S] [--smoke]

--smoke is the test command's run: 300 queries per role (unless --queries says otherwise), the
same checks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "tests")]

from sql.sqlsmith_harness import run  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int)
    ap.add_argument("--roles", default="analyst,operator")
    ap.add_argument("--seed", type=int, default=20261202)
    ap.add_argument("--smoke", action="store_true", help="300 queries per role")
    args = ap.parse_args()
    queries = args.queries or (300 if args.smoke else 100_000)
    bad = 0
    for kind in args.roles.split(","):
        out = run(queries, kind, args.seed)
        top = ", ".join(f"{s} {n}" for s, n in sorted(out.errors_by_state.items(), key=lambda x: -x[1])[:8])
        print(f"{kind:9s} queries {out.queries:>7d}  {out.seconds:7.0f} s  crashes {int(out.crashed)}  "
              f"internal errors touching enkf {len(out.internal)}  sqlsmith exit {out.returncode}"
              f"{'' if out.reached_enkf else '  NO STATEMENT TOUCHED enkf.*'}")
        print(f"          errors by SQLSTATE: {top}")
        for line, statement in out.internal[:5]:
            print(f"          {line}\n            {statement}")
        if out.returncode != 0:
            print(f"          sqlsmith's output ends: {out.output_tail[-500:]}")
        bad += out.crashed or bool(out.internal) or out.returncode != 0 or not out.reached_enkf
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
