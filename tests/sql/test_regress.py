"""Runs the pg_regress suite in tests/regress against the session's cluster: SQL files whose
output (results and error SQLSTATEs, messages and hints) must match the reviewed expected files."""

import subprocess
from pathlib import Path

from pgcluster import PG_BIN, pg_config

REGRESS = Path(__file__).resolve().parent.parent / "regress"
ROOT = REGRESS.parent.parent


def test_pg_regress(cluster, tmp_path):
    out = ROOT / "target" / "regress"
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            f"{pg_config('--pkglibdir')}/pgxs/src/test/regress/pg_regress",
            "--host=127.0.0.1",
            f"--port={cluster.port}",
            "--user=postgres",
            "--dbname=enkf_regress",
            f"--inputdir={REGRESS}",
            f"--outputdir={out}",
            f"--bindir={PG_BIN}",
            f"--schedule={REGRESS / 'schedule'}",
        ],
        capture_output=True,
        text=True,
    )
    diffs = out / "regression.diffs"
    detail = diffs.read_text() if diffs.exists() else ""
    assert proc.returncode == 0, proc.stdout + proc.stderr + detail
