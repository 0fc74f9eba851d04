#!/usr/bin/env bash
# Install Arca's container runtime on a Kubernetes node (as root), or remove it.
#
#   deploy/node/install.sh [--prefix /opt/arca] [--etc /etc] [--python python3] [--uninstall]
#
# What it does (every step is idempotent; a second run with unchanged sources changes nothing):
#   1. a copy of this checkout's sources in PREFIX/source, installed (editable, as `make setup`
#      does) into a virtualenv PREFIX/venv; dependencies from PyPI. The node keeps working if
#      the checkout goes away;
#   2. the runtime at a fixed path, PREFIX/bin/arca-runtime: the C front end of
#      src/arca/host/runtime/frontend.c compiled for that venv (plain calls exec runc without
#      starting Python), or the Python console script when no C compiler is present;
#      PREFIX/bin/arca-runtime-{sim,tdx,snp,sgx}: one wrapper per containerd handler, setting
#      the handler's default TEE (ARCA_TEE); PREFIX/bin/arca: the CLI;
#   3. ETC/arca/runtime.json (which runc to delegate to; default TEE "none"), kept if present;
#   4. the handlers of deploy/containerd/arca.toml merged into ETC/containerd/config.toml between
#      "# BEGIN arca" / "# END arca" (containerd 1.6 `imports` would replace the node's whole
#      CRI section, see that file), checked with `containerd config dump` when containerd is
#      installed; the previous file is restored if the check fails, else kept as
#      config.toml.arca-previous.
# It does not restart containerd (do it when convenient: systemctl restart containerd) and
# does not label the node (kubectl label node NODE arca.io/runtime=true).
#
# --prefix and --etc exist so that the script can be tested into a temporary directory; the
# handlers' BinaryName follow --prefix. --uninstall removes PREFIX (only if this script made
# it), runtime.json and the marked block.
set -euo pipefail

PREFIX=/opt/arca
ETC=/etc
PYTHON=python3
UNINSTALL=0
SRC=$(cd "$(dirname "$0")/../.." && pwd)
HANDLERS=(sim tdx snp sgx)

die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; PREFIX=$2; shift 2;;
    --prefix=*) PREFIX=${1#*=}; shift;;
    --etc) [ $# -ge 2 ] || die "--etc needs a directory"; ETC=$2; shift 2;;
    --etc=*) ETC=${1#*=}; shift;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PYTHON=$2; shift 2;;
    --python=*) PYTHON=${1#*=}; shift;;
    --uninstall) UNINSTALL=1; shift;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
    *) die "unknown option $1 (see --help)";;
  esac
