#!/usr/bin/env bash
# The reverse proxy's cost in one run: h2load -n 100000 -c 32 -m 16 (a 13-byte body) straight to
# an upstream and then through examples/proxy to the same upstream, for two upstreams:
#
#   h2c   nook_test_server over h2c          client h2c → proxy → h2c://
#   h2    nghttpd over TLS (tests/data cert)  client h2c → proxy → h2://   (direct: client h2 TLS)
#
# Every server runs one worker (the proxy: --threads 1); all of them and h2load share the
# machine's cores, so the proxied figure includes the proxy's CPU taken from the others. Prints
# req/s, failed requests, and proxied/direct per upstream. docs/proxy.md quotes one run.
#
#   bash bench/proxy.sh
#
#   PROXY_BENCH_N=100000        requests per h2load run
#   PROXY_BENCH_BUILD=DIR       the Release build to use (default build/bench-proxy, made here)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
N=${PROXY_BENCH_N:-100000}
BUILD=${PROXY_BENCH_BUILD:-$REPO/build/bench-proxy}
H2LOAD_ARGS=(-n "$N" -c 32 -m 16)

say() { echo "proxy-bench: $*" >&2; }
die() {
  say "error: $*"
  exit 1
}
for tool in h2load nghttpd python3 cmake; do
  command -v "$tool" >/dev/null || die "$tool is needed (h2load, nghttpd: Debian nghttp2-client, nghttp2-server)"
done

say "building Release in $BUILD"
cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DNOOK_BUILD_TESTS=ON \
  -DNOOK_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target nook_test_server proxy >/dev/null
SERVER=$BUILD/tests/integration/nook_test_server
PROXY=$BUILD/examples/proxy
[ -x "$SERVER" ] && [ -x "$PROXY" ] || die "no $SERVER or $PROXY after the build"

TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

# Starts a program printing "port P" lines; echoes the first port.
start_printing_port() {
  local name=$1
  shift
  "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  PIDS+=($!)
  for _ in $(seq 100); do
    if grep -q '^port ' "$TMP/$name.out" 2>/dev/null; then
      awk '/^port /{print $2; exit}' "$TMP/$name.out"
      return
    fi
    sleep 0.1
  done
  die "$name did not start: $(cat "$TMP/$name.err")"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

mkdir -p "$TMP/www"
printf 'Hello, World!' >"$TMP/www/hello.txt"
UP=$(start_printing_port upstream "$SERVER" --listen 127.0.0.1:0 --threads 1 --quiet)
NG=$(free_port)
nghttpd -d "$TMP/www" -a 127.0.0.1 "$NG" tests/data/localhost.key tests/data/localhost.crt \
  >"$TMP/nghttpd.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$NG") 2>/dev/null && break
  sleep 0.1
done
PX_H2C=$(start_printing_port proxy-h2c "$PROXY" --print-port --threads 1 --listen 127.0.0.1:0 \
  --upstream "h2c://127.0.0.1:$UP")
PX_H2=$(start_printing_port proxy-h2 "$PROXY" --print-port --threads 1 --listen 127.0.0.1:0 \
  --upstream "h2://localhost:$NG" --ca-file tests/data/localhost.crt)

# One h2load run: prints "req/s failed" (and keeps h2load's output in $TMP).
load() {
  local name=$1 url=$2 out="$TMP/h2load-$1.txt"
  h2load "${H2LOAD_ARGS[@]}" "$url" >"$out" 2>&1 || true
  local rps failed
  rps=$(awk '/^finished in/ {for (i = 1; i <= NF; i++) if ($i == "req/s,") print $(i - 1)}' "$out")
  failed=$(awk '/^requests:/ {for (i = 1; i <= NF; i++) if ($i == "failed,") print $(i - 1)}' "$out")
  [ -n "$rps" ] || die "h2load $name: $(tail -5 "$out")"
  echo "$rps ${failed:-?}"
}

say "h2load ${H2LOAD_ARGS[*]} (load average before: $(cut -d' ' -f1-3 /proc/loadavg))"
read -r d_h2c f1 < <(load direct-h2c "http://127.0.0.1:$UP/")
read -r p_h2c f2 < <(load proxy-h2c "http://127.0.0.1:$PX_H2C/")
read -r d_h2 f3 < <(load direct-h2 "https://127.0.0.1:$NG/hello.txt")
read -r p_h2 f4 < <(load proxy-h2 "http://127.0.0.1:$PX_H2/hello.txt")

printf '%-44s %12s %8s\n' "run (h2load ${H2LOAD_ARGS[*]})" "req/s" "failed"
printf '%-44s %12s %8s\n' "direct: nook_test_server, h2c" "$d_h2c" "$f1"
printf '%-44s %12s %8s\n' "proxy: h2c client -> h2c:// nook_test_server" "$p_h2c" "$f2"
printf '%-44s %12s %8s\n' "direct: nghttpd, h2 over TLS" "$d_h2" "$f3"
printf '%-44s %12s %8s\n' "proxy: h2c client -> h2:// nghttpd (TLS)" "$p_h2" "$f4"
awk -v a="$p_h2c" -v b="$d_h2c" -v c="$p_h2" -v d="$d_h2" \
  'BEGIN { printf "proxied/direct: h2c %.2f, h2 TLS %.2f\n", a / b, c / d }'
echo "machine: $(nproc) cores, load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
