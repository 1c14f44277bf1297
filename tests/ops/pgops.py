"""Helpers of the operations tests: released versions, building a release from its commit,
package directories from `cargo pgrx package`, and private PostgreSQL installations.

Run as a script to build a release ahead of the tests (scripts/test.sh does, for the previous one):
    .venv/bin/python tests/ops/pgops.py build 0.1.0
    .venv/bin/python tests/ops/pgops.py build-previous
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import psycopg
import psycopg.sql

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from pgcluster import PG_CONFIG, PG_MAJOR  # noqa: E402

# Debian's layout: binaries and libraries under /usr/lib/postgresql/15, shared files under
# /usr/share/postgresql/15. `cargo pgrx package` mirrors these paths under its output dir.
PG_LIB_ROOT = Path(f"/usr/lib/postgresql/{PG_MAJOR}")
PG_SHARE_ROOT = Path(f"/usr/share/postgresql/{PG_MAJOR}")


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def current_version() -> str:
    with open(ROOT / "Cargo.toml", "rb") as f:
        return tomllib.load(f)["workspace"]["package"]["version"]


def releases() -> dict[str, str]:
    """Released version -> commit, from sql/releases.toml."""
    with open(ROOT / "sql" / "releases.toml", "rb") as f:
        data = tomllib.load(f)
    return {v: r["commit"] for v, r in data["releases"].items()}


def previous_release() -> str:
    """The newest release older than the working tree's version."""
    cur = _version_key(current_version())
    older = [v for v in releases() if _version_key(v) < cur]
    if not older:
        raise LookupError(f"no release older than {current_version()} in sql/releases.toml")
    return max(older, key=_version_key)


def release_package(version: str) -> Path:
    """`cargo pgrx package` output of a released version, built once from its commit in a git
    worktree under target/releases/<version> (its own target dir: the release's dependency
    versions and flags must not disturb the shared build cache). Cached: a finished package
    carries a stamp file and is never rebuilt."""
    commit = releases()[version]
    base = ROOT / "target" / "releases" / version
    pkg = base / "package"
    stamp = pkg / ".built-from"
    if stamp.exists() and stamp.read_text().strip() == commit:
        return pkg
    src = base / "src"
    if not (src / ".git").exists():
        base.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=True)
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(src), commit],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    if head != commit:
        subprocess.run(["git", "-C", str(src), "checkout", "--detach", "--force", commit], check=True)
    shutil.rmtree(pkg, ignore_errors=True)
    env = dict(os.environ, CARGO_TARGET_DIR=str(base / "target"))
    subprocess.run(
        ["cargo", "pgrx", "package", "--pg-config", PG_CONFIG, "--out-dir", str(pkg)],
        cwd=src / "extension",
        env=env,
        check=True,
    )
    stamp.write_text(commit + "\n")
    return pkg


def current_package() -> Path:
    """`cargo pgrx package` output of the working tree; scripts/test.sh builds it after
    `cargo pgrx install` (same build, so this costs no compilation)."""
    # PG_ENKF_PACKAGE points at another package directory (a CI artifact, say).
    pkg = Path(os.environ.get("PG_ENKF_PACKAGE", ROOT / "target" / "release" / f"pg_enkf-pg{PG_MAJOR}"))
    control = pkg / PG_SHARE_ROOT.relative_to("/") / "extension" / "pg_enkf.control"
    if not control.exists():
        raise FileNotFoundError(
            f"{pkg} has no package: run `cargo pgrx package --pg-config {PG_CONFIG}` in extension/ (scripts/test.sh does)"
        )
    return pkg


def package_files(pkg: Path) -> list[Path]:
    """Files of a package directory, relative to it (e.g. usr/lib/postgresql/15/lib/pg_enkf.so).
    Install scripts of other versions, which pgrx leaves in its output directory from earlier
    builds, are not part of the package."""
    control = (pkg / PG_SHARE_ROOT.relative_to("/") / "extension" / "pg_enkf.control").read_text()
    version = re.search(r"^default_version\s*=\s*'([^']+)'", control, re.M).group(1)
    files = []
    for p in pkg.rglob("*"):
        if not p.is_file() or p.name.startswith("."):
            continue
        m = re.fullmatch(r"pg_enkf--([^-]+)\.sql", p.name)
        if m and m.group(1) != version:
            continue
        files.append(p.relative_to(pkg))
    return sorted(files)


