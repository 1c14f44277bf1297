"""The SQL examples of the documentation run, and show what they return: every ```sql block of
docs/*.md and README.md, in order, in a fresh database per file. A block followed by an
```output block (psql's aligned format: a header, a rule, the rows, optionally "(n rows)") must
return exactly those rows from its last statement, compared cell by cell as PostgreSQL prints
them. Fragments that need objects a reader must supply are marked ```sql-fragment and are not
run."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted(ROOT.glob("docs/*.md")) + [ROOT / "README.md"]
BLOCK = re.compile(r"^```sql\n(.*?)^```\n(?:\s*^```output\n(.*?)^```)?", re.S | re.M)
# Docs whose examples must show their results.
WITH_OUTPUT = {"api.md": 2, "twin.md": 2, "backtest.md": 1}


def blocks(path: Path) -> list[tuple[str, str | None]]:
    return [(sql, out or None) for sql, out in BLOCK.findall(path.read_text())]


def statements(sql: str) -> list[str]:
    return [s for s in sql.split(";\n") if s.strip() and not s.strip().startswith("--")]


def table_of(text: str) -> list[list[str]]:
    """The header and rows of a psql-style aligned table, cells stripped."""
    rows = []
    for line in text.splitlines():
        if not line.strip() or re.fullmatch(r"-+(\+-+)*", line.strip()) or re.fullmatch(r"\(\d+ rows?\)", line.strip()):
            continue
        rows.append([c.strip() for c in line.split("|")])
    return rows


def result_table(cur: psycopg.Cursor) -> list[list[str]]:
    """The last statement's result as psql prints it: PostgreSQL's text output of each value."""
    res = cur.pgresult
    header = [d.name for d in cur.description]
    rows = [
        [(v.decode() if (v := res.get_value(r, c)) is not None else "") for c in range(res.nfields)]
        for r in range(res.ntuples)
    ]
    return [header] + rows


def test_docs_have_runnable_examples():
    assert len(blocks(ROOT / "docs" / "api.md")) >= 3
    assert len(blocks(ROOT / "docs" / "hipaa.md")) >= 2
    for name, least in WITH_OUTPUT.items():
        shown = [b for b in blocks(ROOT / "docs" / name) if b[1] is not None]
        assert len(shown) >= least, f"docs/{name} shows the output of {len(shown)} examples, expected {least}"


def test_output_tables_are_compared_cell_by_cell():
    shown = " a | b\n---+----\n 1 | x\n   | y z\n(2 rows)\n"
    assert table_of(shown) == [["a", "b"], ["1", "x"], ["", "y z"]]


@pytest.mark.parametrize("path", [p for p in DOCS if blocks(p)], ids=lambda p: p.name)
def test_sql_examples_run(path, conn):
    for sql, output in blocks(path):
        cur = None
        for statement in statements(sql):
            try:
                cur = conn.execute(statement, binary=False)
            except psycopg.Error as e:
                raise AssertionError(f"{path.name}: {statement!r} failed: {e}") from e
        if output is not None:
            assert cur is not None and cur.description is not None, f"{path.name}: an output block follows a block whose last statement returns no rows"
            assert result_table(cur) == table_of(output), f"{path.name}: {statements(sql)[-1]!r} returned\n{result_table(cur)}\nnot\n{output}"
