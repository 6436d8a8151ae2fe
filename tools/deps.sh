#!/usr/bin/env bash
# Installs what building and testing nook needs on Debian 12, skipping what is already there.
set -euo pipefail

packages=(
  build-essential cmake pkg-config   # the build
  libmbedtls-dev libnghttp2-dev      # TLS and HTTP/2
  zlib1g-dev libbrotli-dev           # compression middleware (gzip, br)
  clang libclang-rt-14-dev           # libFuzzer harnesses
  python3 curl                       # integration tests: Debian's python3 and a real client
  nghttp2-client openssl             # real HTTP/2 and TLS peers (nghttp, h2load, s_client)
  nghttp2-server                     # nghttpd: an HTTP/2 upstream for the proxy tests
  python3-h2 python3-hyperframe      # raw HTTP/2 frames for the conformance tests
  chromium                           # a real browser
  gpgv debian-archive-keyring xz-utils  # tools/mbedtls3.sh: Debian 13's mbedTLS 3.x, checked
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "deps: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
