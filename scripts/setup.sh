#!/usr/bin/env bash
# Idempotent setup of a fresh Debian 12 machine (as root): system packages and the .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(runc containerd docker-registry skopeo umoci busybox-static postgresql
              iproute2 procps psmisc util-linux ca-certificates openssl)
PYTHON=${PYTHON:-python3}

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
