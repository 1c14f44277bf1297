#!/usr/bin/env bash
# Runs the tests of pg_enkf, every layer by default, or the layers named:
#   lint      cargo fmt --check, clippy (warnings are errors), pyflakes over the Python
#   core      enkf-core: unit, property and twin-experiment tests (release: they need speed)
#   sidecar   enkf-sidecar's Rust tests
#   pgrx      cargo pgrx test: the #[pg_test] tests inside PostgreSQL
#   sql twin security ops docs jdbc e2e
#             the pytest folders (tests/<name>; e2e is tests/sidecar, the sidecar against a
#             cluster and a local Secrets Manager), against throwaway PostgreSQL 15 clusters,
#             on plain tables and on TimescaleDB when it is installed
#   bench     every benchmark in bench/ in its smoke mode (--smoke: tiny sizes, checks that each
#             figure was computed, no timing targets), and enkf-core's criterion benches run once
#             each (--test)
# e.g. scripts/test.sh core twin. Installs what it needs first (scripts/setup.sh), and the release
# build of pg_enkf into PostgreSQL before the pytest and bench layers (PG_ENKF_USE_INSTALLED=1:
# test the pg_enkf already installed instead).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/pg.env

say() { printf '\033[1;34m==> %s\033[0m\n' "$*"; }
RUST_LAYERS=(lint core sidecar pgrx)
PYTEST_LAYERS=(sql twin security ops docs jdbc e2e)
ALL=("${RUST_LAYERS[@]}" "${PYTEST_LAYERS[@]}" bench)
layers=("$@")
[ "${#layers[@]}" -eq 0 ] && layers=("${ALL[@]}")
for l in "${layers[@]}"; do
    [[ " ${ALL[*]} " == *" $l "* ]] || { echo "unknown layer \"$l\"; layers: ${ALL[*]}" >&2; exit 2; }
done
wants() { [[ " ${layers[*]} " == *" $1 "* ]]; }
started=$(date +%s)

if wants lint; then
    say "cargo fmt --check"
    cargo fmt --all --check
    say "cargo clippy (all targets, warnings are errors)"
    cargo clippy --workspace --all-targets --release --quiet -- -D warnings
    say "pyflakes (tests, scripts, demo, bench)"
    .venv/bin/python -m pyflakes tests scripts demo bench
fi

if wants core; then
    say "enkf-core: unit, property and twin-experiment tests"
    cargo test --release -p enkf-core
fi

if wants sidecar; then
    say "enkf-sidecar tests"
    cargo test --release -p enkf-sidecar
fi

if wants pgrx; then
    say "cargo pgrx test pg15 (tests inside PostgreSQL)"
    pgdata="$PWD/target/pgrx-test-pgdata"
    rm -rf "$pgdata"
    if [ "$(id -u)" -eq 0 ]; then
        mkdir -p "$pgdata" && chown postgres "$pgdata"
        (cd extension && cargo pgrx test pg15 --release --runas postgres --pgdata "$pgdata")
    else
        (cd extension && cargo pgrx test pg15 --release)
    fi
fi

folders=()
for l in "${PYTEST_LAYERS[@]}"; do
    if wants "$l"; then
        [ "$l" = e2e ] && folders+=(tests/sidecar) || folders+=("tests/$l")
    fi
done
if [ "${#folders[@]}" -gt 0 ] || wants bench; then
    if [ -n "${PG_ENKF_USE_INSTALLED:-}" ]; then
        say "PG_ENKF_USE_INSTALLED is set: testing the pg_enkf already installed in PostgreSQL $PG_MAJOR"
    else
        say "installing the release build of pg_enkf into PostgreSQL $PG_MAJOR"
        # cargo pgrx test installs a build with its test functions: replace it.
        if [ -w "$($PG_CONFIG --pkglibdir)" ]; then
            (cd extension && cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null)
        else
            (cd extension && cargo pgrx install --release --sudo --pg-config "$PG_CONFIG" >/dev/null)
        fi
    fi
fi

if [ "${#folders[@]}" -gt 0 ]; then
    if wants ops; then
        say "cargo pgrx package, and the previous release from its commit (upgrade and package tests)"
        # A clean output directory: pgrx leaves earlier versions' install scripts in it.
        rm -rf "target/release/pg_enkf-pg$PG_MAJOR"
        (cd extension && cargo pgrx package --pg-config "$PG_CONFIG" >/dev/null)
        .venv/bin/python tests/ops/pgops.py build-previous
    fi
    timescaledb=$(.venv/bin/python -c 'import sys; sys.path.insert(0, "scripts"); import pgcluster; print(pgcluster.timescaledb_version() or "")')
    if [ -n "$timescaledb" ]; then
        say "pytest ${folders[*]}: on plain tables and on TimescaleDB $timescaledb"
    else
        say "pytest ${folders[*]}: on plain tables only"
        printf '\033[1;33m%s\033[0m\n' "TimescaleDB is not installed: its runs are skipped. To run them, install it (as root: ../shared/tools/install-timescaledb.sh, or the timescaledb-2-postgresql-15 package) and run this again."
    fi
    (cd tests && ../.venv/bin/python -m pytest -q "${folders[@]#tests/}")
fi

if wants bench; then
    # Every script of bench/ but the libraries they import, each in a throwaway cluster of its
    # own, in seconds (a new benchmark without --smoke fails here); twin_breakdown with --explain
    # so that its server-log path runs too.
    for b in bench/*.py; do
        grep -q '^if __name__ == "__main__":' "$b" || continue
        flags=(--smoke)
        [ "$b" = bench/twin_breakdown.py ] && flags+=(--explain)
        say "$b ${flags[*]}"
        t=$(date +%s)
        .venv/bin/python "$b" "${flags[@]}"
        echo "($(( $(date +%s) - t )) s)"
    done
    say "enkf-core's criterion benches, each once (--test: no timing)"
    cargo bench --quiet -p enkf-core --bench '*' -- --test
fi

say "layers ${layers[*]} passed in $(( $(date +%s) - started )) s"
