#!/usr/bin/env bash
# Installs dependencies, builds nook, and runs examples/hello (Ctrl-C stops it):
#   http://127.0.0.1:8080/   HTTP/1.1 and h2c (curl --http2-prior-knowledge)
#   https://127.0.0.1:8443/  HTTP/2 or HTTP/1.1 by ALPN, with a self-signed certificate made
#                            here on first run (build/demo-cert.pem; curl -k to accept it)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/release -j"${JOBS:-2}" --target hello
if [ ! -f build/demo-cert.pem ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
    -keyout build/demo-key.pem -out build/demo-cert.pem -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
fi
echo "demo: try   curl -v http://127.0.0.1:8080/   and   curl -vk --http2 https://127.0.0.1:8443/"
exec build/release/examples/hello --listen 127.0.0.1:8080 \
  --tls-cert build/demo-cert.pem --tls-key build/demo-key.pem --listen 127.0.0.1:8443 "$@"
