#!/usr/bin/env bash
# Idempotent setup of a fresh Debian 12 machine (as root): system packages and the .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(runc containerd docker-registry skopeo umoci busybox-static postgresql
              iproute2 procps psmisc util-linux ca-certificates openssl gcc libc6-dev)
PYTHON=${PYTHON:-python3}

# The benchmarks compare against podman (bench/cli): `make bench` (ARCA_SETUP_BENCH=1) adds it.
if [ "${ARCA_SETUP_BENCH:-0}" = 1 ]; then
  APT_PACKAGES+=(podman)
fi
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The distribution registry and PostgreSQL are started by the tests on loopback when needed;
# do not leave the packaged system services running.
systemctl disable --now docker-registry >/dev/null 2>&1 || true

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.arca-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi
# Byte-compile the sources (cheap when up to date): with PYTHONDONTWRITEBYTECODE set, an editable
# install would otherwise recompile every module on each arca-runtime call (containerd's hot path).
.venv/bin/python -m compileall -q src >/dev/null || true
# arca-runtime's front end (src/arca/host/runtime/frontend.c) replaces the pip console script:
# calls with nothing Arca-specific to do exec runc without starting Python, the others run
# `python -I -S` with the paths below compiled in (no site, no .pth processing). Rebuilt on
# every setup, installed by an atomic rename only when it changed.
py="$PWD/.venv/bin/python3"
site=$("$py" -I -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
case "$PWD$site" in *[\'\"\\]*) echo "setup: quotes in $PWD or $site" >&2; exit 1;; esac
# The code stamp (arca.host.runtime.fastcreate.code_stamp) lets the front end hand a TEE create
# to a sim daemon running the same sources only.
code_stamp=$(cd src && cat $(ls arca/host/runtime/*.py arca/host/simtee/*.py arca/host/runtime/frontend.c \
        | LC_ALL=C sort) | sha256sum | cut -d' ' -f1)
gcc -O2 -Wall -Wextra -Werror -DARCA_PYTHON="\"$py\"" -DARCA_SRC="\"$PWD/src\"" \
    -DARCA_SITE="\"$site\"" -DARCA_STAMP="\"$code_stamp\"" \
    -o .venv/bin/.arca-runtime.new src/arca/host/runtime/frontend.c
if cmp -s .venv/bin/.arca-runtime.new .venv/bin/arca-runtime; then
  rm -f .venv/bin/.arca-runtime.new
else
  mv -f .venv/bin/.arca-runtime.new .venv/bin/arca-runtime
fi