class PgInstall:
    """A private copy of the PostgreSQL 15 installation (binaries, libraries, shared files) in a
    temporary directory. PostgreSQL finds its share and lib directories relative to its own
    binary, so a copy keeps Debian's layout under a new root and runs as is. Tests install
    old and new extension packages into it, never into the machine's own directories, where
    other test runs on this machine would see them."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pg_enkf_pgroot_"))
        os.chmod(self.root, 0o755)  # the server runs as `postgres`
        for d in (PG_LIB_ROOT, PG_SHARE_ROOT):
            dest = self.root / d.relative_to("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(d, dest, symlinks=True)
        for p in [self.root, *self.root.rglob("*")]:
            if p.is_dir():
                os.chmod(p, 0o755)
        self.bin = self.root / PG_LIB_ROOT.relative_to("/") / "bin"
        out = subprocess.run([str(self.bin / "pg_config"), "--sharedir"], check=True, capture_output=True, text=True)
        assert Path(out.stdout.strip()) == self.root / PG_SHARE_ROOT.relative_to("/"), out.stdout

    @property
    def extension_dir(self) -> Path:
        return self.root / PG_SHARE_ROOT.relative_to("/") / "extension"

    @property
    def lib_dir(self) -> Path:
        return self.root / PG_LIB_ROOT.relative_to("/") / "lib"

    def install(self, pkg: Path) -> list[Path]:
        """Copies a `cargo pgrx package` output into this installation. Each file is written
        beside its destination and renamed over it: a running backend that has the old
        library mapped keeps its inode, as with `install` or dpkg."""
        done = []
        for rel in package_files(pkg):
            dest = self.root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".tmp")
            shutil.copy2(pkg / rel, tmp)
            os.chmod(tmp, 0o755 if dest.suffix == ".so" else 0o644)
            os.replace(tmp, dest)
            done.append(dest)
        return done

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# --- what an extension installed: a normalised description, for comparing two databases --------

# Every query returns (kind, name, detail) rows of plain text, without OIDs, so that two
# databases can be compared line by line. Objects: the extension's members (pg_depend 'e'),
# everything in the schemas it owns (indexes, constraints, policies and triggers are not
# members but belong to member tables), and the extension row itself (version, config-dump
# tables). A member outside those schemas is listed by name only; pg_enkf has none.
_DESCRIBE = {
    "extension": """
        SELECT 'extension', e.extname,
               format('version=%s relocatable=%s schema=%s config=%s conditions=%s',
                      e.extversion, e.extrelocatable, e.extnamespace::regnamespace,
                      (SELECT array_agg(c::regclass::text ORDER BY c::regclass::text) FROM unnest(e.extconfig) c),
                      e.extcondition)
        FROM pg_extension e WHERE e.extname = %(ext)s""",
    "members": """
        SELECT 'member', pg_describe_object(d.classid, d.objid, d.objsubid), ''
        FROM pg_depend d JOIN pg_extension e ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid
        WHERE d.deptype = 'e' AND e.extname = %(ext)s""",
    "schemas": """
        SELECT 'schema', n.nspname,
               format('owner=%s acl=%s comment=%s', n.nspowner::regrole, n.nspacl, obj_description(n.oid, 'pg_namespace'))
        FROM pg_namespace n WHERE n.nspname = ANY(%(schemas)s)""",
    "functions": """
        SELECT 'function', p.oid::regprocedure::text,
               format('%s owner=%s acl=%s comment=%s', pg_get_functiondef(p.oid), p.proowner::regrole, p.proacl,
                      obj_description(p.oid, 'pg_proc'))
        FROM pg_proc p WHERE p.pronamespace::regnamespace::text = ANY(%(schemas)s) AND p.prokind IN ('f', 'p', 'w')""",
    "aggregates": """
        SELECT 'aggregate', p.oid::regprocedure::text,
               format('trans=%s final=%s combine=%s type=%s init=%s parallel=%s acl=%s comment=%s',
                      a.aggtransfn, a.aggfinalfn, a.aggcombinefn, a.aggtranstype::regtype, a.agginitval,
                      p.proparallel, p.proacl, obj_description(p.oid, 'pg_proc'))
        FROM pg_proc p JOIN pg_aggregate a ON a.aggfnoid = p.oid
        WHERE p.pronamespace::regnamespace::text = ANY(%(schemas)s)""",
    "relations": """
        SELECT 'relation', c.oid::regclass::text,
               format('kind=%s persistence=%s owner=%s acl=%s options=%s rls=%s force_rls=%s comment=%s',
                      c.relkind, c.relpersistence, c.relowner::regrole, c.relacl, c.reloptions,
                      c.relrowsecurity, c.relforcerowsecurity, obj_description(c.oid, 'pg_class'))
        FROM pg_class c WHERE c.relnamespace::regnamespace::text = ANY(%(schemas)s)""",
    # Columns by their position among the live columns: an upgraded table has gaps where
    # columns were dropped, and a column added by ALTER TABLE comes last.
    "columns": """
        SELECT 'column', format('%s.%s', a.attrelid::regclass, a.attname),
               format('position=%s type=%s notnull=%s default=%s identity=%s generated=%s storage=%s collation=%s acl=%s comment=%s',
                      row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
                      format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid),
                      a.attidentity, a.attgenerated, a.attstorage,
                      CASE WHEN a.attcollation <> 0 THEN a.attcollation::regcollation::text END, a.attacl,
                      col_description(a.attrelid, a.attnum))
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
        WHERE c.relnamespace::regnamespace::text = ANY(%(schemas)s) AND a.attnum > 0 AND NOT a.attisdropped""",
    "constraints": """
        SELECT 'constraint', format('%s on %s', co.conname, co.conrelid::regclass),
               format('%s deferrable=%s deferred=%s validated=%s comment=%s', pg_get_constraintdef(co.oid),
                      co.condeferrable, co.condeferred, co.convalidated, obj_description(co.oid, 'pg_constraint'))
        FROM pg_constraint co WHERE co.connamespace::regnamespace::text = ANY(%(schemas)s)""",
    "indexes": """
        SELECT 'index', i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE c.relnamespace::regnamespace::text = ANY(%(schemas)s)""",
    "views": """
        SELECT 'view', c.oid::regclass::text, pg_get_viewdef(c.oid)
        FROM pg_class c WHERE c.relkind IN ('v', 'm') AND c.relnamespace::regnamespace::text = ANY(%(schemas)s)""",
    "sequences": """
        SELECT 'sequence', s.seqrelid::regclass::text,
               format('type=%s start=%s inc=%s min=%s max=%s cache=%s cycle=%s owned_by=%s',
                      s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
                      (SELECT format('%s.%s', d.refobjid::regclass, a.attname) FROM pg_depend d
                         JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                        WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                          AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
        FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
        WHERE c.relnamespace::regnamespace::text = ANY(%(schemas)s)""",
    "triggers": """
        SELECT 'trigger', format('%s on %s', t.tgname, t.tgrelid::regclass),
               format('%s enabled=%s', pg_get_triggerdef(t.oid), t.tgenabled)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE NOT t.tgisinternal AND c.relnamespace::regnamespace::text = ANY(%(schemas)s)""",
    "policies": """
        SELECT 'policy', format('%s on %s', p.polname, p.polrelid::regclass),
               format('cmd=%s permissive=%s roles=%s using=%s check=%s', p.polcmd, p.polpermissive,
                      (SELECT array_agg(CASE WHEN r = 0 THEN 'public' ELSE r::regrole::text END ORDER BY 1)
                         FROM unnest(p.polroles) r),
                      pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
        FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
        WHERE c.relnamespace::regnamespace::text = ANY(%(schemas)s)""",
    "types": """
        SELECT 'type', t.oid::regtype::text,
               format('type=%s input=%s output=%s len=%s base=%s notnull=%s default=%s labels=%s checks=%s acl=%s comment=%s',
                      t.typtype, t.typinput, t.typoutput, t.typlen, t.typbasetype::regtype, t.typnotnull, t.typdefault,
                      (SELECT array_agg(enumlabel ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = t.oid),
                      (SELECT array_agg(pg_get_constraintdef(oid) ORDER BY conname) FROM pg_constraint WHERE contypid = t.oid),
                      t.typacl, obj_description(t.oid, 'pg_type'))
        FROM pg_type t WHERE t.typnamespace::regnamespace::text = ANY(%(schemas)s)""",
    "event_triggers": """
        SELECT 'event trigger', e.evtname, format('%s %s %s %s', e.evtevent, e.evtfoid::regproc, e.evtenabled, e.evttags)
        FROM pg_event_trigger e JOIN pg_depend d ON d.classid = 'pg_event_trigger'::regclass AND d.objid = e.oid
        JOIN pg_extension x ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = x.oid
        WHERE x.extname = %(ext)s""",
    # Privileges the extension script granted on its objects (pg_dump restores these).
    "init_privs": """
        SELECT 'initial privileges', pg_describe_object(i.classoid, i.objoid, i.objsubid), format('%s %s', i.privtype, i.initprivs)
        FROM pg_init_privs i JOIN pg_depend d ON d.classid = i.classoid AND d.objid = i.objoid
        JOIN pg_extension x ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = x.oid AND d.deptype = 'e'
        WHERE x.extname = %(ext)s""",
}


def describe_extension(conn, ext: str = "pg_enkf") -> list[str]:
    """Sorted lines describing everything `ext` installed in the connected database."""
    schemas = [
        r[0]
        for r in conn.execute(
            """SELECT n.nspname FROM pg_namespace n JOIN pg_depend d ON d.classid = 'pg_namespace'::regclass AND d.objid = n.oid
                 JOIN pg_extension e ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid AND d.deptype = 'e'
                WHERE e.extname = %(ext)s""",
            {"ext": ext},
        ).fetchall()
    ]
    # Values go in as literals: the queries' format() strings hold %s, which a parameterised
    # psycopg query would take for placeholders.
    ext_lit = psycopg.sql.Literal(ext).as_string(conn)
    schemas_lit = psycopg.sql.Literal(schemas).as_string(conn) + "::text[]"
    lines = []
    for query in _DESCRIBE.values():
        query = query.replace("%(ext)s", ext_lit).replace("%(schemas)s", schemas_lit)
        for kind, name, detail in conn.execute(query).fetchall():
            lines.append(f"{kind} {name}: {detail}")
    return sorted(lines)

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "build":
        print(release_package(sys.argv[2]))
    elif sys.argv[1:] == ["build-previous"]:
        print(release_package(previous_release()))
    else:
        sys.exit("usage: pgops.py build VERSION | build-previous")
