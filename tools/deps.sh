#!/usr/bin/env bash
# Installs what building and testing nook needs on Debian 12, skipping what is already there.
set -euo pipefail

packages=(
  build-essential cmake pkg-config   # the build
  clang libclang-rt-14-dev           # libFuzzer harnesses
  python3 curl                       # integration tests: Debian's python3 and a real client
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
