#!/usr/bin/env bash
# Installs what bench/run.sh needs beyond tools/deps.sh (which covers building nook), skipping
# what is already there: the peers, the load generators and the chart.
set -euo pipefail

packages=(
  nginx-light h2o        # the peers (nginx with http_v2 and ssl; h2o 2.2)
  wrk nghttp2-client     # load: wrk, h2load
  openssl                # the certificate, and s_time for the handshake workload
  python3 gnuplot-nox    # statistics and the bar chart
  libmbedtls-dev         # bench/aesgcm.c links libmbedcrypto
  util-linux procps      # taskset, ps
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "bench deps: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
