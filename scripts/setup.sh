#!/usr/bin/env bash
# Idempotent setup of a fresh Debian 12 (bookworm) or 13 (trixie) machine (as root): system
# packages and the .venv (scripts/check-trixie.sh checks 13 in a chroot from any host).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(runc containerd docker-registry skopeo umoci busybox-static postgresql
              iproute2 procps psmisc util-linux ca-certificates openssl gcc libc6-dev
              passt   # passt: pasta, the private network of `arca run` containers (ADR 0026)
              python3-venv)  # Debian's python3 makes no venv without it (ensurepip)
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
# The vm backend (ADR 0015): QEMU 10 (bookworm's 7.2 crashed a 6.12 guest under TCG; trixie has
# 10.0 natively, bookworm gets it from backports), erofs + dm-verity tools for the rootfs image,
# zstd to unpack the kernel, and a stock Debian cloud kernel fetched with `apt-get download`
# into ARCA_VM_DATA (never installed as the host's kernel).
. /etc/os-release
VM_PACKAGES=(erofs-utils cryptsetup-bin zstd kmod python3 binutils)
VM_SUITE=$VERSION_CODENAME
# virtiofsd serves -v volumes to vm guests (ADR 0042): Debian 13 has it; for Debian 12 see below.
[ "$VERSION_CODENAME" = bookworm ] || VM_PACKAGES+=(virtiofsd)
if [ "$VERSION_CODENAME" = bookworm ]; then
  VM_SUITE=bookworm-backports
  if ! grep -rqs '^Suites:.*bookworm-backports\|^deb .* bookworm-backports' \
        /etc/apt/sources.list /etc/apt/sources.list.d/; then
    cat > /etc/apt/sources.list.d/arca-backports.sources <<'SRC'
# Added by Arca's scripts/setup.sh: QEMU 10 and the 6.12 cloud kernel for the vm backend.
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -qq
  fi
fi
vm_missing=()
for p in "${VM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || vm_missing+=("$p")
done
# (`|| true`: not installed yet is the fresh machine's case; with pipefail it would end setup.)
qemu_major=$( (dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true) \
             | sed 's/^[0-9]*://; s/\..*//')
if [ ${#vm_missing[@]} -gt 0 ] || [ "${qemu_major:-0}" -lt 10 ]; then
  echo "setup: installing QEMU from $VM_SUITE and ${vm_missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends -t "$VM_SUITE" qemu-system-x86 >/dev/null
  [ ${#vm_missing[@]} -eq 0 ] || \
    apt-get install -y -qq --no-install-recommends "${vm_missing[@]}" >/dev/null
fi

# The distribution registry and PostgreSQL are started by the tests on loopback when needed;
# do not leave the packaged system services running.
systemctl disable --now docker-registry >/dev/null 2>&1 || true

# A venv whose creation failed half-way (e.g. before python3-venv was there) has a python but
# no pip: made again.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  "$PYTHON" -m venv --clear .venv
fi
stamp=.venv/.arca-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -c constraints.txt -e '.[dev]'
  touch "$stamp"
fi
# The guest kernel for the vm backend: the suite's linux-image-cloud-amd64, unpacked once.
VM_DATA=${ARCA_VM_DATA:-/var/lib/arca-vm}
kpkg=$(apt-cache depends -t "$VM_SUITE" linux-image-cloud-amd64 2>/dev/null \
       | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
kver=$(apt-cache policy -t "$VM_SUITE" "$kpkg" 2>/dev/null | awk '/Candidate:/{print $2}')
if [ -z "$kpkg" ] || [ -z "$kver" ]; then
  echo "setup: no linux-image-cloud-amd64 in $VM_SUITE (vm backend unavailable)" >&2
elif ! grep -qs "\"$kpkg $kver\"" "$VM_DATA/kernel.json" || [ ! -f "$VM_DATA/vmlinuz" ]; then
  echo "setup: guest kernel $kpkg $kver -> $VM_DATA"
  kdir=$(mktemp -d)
  (cd "$kdir" && apt-get download -qq "$kpkg=$kver" 2>/dev/null)
  .venv/bin/python -m arca.host.backends.vm.assets install "$kdir"/*.deb
  rm -rf "$kdir"
fi
# virtiofsd on Debian 12 (ADR 0042): bookworm and its backports have none, and trixie's needs
# glibc 2.39. Its package and its libraries' (libc6, libseccomp2, libcap-ng0, libgcc-s1) come
# from trixie with `apt-get download` through a private apt state (the host's sources are not
# touched) into $VM_DATA/virtiofsd, where the VMM runs it with trixie's own loader.
VFS_DIR=$VM_DATA/virtiofsd
if [ "$VERSION_CODENAME" = bookworm ] && [ ! -x "$VFS_DIR/virtiofsd" ]; then
  echo "setup: virtiofsd (from trixie, with its libraries) -> $VFS_DIR"
  vtmp=$(mktemp -d)
  mkdir -p "$vtmp/lists/partial" "$vtmp/cache/archives/partial" "$vtmp/x"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
    > "$vtmp/sources.list"
  vopt=(-o "Dir::Etc::SourceList=$vtmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$vtmp/lists" -o "Dir::Cache=$vtmp/cache")
  if apt-get "${vopt[@]}" update -qq >/dev/null 2>&1 && (cd "$vtmp" && \
      apt-get "${vopt[@]}" download -qq virtiofsd libc6 libseccomp2 libcap-ng0 libgcc-s1 \
      >/dev/null 2>&1); then
    for deb in "$vtmp"/*.deb; do dpkg-deb -x "$deb" "$vtmp/x"; done
    rm -rf "$VFS_DIR.new" && mkdir -p "$VFS_DIR.new/lib"
    for lib in ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libgcc_s.so.1 libseccomp.so.2 \
               libcap-ng.so.0; do
      cp -L "$vtmp/x/usr/lib/x86_64-linux-gnu/$lib" "$VFS_DIR.new/lib/"
    done
    cp "$vtmp/x/usr/libexec/virtiofsd" "$VFS_DIR.new/virtiofsd"
    ls "$vtmp"/*.deb | xargs -n1 basename > "$VFS_DIR.new/packages"
    rm -rf "$VFS_DIR" && mv "$VFS_DIR.new" "$VFS_DIR"
  else
    echo "setup: cannot fetch virtiofsd from trixie; vm volumes unavailable" >&2
  fi
  rm -rf "$vtmp"
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
        $(find arca/host/backends -name '*.py') | LC_ALL=C sort) | sha256sum | cut -d' ' -f1)
gcc -O2 -Wall -Wextra -Werror -DARCA_PYTHON="\"$py\"" -DARCA_SRC="\"$PWD/src\"" \
    -DARCA_SITE="\"$site\"" -DARCA_STAMP="\"$code_stamp\"" \
    -o .venv/bin/.arca-runtime.new src/arca/host/runtime/frontend.c
if cmp -s .venv/bin/.arca-runtime.new .venv/bin/arca-runtime; then
  rm -f .venv/bin/.arca-runtime.new
else
  mv -f .venv/bin/.arca-runtime.new .venv/bin/arca-runtime
fi
# TEE firmware and published known-answer data for the tdx/snp tests (Debian packages, cached;
# the tests skip when it is absent, e.g. offline).
bash scripts/tee-fixtures.sh || echo "setup: TEE fixtures unavailable; tdx/snp known-answer tests will skip" >&2