done
case "$PREFIX$ETC" in *[\'\"\\\ ]*) die "no quotes, backslashes or spaces in --prefix/--etc";; esac
case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path, not $PREFIX";; esac
case "$ETC" in /*) ;; *) die "--etc must be an absolute path, not $ETC";; esac
PREFIX=${PREFIX%/}
ETC=${ETC%/}

CTRD_CONF=$ETC/containerd/config.toml
RUNTIME_JSON=$ETC/arca/runtime.json
MARK=$PREFIX/.arca-install
BEGIN="# BEGIN arca (deploy/node/install.sh; edit deploy/containerd/arca.toml instead)"
END="# END arca"

# The config without our block (prints the file unchanged when there is none).
strip_block() { awk -v b="# BEGIN arca" -v e="$END" \
  'index($0, b) == 1 {skip = 1; next} skip && $0 == e {skip = 0; next} !skip' "$1"; }

# Replace $CTRD_CONF by stdin atomically (same directory, then rename), keeping its mode.
replace_conf() {
  local tmp
  tmp=$(mktemp "$CTRD_CONF.XXXXXX")
  cat >"$tmp"
  chmod --reference="$CTRD_CONF" "$tmp" 2>/dev/null || chmod 0644 "$tmp"
  mv -f "$tmp" "$CTRD_CONF"
}

if [ "$UNINSTALL" = 1 ]; then
  if [ -f "$CTRD_CONF" ] && grep -q "^# BEGIN arca" "$CTRD_CONF"; then
    strip_block "$CTRD_CONF" | replace_conf
    say "removed the arca handlers from $CTRD_CONF (restart containerd to apply)"
  fi
  rm -f "$CTRD_CONF.arca-previous"
  rm -f "$RUNTIME_JSON"
  rmdir "$ETC/arca" 2>/dev/null || true
  if [ -d "$PREFIX" ]; then
    [ -f "$MARK" ] || die "$PREFIX was not made by this script (no $MARK): not removing it"
    rm -rf "$PREFIX"
    say "removed $PREFIX"
  fi
  exit 0
fi

# 0. Preconditions: the interpreter and the node's containerd config version.
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
  || die "$PYTHON is not Python >= 3.11 (use --python)"
[ -f "$SRC/pyproject.toml" ] && [ -d "$SRC/src/arca" ] || die "$SRC is not an Arca checkout"
if [ -f "$CTRD_CONF" ] && ! grep -Eq '^version *= *2' "$CTRD_CONF"; then
  die "$CTRD_CONF is not a version 2 containerd config: migrate it (containerd config migrate)"
fi
if [ -f "$CTRD_CONF" ] && strip_block "$CTRD_CONF" | grep -Eq 'runtimes\.("?)arca-'; then
  die "$CTRD_CONF already defines arca-* runtimes outside the install.sh block; remove them"
fi
RUNC=$(command -v runc || true)
[ -n "$RUNC" ] || die "runc is not installed (apt-get install runc)"

# 1. The venv, reinstalled only when the sources changed (digest of every source file).
stamp=$(cd "$SRC" && find pyproject.toml README.md src -type f ! -path '*/__pycache__/*' \
          ! -name '*.pyc' ! -path '*.egg-info/*' -print0 | LC_ALL=C sort -z \
        | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
mkdir -p "$PREFIX/bin"
[ -f "$MARK" ] || echo "made by deploy/node/install.sh" >"$MARK"
if [ ! -x "$PREFIX/venv/bin/python3" ]; then
  "$PYTHON" -m venv "$PREFIX/venv"
fi
if [ "$(cat "$PREFIX/venv/.arca-source" 2>/dev/null)" != "$stamp" ]; then
  # A private copy of the sources in PREFIX/source, installed editable into the venv: the
  # layout `make setup` uses (the C front end below is built against this source directory
  # and its code stamp), and the checkout may go away.
  rm -rf "$PREFIX/source.new"
  mkdir -p "$PREFIX/source.new"
  cp -r "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/src" "$PREFIX/source.new/"
  find "$PREFIX/source.new/src" \( -name __pycache__ -o -name '*.egg-info' \) -prune \
    -exec rm -rf {} +
  rm -rf "$PREFIX/source"
  mv "$PREFIX/source.new" "$PREFIX/source"
  "$PREFIX/venv/bin/python3" -m pip install -q --disable-pip-version-check \
    --no-warn-script-location -e "$PREFIX/source" || die "pip install failed"
  # Compiled once here: arca-runtime runs with PYTHONDONTWRITEBYTECODE-like settings.
  "$PREFIX/venv/bin/python3" -m compileall -q "$PREFIX/source/src" >/dev/null || true
  echo "$stamp" >"$PREFIX/venv/.arca-source"
  say "installed arca into $PREFIX/venv (sources in $PREFIX/source)"
else
  say "arca in $PREFIX/venv is up to date"
fi

# 2. The runtime front end, rebuilt when the compiler output would differ (same recipe as
#    scripts/setup.sh; the code stamp lets it hand creates to a sim daemon of the same code).
py=$PREFIX/venv/bin/python3
src=$PREFIX/source/src
site=$("$py" -I -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
case "$site" in *[\'\"\\]*) die "quotes in $site";; esac
if command -v cc >/dev/null; then
  code_stamp=$(cd "$src" && cat $(ls arca/host/runtime/*.py arca/host/simtee/*.py \
        arca/host/runtime/frontend.c | LC_ALL=C sort) | sha256sum | cut -d' ' -f1)
  cc -O2 -Wall -Wextra -DARCA_PYTHON="\"$py\"" -DARCA_SRC="\"$src\"" \
     -DARCA_SITE="\"$site\"" -DARCA_STAMP="\"$code_stamp\"" \
     -o "$PREFIX/bin/.arca-runtime.new" "$src/arca/host/runtime/frontend.c"
else
  say "warning: no C compiler: arca-runtime is the slower Python entry point"
  printf '#!/bin/sh\nexec %s "$@"\n' "$PREFIX/venv/bin/arca-runtime" >"$PREFIX/bin/.arca-runtime.new"
  chmod 0755 "$PREFIX/bin/.arca-runtime.new"
fi
if cmp -s "$PREFIX/bin/.arca-runtime.new" "$PREFIX/bin/arca-runtime"; then
  rm -f "$PREFIX/bin/.arca-runtime.new"
else
  mv -f "$PREFIX/bin/.arca-runtime.new" "$PREFIX/bin/arca-runtime"
fi
[ "$(readlink "$PREFIX/bin/arca" 2>/dev/null)" = "$PREFIX/venv/bin/arca" ] || ln -sfn "$PREFIX/venv/bin/arca" "$PREFIX/bin/arca"
for tee in "${HANDLERS[@]}"; do
  w=$PREFIX/bin/arca-runtime-$tee
  body=$(printf '#!/bin/sh\n# containerd handler arca-%s (deploy/node/install.sh): default TEE %s\nexport ARCA_TEE=%s ARCA_RUNTIME_CONFIG=%s\nexec %s "$@"\n' \
         "$tee" "$tee" "$tee" "$RUNTIME_JSON" "$PREFIX/bin/arca-runtime")
  if [ "$(cat "$w" 2>/dev/null)" != "$body" ]; then
    printf '%s\n' "$body" >"$w.new" && chmod 0755 "$w.new" && mv -f "$w.new" "$w"
  fi
done

# 3. runtime.json: an operator's edits are kept.
mkdir -p "$ETC/arca"
if [ ! -f "$RUNTIME_JSON" ]; then
  printf '{"runc": "%s", "default_tee": "none"}\n' "$RUNC" >"$RUNTIME_JSON"
  say "wrote $RUNTIME_JSON"
fi

# 4. containerd: our block, with BinaryName following --prefix, replaces the previous one.
mkdir -p "$ETC/containerd"
[ -f "$CTRD_CONF" ] || printf 'version = 2\n' >"$CTRD_CONF"
block=$(grep -v '^version *=' "$SRC/deploy/containerd/arca.toml" | sed "s#/opt/arca/#$PREFIX/#g")
if strip_block "$CTRD_CONF" | grep -Eq '^[[:space:]]*\[.*runtimes\.("?)runc("?)\]'; then
  # The node defines runc itself: drop our copy (a table may be defined only once).
  block=$(printf '%s\n' "$block" | awk '/runtimes\.runc\]/ {skip = 1} skip && /^$/ {skip = 0; next} !skip')
fi
new=$(strip_block "$CTRD_CONF"; printf '%s\n%s\n%s\n' "$BEGIN" "$block" "$END")
if [ "$new" != "$(cat "$CTRD_CONF")" ]; then
  cp -p "$CTRD_CONF" "$CTRD_CONF.arca-previous"
  printf '%s\n' "$new" | replace_conf
  if command -v containerd >/dev/null \
      && ! containerd --config "$CTRD_CONF" config dump >/dev/null 2>"$PREFIX/.dump-error"; then
    mv -f "$CTRD_CONF.arca-previous" "$CTRD_CONF"
    die "containerd rejects the merged config ($(tail -n1 "$PREFIX/.dump-error")); restored it"
  fi
  rm -f "$PREFIX/.dump-error"
  say "merged the arca handlers into $CTRD_CONF: restart containerd to apply"
else
  say "$CTRD_CONF is up to date"
fi
"$PREFIX/bin/arca-runtime" --version >/dev/null || die "$PREFIX/bin/arca-runtime does not run"
say "done: $PREFIX/bin/arca-runtime"
