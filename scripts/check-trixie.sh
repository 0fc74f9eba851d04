#!/usr/bin/env bash
# Check that scripts/setup.sh and the unit tests work on Debian 13 (trixie), from any Debian host,
# in a debootstrap chroot (as root). Nothing of the host's own apt configuration is changed.
#
#   scripts/check-trixie.sh [CHROOT] [-- PYTEST ARGS]   (default CHROOT: /var/tmp/arca-trixie,
#                                                         kept and reused; default tests: tests/unit)
#
# 1. debootstrap --variant=minbase trixie (a fresh Debian 13 with nothing of Arca's), services
#    kept from starting (policy-rc.d), /proc, /sys, /dev bind-mounted for apt and the tests;
# 2. this checkout (tracked and new files, no .venv) copied to /arca inside it;
# 3. scripts/setup.sh run there unchanged: APT_PACKAGES and VM_PACKAGES from trixie, QEMU
#    (must be >= 10), the venv with trixie's python3 (3.13), pip install -e '.[dev]', the
#    linux-image-cloud-amd64 kernel (apt-get download + arca.host.backends.vm.assets install),
#    the C front end built with the code stamp;
# 4. versions printed, then pytest on the unit tests with that venv (guest code included: the
#    TCB runs under the guest's python3, here 3.13). Integration tests need containerd, QEMU
#    and a registry running as services, which a chroot does not give: not run.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
root=/var/tmp/arca-trixie
if [ $# -gt 0 ] && [ "$1" != -- ]; then root=$1; shift; fi
[ "${1:-}" = -- ] && shift
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(tests/unit)
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
[ "$(id -u)" = 0 ] || { echo "check-trixie: needs root (debootstrap, chroot)" >&2; exit 2; }

if ! command -v debootstrap >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
if [ ! -x "$root/usr/bin/apt-get" ]; then
  echo "check-trixie: debootstrap trixie -> $root"
  debootstrap --variant=minbase trixie "$root" "$mirror" >"$root.debootstrap.log" 2>&1 || {
    tail -20 "$root.debootstrap.log" >&2; exit 1; }
fi
grep -q 'VERSION_CODENAME=trixie' "$root/etc/os-release"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$root/etc/resolv.conf"

mounted=()
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
bind() {  # bind <host path> <chroot path> [mount options]
  mkdir -p "$root$2"
  if ! mountpoint -q "$root$2"; then
    mount ${3:---rbind} "$1" "$root$2"
    mount --make-rslave "$root$2" 2>/dev/null || true
    mounted+=("$root$2")
  fi
}
bind /proc /proc
bind /sys /sys
bind /dev /dev
mkdir -p "$root/tmp" && chmod 1777 "$root/tmp"

echo "check-trixie: copying $repo -> $root/arca"
rm -rf "$root/arca"
mkdir -p "$root/arca"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard \
   | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
   | tar --null -T - -cf -) | tar -C "$root/arca" -xf -

# A host whose HTTPS goes through a TLS-inspecting proxy names the CA bundle that trusts it in
# PIP_CERT or SSL_CERT_FILE: pip in the chroot gets the same bundle (nothing else of the host's
# pip configuration: its wheel directories hold wheels for the host's Python).
pass_env=()
ca=${PIP_CERT:-${SSL_CERT_FILE:-}}
if [ -n "$ca" ] && [ -f "$ca" ]; then
  cp "$ca" "$root/etc/ssl/certs/arca-check-host-ca.crt"
  pass_env=(PIP_CERT=/etc/ssl/certs/arca-check-host-ca.crt
            SSL_CERT_FILE=/etc/ssl/certs/arca-check-host-ca.crt)
fi
in_chroot() {
  chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb "${pass_env[@]}" \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin bash -c "$1"
}
echo "check-trixie: scripts/setup.sh inside trixie"
in_chroot 'cd /arca && apt-get update -qq && bash scripts/setup.sh'
echo "check-trixie: what was installed"
in_chroot '. /etc/os-release; echo "Debian $VERSION_ID ($VERSION_CODENAME)";
  python3 --version; /arca/.venv/bin/python --version; qemu-system-x86_64 --version | head -1;
  dpkg-query -W -f="\${Package} \${Version}\n" runc containerd qemu-system-x86 erofs-utils \
    cryptsetup-bin passt umoci skopeo;
  cat /var/lib/arca-vm/kernel.json; echo;
  file -b /arca/.venv/bin/arca-runtime 2>/dev/null || head -c 4 /arca/.venv/bin/arca-runtime | od -c | head -1'
qemu_major=$(in_chroot "dpkg-query -W -f='\${Version}' qemu-system-x86 | sed 's/^[0-9]*://; s/\\..*//'")
[ "$qemu_major" -ge 10 ] || { echo "check-trixie: QEMU $qemu_major < 10" >&2; exit 1; }
echo "check-trixie: pytest ${tests[*]} (python 3.13)"
in_chroot "cd /arca && .venv/bin/pytest -q -p no:cacheprovider ${tests[*]}"
