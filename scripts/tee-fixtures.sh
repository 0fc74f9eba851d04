#!/usr/bin/env bash
# Idempotent: TEE firmware and published known-answer test data, from Debian packages (sid),
# unpacked into a cache the tdx/snp tests read. Nothing is installed and sources.list is left
# alone: apt runs against a private state directory. Works on Debian 12 and 13.
#   ovmf-amdsev            OVMF.amdsev.fd (AmdSevX64: SNP measured direct boot)
#   ovmf-inteltdx          OVMF.inteltdx.ms.fd (TDVF)
#   librust-sev-dev        virtee/sev's measurement test fixtures (SNP known answers)
#   golang-github-google-go-eventlog-dev   google/go-eventlog's TDX CCEL event logs (RTMR replay)
#   shim-signed            a Microsoft-signed EFI binary (its signature carries the Authenticode digest)
# Usage: scripts/tee-fixtures.sh [CACHE_DIR]   (default /var/cache/arca/tee-fixtures)
set -euo pipefail
cache=${1:-${ARCA_TEE_FIXTURES:-/var/cache/arca/tee-fixtures}}
pkgs=(ovmf-amdsev ovmf-inteltdx librust-sev-dev golang-github-google-go-eventlog-dev shim-signed)
stamp="$cache/.complete"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${pkgs[*]}" ]; then
  exit 0
fi
mkdir -p "$cache"
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/dl"
echo "deb http://deb.debian.org/debian sid main" > "$state/sources.list"
opts=(-o "Dir::Etc::sourcelist=$state/sources.list" -o Dir::Etc::sourceparts=-
      -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache" -o Debug::NoLocking=1
      -o APT::Sandbox::User=root)
apt-get "${opts[@]}" update -qq
(cd "$state/dl" && apt-get "${opts[@]}" download -qq "${pkgs[@]}")
rm -rf "$cache/root.new"
for deb in "$state"/dl/*.deb; do
  dpkg-deb -x "$deb" "$cache/root.new"
  dpkg-deb -f "$deb" Package Version | paste -sd' ' >> "$cache/root.new/VERSIONS"
done
rm -rf "$cache/root"
mv "$cache/root.new" "$cache/root"
echo "${pkgs[*]}" > "$stamp"
echo "tee-fixtures: $(paste -sd, "$cache/root/VERSIONS") in $cache/root"
