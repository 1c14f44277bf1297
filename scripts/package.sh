#!/usr/bin/env bash
# Builds the Debian packages of pg_enkf with dpkg-deb, into target/debian/:
#   postgresql-15-pg-enkf_<version>_<arch>.deb  the extension, from `cargo pgrx package`
#                                               (library, control file, install and upgrade scripts)
#   enkf-sidecar_<version>_<arch>.deb           /usr/bin/enkf-sidecar, its systemd unit (not
#                                               enabled) and a sample configuration (a conffile)
# Depends are computed with dpkg-shlibdeps from the binaries' shared libraries.
# Usage: scripts/package.sh [--no-build]   --no-build packs the existing build outputs
#        (target/release/pg_enkf-pg15 and target/release/enkf-sidecar) without running cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/pg.env
MAINTAINER=${DEB_MAINTAINER:-"pg_enkf developers <pg-enkf@localhost>"}
build=1
[ "${1:-}" = "--no-build" ] && build=0

say() { printf '\033[1;34m==> %s\033[0m\n' "$*"; }

# The workspace version (Cargo.toml [workspace.package]) is the extension's default_version.
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
ARCH=$(dpkg --print-architecture)
OUT=target/debian
PKG_DIR=target/release/pg_enkf-pg$PG_MAJOR
SIDECAR_BIN=target/release/enkf-sidecar

if [ "$build" = 1 ]; then
    say "cargo pgrx package (release)"
    (cd extension && cargo pgrx package --pg-config "$PG_CONFIG" >/dev/null)
    say "cargo build --release -p enkf-sidecar"
    cargo build --release --quiet -p enkf-sidecar
fi
[ -f "$PKG_DIR/usr/share/postgresql/$PG_MAJOR/extension/pg_enkf--$VERSION.sql" ] ||
    { echo "no pg_enkf $VERSION package in $PKG_DIR: run without --no-build" >&2; exit 1; }
[ -x "$SIDECAR_BIN" ] || { echo "no $SIDECAR_BIN: run without --no-build" >&2; exit 1; }

# "shlibs:Depends=libc6 (>= 2.34), ..." for the given binaries. dpkg-shlibdeps wants a
# debian/control; a minimal one in a scratch directory is enough. The extension's library
# resolves PostgreSQL's own symbols from the server at load time: those are not libraries.
shlibdeps() {
    local scratch
    scratch=$(mktemp -d)
    mkdir "$scratch/debian"
    printf 'Source: pg-enkf\n\nPackage: pg-enkf\nArchitecture: any\n' > "$scratch/debian/control"
    local abs=()
    for f in "$@"; do abs+=("$(realpath "$f")"); done
    (cd "$scratch" && dpkg-shlibdeps -O --warnings=0 "${abs[@]}") | sed -n 's/^shlibs:Depends=//p'
    rm -rf "$scratch"
}

