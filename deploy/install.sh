#!/bin/sh
# Installs TradeBaas as a systemd service in one command (docs/OPERATIONS.md, "Install").
#
#   sudo deploy/install.sh                      # build (cargo build --release --locked), install, enable
#   sudo deploy/install.sh --binary ./tradebaas # take a prebuilt release binary instead
#   sudo deploy/install.sh --uninstall          # stop, disable, remove; keeps config, credentials, state
#
# Options: --prefix DIR (default /usr/local: binary in DIR/bin, docs in DIR/share/doc/tradebaas),
# --config FILE (source of /etc/tradebaas/config.toml, default config/production.example.toml),
# --binary FILE, --no-enable (install but do not enable or start), --uninstall.
# DESTDIR=/some/dir stages the files under that directory and never calls systemctl.
#
# Idempotent: a second run replaces the binary, the unit and the docs, and never overwrites an
# existing /etc/tradebaas/config.toml or /etc/tradebaas/credentials (an operator's edits stay).
# Exit codes: 0 done, 1 a step failed, 2 refused (bad usage, no systemd, not root, bad config).
set -eu

# The repository this script belongs to (deploy/..), without depending on dirname(1).
case "$0" in
*/*) here=${0%/*} ;;
*) here=. ;;
esac
repo=$(cd "$here/.." && pwd)

prefix=/usr/local
config=$repo/config/production.example.toml
binary=
enable=1
uninstall=0
destdir=${DESTDIR:-}

say() { printf 'install.sh: %s\n' "$*"; }
refuse() {
  printf 'install.sh: refused: %s\n' "$*" >&2
  exit 2
}
usage() {
  sed -n '2,15s/^# \{0,1\}//p' "$0"
}

while [ $# -gt 0 ]; do
  case "$1" in
  --prefix)
    [ $# -ge 2 ] || refuse "--prefix needs a directory"
    prefix=$2
    shift 2
    ;;
  --prefix=*)
    prefix=${1#--prefix=}
    shift
    ;;
  --config)
    [ $# -ge 2 ] || refuse "--config needs a file"
    config=$2
    shift 2
    ;;
  --config=*)
    config=${1#--config=}
    shift
    ;;
  --binary)
    [ $# -ge 2 ] || refuse "--binary needs a file"
    binary=$2
    shift 2
    ;;
  --binary=*)
    binary=${1#--binary=}
    shift
    ;;
  --no-enable)
    enable=0
    shift
    ;;
  --uninstall)
    uninstall=1
    shift
    ;;
  -h | --help)
    usage
    exit 0
    ;;
  *) refuse "unknown argument '$1' (see --help)" ;;
  esac
done

# The prefix ends up inside the unit file (ExecStart=, Documentation=): keep it to plain path
# characters so the sed rewrite below and systemd's own parsing stay unambiguous.
case "$prefix" in
/*) ;;
*) refuse "--prefix must be an absolute path, got '$prefix'" ;;
esac
case "$prefix" in
*[!A-Za-z0-9/._+-]*) refuse "--prefix may contain only letters, digits and / . _ + -, got '$prefix'" ;;
esac
# "/" becomes "" so that "$prefix/bin" is /bin.
prefix=${prefix%/}

# Without DESTDIR this installs into the live system and drives systemd: refuse clearly when
# systemd is not there (a container, a non-systemd init) instead of half-installing.
if [ -z "$destdir" ]; then
  missing=
  command -v systemctl >/dev/null 2>&1 || missing="the systemctl command (not in PATH)"
  if [ ! -d /run/systemd/system ]; then
    missing="${missing:+$missing and }/run/systemd/system (systemd is not the running init)"
  fi
  [ -z "$missing" ] || refuse "systemd is required: missing $missing. Use DESTDIR=DIR to stage the files without systemd."
  [ "$(id -u)" = 0 ] || refuse "installing into the system needs root (run with sudo), or set DESTDIR=DIR to stage"
fi

bin_path=$prefix/bin/tradebaas
doc_dir=$prefix/share/doc/tradebaas
bin_dst=$destdir$bin_path
doc_dst=$destdir$doc_dir
unit_dst=$destdir/etc/systemd/system/tradebaas.service
etc_dst=$destdir/etc/tradebaas

systemctl_if_live() {
  if [ -z "$destdir" ]; then
    systemctl "$@"
  fi
}

if [ "$uninstall" = 1 ]; then
  if [ -z "$destdir" ]; then
    # Not installed or already stopped is fine: uninstall is idempotent too.
    systemctl disable --now tradebaas.service 2>/dev/null || true
  fi
  rm -f "$unit_dst" "$bin_dst"
  for doc in README.md OPERATIONS.md ARCHITECTURE.md; do
    rm -f "$doc_dst/$doc"
  done
  rmdir "$doc_dst" 2>/dev/null || true
  systemctl_if_live daemon-reload
  say "removed $bin_path, /etc/systemd/system/tradebaas.service and $doc_dir"
  say "kept /etc/tradebaas (config.toml, credentials) and /var/lib/tradebaas (the state: store, backups, event log; with DynamicUser=yes it lives in /var/lib/private/tradebaas): delete them yourself only if this installation's state is no longer needed"
  exit 0
fi

[ -f "$config" ] || refuse "--config: no such file '$config'"
for doc in README.md docs/OPERATIONS.md docs/ARCHITECTURE.md deploy/tradebaas.service; do
  [ -f "$repo/$doc" ] || refuse "$repo/$doc is missing: run the script from a TradeBaas checkout"
done

if [ -z "$binary" ]; then
  command -v cargo >/dev/null 2>&1 || refuse "no --binary given and cargo is not in PATH to build one"
  say "building the release binary (cargo build --release --locked)"
  (cd "$repo" && cargo build --release --locked)
  binary=$repo/target/release/tradebaas
fi
[ -f "$binary" ] && [ -x "$binary" ] || refuse "--binary: '$binary' is not an executable file"

# The binary: replaced on every run (an upgrade); a running service keeps the old one until it
# is restarted, which is the operator's call (a restart runs start-up recovery).
updated=0
if ! cmp -s "$binary" "$bin_dst" 2>/dev/null; then
  install -D -m 0755 "$binary" "$bin_dst"
  updated=1
  say "installed $bin_path"
else
  chmod 0755 "$bin_dst"
  say "$bin_path is up to date"
fi

# The unit, pointing at this prefix's binary and docs.
mkdir -p "$destdir/etc/systemd/system"
tmp_unit=$unit_dst.tmp.$$
sed -e "s|^ExecStart=/usr/local/bin/tradebaas |ExecStart=$bin_path |" \
  -e "s|^Documentation=.*|Documentation=file://$doc_dir/OPERATIONS.md file://$doc_dir/README.md|" \
  "$repo/deploy/tradebaas.service" >"$tmp_unit"
grep -q "^ExecStart=$bin_path " "$tmp_unit" || {
  rm -f "$tmp_unit"
  refuse "deploy/tradebaas.service has no 'ExecStart=/usr/local/bin/tradebaas ' line to rewrite"
}
chmod 0644 "$tmp_unit"
mv -f "$tmp_unit" "$unit_dst"
say "installed /etc/systemd/system/tradebaas.service (ExecStart=$bin_path)"

# Configuration and credentials: created once, never overwritten.
install -d -m 0755 "$etc_dst"
if [ -e "$etc_dst/config.toml" ]; then
  say "kept the existing /etc/tradebaas/config.toml (not overwritten)"
else
  install -m 0644 "$config" "$etc_dst/config.toml"
  say "installed /etc/tradebaas/config.toml from $config: review it"
fi
if [ -e "$etc_dst/credentials" ]; then
  say "kept the existing /etc/tradebaas/credentials (not overwritten)"
else
  install -m 0600 /dev/null "$etc_dst/credentials"
  say "created an empty /etc/tradebaas/credentials (0600): add DERIBIT_CLIENT_ID=... and DERIBIT_CLIENT_SECRET=..."
fi

install -d -m 0755 "$doc_dst"
install -m 0644 "$repo/README.md" "$repo/docs/OPERATIONS.md" "$repo/docs/ARCHITECTURE.md" "$doc_dst"
say "installed the docs in $doc_dir"

# The daemon's own parser judges the configuration before systemd gets to start it.
if ! "$bin_dst" check-config --config "$etc_dst/config.toml" >/dev/null; then
  refuse "/etc/tradebaas/config.toml does not pass 'tradebaas check-config' (see above): fix it and run again; the service was not enabled"
fi
say "/etc/tradebaas/config.toml passes tradebaas check-config"

if [ -n "$destdir" ]; then
  say "staged under DESTDIR=$destdir: systemctl not called"
  exit 0
fi
systemctl daemon-reload
if [ "$enable" = 0 ]; then
  say "not enabled (--no-enable): start with 'systemctl enable --now tradebaas'"
  exit 0
fi
was_active=0
systemctl is-active --quiet tradebaas.service && was_active=1
systemctl enable --now tradebaas.service
if [ "$updated" = 1 ] && [ "$was_active" = 1 ]; then
  say "tradebaas was already running and still runs the previous binary: 'systemctl restart tradebaas' when convenient (a restart runs start-up recovery)"
fi
say "enabled and started: systemctl status tradebaas; curl -s http://127.0.0.1:3000/health"
