"""The SQL examples of the documentation run: every ```sql block of docs/*.md and README.md, in
order, in a fresh database per file. Fragments that need objects a reader must supply are
marked ```sql-fragment and are not run."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted(ROOT.glob("docs/*.md")) + [ROOT / "README.md"]
BLOCK = re.compile(r"^```sql\n(.*?)^```", re.S | re.M)


def blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text())


def test_docs_have_runnable_examples():
    assert len(blocks(ROOT / "docs" / "api.md")) >= 3
    assert len(blocks(ROOT / "docs" / "hipaa.md")) >= 2


@pytest.mark.parametrize("path", [p for p in DOCS if blocks(p)], ids=lambda p: p.name)
def test_sql_examples_run(path, conn):
    for sql in blocks(path):
        for statement in [s for s in sql.split(";\n") if s.strip() and not s.strip().startswith("--")]:
            try:
                conn.execute(statement)
            except psycopg.Error as e:
                raise AssertionError(f"{path.name}: {statement!r} failed: {e}") from e