# Writes DEBIAN/md5sums and DEBIAN/control (fields from the arguments) and builds the .deb.
finish() {
    local root=$1 name=$2 depends=$3 description=$4
    (cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
    cat > "$root/DEBIAN/control" <<EOF
Package: $name
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: $depends
Section: database
Priority: optional
Homepage: https://github.com/pg-enkf/pg_enkf
Description: $description
EOF
    dpkg-deb --root-owner-group --build "$root" "$OUT/${name}_${VERSION}_${ARCH}.deb" >/dev/null
    say "built $OUT/${name}_${VERSION}_${ARCH}.deb"
}

mkdir -p "$OUT"

# --- postgresql-15-pg-enkf --------------------------------------------------------------------
name=postgresql-$PG_MAJOR-pg-enkf
root=$OUT/$name
rm -rf "$root"
mkdir -p "$root/DEBIAN" "$root/usr/share/doc/$name"
# Only this version's files: the pgrx output directory keeps install scripts of earlier
# versions, which must not ship (CREATE EXTENSION ... VERSION of an old script would run
# against this library).
extdir=usr/share/postgresql/$PG_MAJOR/extension
libdir=usr/lib/postgresql/$PG_MAJOR/lib
mkdir -p "$root/$extdir" "$root/$libdir"
cp "$PKG_DIR/$libdir/pg_enkf.so" "$root/$libdir/"
cp "$PKG_DIR/$extdir/pg_enkf.control" "$PKG_DIR/$extdir/pg_enkf--$VERSION.sql" "$root/$extdir/"
# Every upgrade script of sql/, as pgrx installed it (through extension/sql).
for f in sql/pg_enkf--*--*.sql; do
    [ -e "$f" ] || continue
    cmp -s "$f" "$PKG_DIR/$extdir/$(basename "$f")" ||
        { echo "$f is missing from or differs in $PKG_DIR: rebuild it" >&2; exit 1; }
    cp "$f" "$root/$extdir/"
done
cp packaging/$name/README.Debian "$root/usr/share/doc/$name/"
cp docs/operations.md "$root/usr/share/doc/$name/" 2>/dev/null || true
chmod 0644 "$root/$extdir"/* && chmod 0755 "$root/$libdir/pg_enkf.so"
finish "$root" "$name" "postgresql-$PG_MAJOR, $(shlibdeps "$root/$libdir/pg_enkf.so")" \
"Ensemble Kalman filter epidemic forecasting inside PostgreSQL $PG_MAJOR
 pg_enkf runs ensemble Kalman filter data assimilation and ensemble forecasts of
 epidemics as SQL functions over the tables that hold surveillance data (an
 epidemic digital twin). This package holds the extension for PostgreSQL $PG_MAJOR:
 run CREATE EXTENSION pg_enkf in a database to use it."

# --- enkf-sidecar -----------------------------------------------------------------------------
name=enkf-sidecar
root=$OUT/$name
rm -rf "$root"
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/enkf-sidecar" "$root/usr/share/doc/$name"
install -m 0755 -s "$SIDECAR_BIN" "$root/usr/bin/enkf-sidecar"
# The sidecar crate's own unit and sample configuration.
unit=sidecar/enkf-sidecar.service
conf=sidecar/enkf-sidecar.example.toml
# The crate's unit expects a hand-installed /usr/local/bin binary; the package's is /usr/bin.
sed -e 's#/usr/local/bin/enkf-sidecar#/usr/bin/enkf-sidecar#g' \
    -e 's#file:///usr/share/doc/pg_enkf/sidecar.md#file:///usr/share/doc/enkf-sidecar/README.Debian#' \
    "$unit" > "$root/lib/systemd/system/enkf-sidecar.service"
chmod 0644 "$root/lib/systemd/system/enkf-sidecar.service"
# Readable by the service's group only (postinst sets it): the file names the secret and may
# point at a local credentials file.
install -m 0640 "$conf" "$root/etc/enkf-sidecar/enkf-sidecar.toml"
install -m 0644 packaging/enkf-sidecar/README.Debian "$root/usr/share/doc/$name/"
echo /etc/enkf-sidecar/enkf-sidecar.toml > "$root/DEBIAN/conffiles"
# A static system user named like the unit: with DynamicUser=yes systemd then uses it rather
# than a transient one, so the configuration can be readable by its group alone (systemd
# does not chown a ConfigurationDirectory). Reload units; never enable or start the service:
# the configuration needs editing first.
cat > "$root/DEBIAN/postinst" <<'EOS'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if ! getent passwd enkf-sidecar >/dev/null; then
        adduser --system --group --no-create-home --home /nonexistent --quiet enkf-sidecar
    fi
    chown root:enkf-sidecar /etc/enkf-sidecar /etc/enkf-sidecar/enkf-sidecar.toml
    chmod 0750 /etc/enkf-sidecar
    chmod 0640 /etc/enkf-sidecar/enkf-sidecar.toml
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
EOS
cat > "$root/DEBIAN/postrm" <<'EOS'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
EOS
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/postrm"
cat > "$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    systemctl stop enkf-sidecar.service >/dev/null 2>&1 || true
fi
EOF
chmod 0755 "$root/DEBIAN/prerm"
finish "$root" "$name" "adduser, $(shlibdeps "$root/usr/bin/enkf-sidecar")" \
"pg_enkf sidecar: database credential rotation and scheduled assimilation
 enkf-sidecar rotates the PostgreSQL credentials of pg_enkf's users held in AWS
 Secrets Manager and runs the twins' scheduled assimilations, with /healthz and
 Prometheus /metrics. Ships a hardened systemd unit, not enabled."
