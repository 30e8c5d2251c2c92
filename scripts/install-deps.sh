#!/usr/bin/env bash
# Installs the Debian packages StreamVM builds, tests and benchmarks with. Idempotent and
# non-interactive: it only calls apt when a package is missing.
set -euo pipefail

packages=(
  libzstd-dev            # CZstd: chunk compression
  libcurl4-openssl-dev   # CCurl: the HTTP/2 client
  libnghttp2-dev         # HTTP/2 for libcurl
  nginx-light            # peer server in tests and benchmarks
  nghttp2-client         # h2load for benchmarks
  e2fsprogs              # mke2fs -d builds appliance disks without loop mounts
  zstd
  curl                   # peer client in server tests (h2c, TLS)
  openssl                # test certificates
  gcc binutils libc6-dev # the freestanding test guests
)

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
