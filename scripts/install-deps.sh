#!/usr/bin/env bash
# Installs the Debian packages StreamVM builds, tests and benchmarks with. Idempotent and
# non-interactive: it only calls apt when a package is missing.
set -euo pipefail
# shellcheck source=lib/apt-sources.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt-sources.sh"

packages=(
  libzstd-dev            # CZstd: chunk compression
  libcurl4-openssl-dev   # CCurl: the HTTP/2 client
  libnghttp2-dev         # HTTP/2 for libcurl
  nginx-light            # peer server in tests and benchmarks
  nghttp2-client         # h2load for benchmarks
  e2fsprogs              # mke2fs -d builds appliance disks without loop mounts
  iputils-ping           # the kernel's ping against the tap backend (HostNetworkTests)
  iproute2               # ip netns for the tap tests
  zstd
  curl                   # peer client in server tests (h2c, TLS)
  openssl                # test certificates
  gcc binutils libc6-dev # the freestanding test guests
)

# libcurl >= 8 from Debian's bookworm-backports (on this machine's own Debian mirror): bookworm's
# 7.88.1 cannot reuse an h2c (prior-knowledge) connection (curl issue 10634), so every h2c request would open a connection.
# The pin lets only curl, libcurl4 and libcurl4-openssl-dev come from backports; everything else
# (OpenSSL, nghttp2, ...) stays bookworm's. The backports build depends only on bookworm libraries.
# STREAMVM_SKIP_CURL_BACKPORTS=1 keeps the distribution's libcurl (the fetcher then falls back to a
# connection per h2c request at run time).
curl_packages=(curl libcurl4 libcurl4-openssl-dev)
backports_sources=/etc/apt/sources.list.d/streamvm-bookworm-backports.sources
backports_pin=/etc/apt/preferences.d/streamvm-curl-backports
libcurl_version() { dpkg-query -W -f='${Version}' libcurl4 2>/dev/null || echo 0; }
if [[ ${STREAMVM_SKIP_CURL_BACKPORTS:-0} != 1 ]] && grep -q '^12' /etc/debian_version 2>/dev/null \
   && dpkg --compare-versions "$(libcurl_version)" lt 8; then
  echo "installing libcurl >= 8 from bookworm-backports (pinned to ${curl_packages[*]})"
  # The backports suite comes from the mirror this machine already uses for bookworm (its own apt
  # sources), never from a host name of ours; nothing is added when backports is configured already.
  if [[ ! -f $backports_sources ]] && [[ -z $(apt_sources_for_suite bookworm-backports) ]]; then
    IFS=$'\t' read -r mirror keyring < <(apt_sources_for_suite bookworm) || true
    [[ -n ${mirror:-} ]] || { echo "no enabled 'deb ... bookworm' source in /etc/apt/sources.list or" \
      "/etc/apt/sources.list.d/: cannot tell which mirror serves bookworm-backports; add one, or set" \
      "STREAMVM_SKIP_CURL_BACKPORTS=1" >&2; exit 1; }
    stanza=('Types: deb' "URIs: $mirror" 'Suites: bookworm-backports' 'Components: main')
    [[ -n ${keyring:-} ]] && stanza+=("Signed-By: $keyring")
    tmp=$(mktemp "$backports_sources.XXXXXX")
    printf '%s\n' "${stanza[@]}" >"$tmp"
    chmod 644 "$tmp" && sync "$tmp" && mv "$tmp" "$backports_sources"
  fi
  tmp=$(mktemp "$backports_pin.XXXXXX")
  printf '%s\n' "Package: ${curl_packages[*]}" 'Pin: release n=bookworm-backports' 'Pin-Priority: 990' '' \
    'Package: *' 'Pin: release n=bookworm-backports' 'Pin-Priority: -1' >"$tmp"
  chmod 644 "$tmp" && mv "$tmp" "$backports_pin"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${curl_packages[@]}" >/dev/null
  dpkg --compare-versions "$(libcurl_version)" ge 8 || { echo "libcurl from bookworm-backports did not install" >&2; exit 1; }
fi
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# nginx-light's package starts a system nginx on port 80; tests run their own on loopback.
if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then systemctl stop nginx || true; fi
