#!/usr/bin/env bash
# Installs dependencies, builds nook, and runs examples/hello on 127.0.0.1:8080 (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/release -j"${JOBS:-2}" --target hello
echo "demo: try   curl -v http://127.0.0.1:8080/"
exec build/release/examples/hello --listen 127.0.0.1:8080 "$@"
