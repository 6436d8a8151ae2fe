#!/usr/bin/env bash
# The benchmark suite: nook (examples/hello, Release, one thread) against nginx and h2o (one
# worker each), same content, same ECDSA P-256 certificate, on 127.0.0.1. Prints the table (and
# the same figures per second of server CPU) and writes bench/results/DATE.md with a bar chart
# beside it. What each workload measures and how to read the table: docs/performance.md.
#
#   bash bench/run.sh
#
#   BENCH_RUNS=3            runs per workload and server; each figure is their median
#   BENCH_QUICK=1           short runs, one each, results named *-quick (to check the script)
#   BENCH_ONLY=h2c,h1-plain a subset of the workloads
#   BENCH_PIN=0             do not pin servers to CPU 0 and clients to the others
#   BENCH_KEEP=1            keep the run's temp dir (configs, logs, every tool's output)
#
# A full run of every workload also puts the table into docs/performance.md ("Results").
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=/usr/bin/python3 # Debian's, whatever else is first in PATH
REPORT="$PY $REPO/bench/report.py"

ALL_WORKLOADS=(h2-tls h2c h1-tls h1-plain h2-tls-64k h1-plain-1m handshakes idle-memory idle-memory-h1)
SERVERS=(nook nginx h2o)
RUNS=${BENCH_RUNS:-3}
QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
  RUNS=1 REQUESTS=20000 SECONDS_PER_RUN=2 IDLE_CONNS=500 AEAD_SECONDS=0.3 FLOOR_REQUESTS=100000
else
  REQUESTS=200000 SECONDS_PER_RUN=10 IDLE_CONNS=5000 AEAD_SECONDS=1 FLOOR_REQUESTS=1000000
fi
LIMIT_S=20        # no single load run may take longer
IDLE_DEADLINE_S=20
HANDSHAKE_CLIENTS=8

say() { echo "bench: $*" >&2; }
die() { say "error: $*"; exit 1; }

# --- what to run --------------------------------------------------------------------------------

WORKLOADS=("${ALL_WORKLOADS[@]}")
if [ -n "${BENCH_ONLY:-}" ]; then
  IFS=, read -r -a WORKLOADS <<<"$BENCH_ONLY"
  for w in "${WORKLOADS[@]}"; do
    [[ " ${ALL_WORKLOADS[*]} " == *" $w "* ]] || die "unknown workload '$w' (known: ${ALL_WORKLOADS[*]})"
  done
fi
selected() { [[ " ${WORKLOADS[*]} " == *" $1 "* ]]; }
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive number"

SERVER_CPU=() CLIENT_CPU=()
if [ "${BENCH_PIN:-1}" != 0 ] && [ "$(nproc)" -ge 2 ]; then
  SERVER_CPU=(taskset -c 0)
  CLIENT_CPU=(taskset -c "1-$(($(nproc) - 1))")
fi

# --- dependencies and builds --------------------------------------------------------------------

bash tools/deps.sh
bash bench/deps.sh
BUILD=$REPO/build/bench
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DNOOK_BUILD_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j"${JOBS:-2}" --target hello >/dev/null
HELLO=$BUILD/examples/hello
cc -std=c11 -O2 -Wall -Wextra -Werror -o "$BUILD/aesgcm" bench/aesgcm.c -lmbedcrypto
cc -std=c11 -O2 -Wall -Wextra -Werror -o "$BUILD/h2floor" bench/h2floor.c -lnghttp2

# --- the run's directory: certificate, content, configs, logs -------------------------------------

RUN=$(mktemp -d -t nook-bench.XXXXXX)
LOGS=$RUN/logs
WWW=$RUN/www
mkdir -p "$LOGS" "$WWW/static" "$RUN/nginx" "$RUN/h2o/tmp" "$RUN/nook"
chmod 755 "$RUN"
chmod 1777 "$RUN/h2o/tmp" # h2o fails to start when it cannot write there

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
  -keyout "$RUN/key.pem" -out "$RUN/cert.pem" -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
chmod 644 "$RUN/key.pem" # a throwaway key; h2o must be able to read it
printf 'Hello, World!' >"$WWW/hello.txt"
head -c 65536 /dev/urandom >"$WWW/static/64k.bin"
head -c 1048576 /dev/urandom >"$WWW/static/1m.bin"
sed -e '/^#/d' bench/peers/openssl.cnf.in >"$RUN/openssl.cnf"
export OPENSSL_CONF=$RUN/openssl.cnf # TLS 1.2 and P-256 for every process of the run

free_ports() { # prints N ports that nothing listens on now
  $PY -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}
read -r NOOK_TLS NOOK_PLAIN NGINX_TLS NGINX_PLAIN NGINX_H2C H2O_TLS H2O_PLAIN <<<"$(free_ports 7)"
declare -A TLS_PORT=([nook]=$NOOK_TLS [nginx]=$NGINX_TLS [h2o]=$H2O_TLS)
declare -A PLAIN_PORT=([nook]=$NOOK_PLAIN [nginx]=$NGINX_PLAIN [h2o]=$H2O_PLAIN)
declare -A H2C_PORT=([nook]=$NOOK_PLAIN [nginx]=$NGINX_H2C [h2o]=$H2O_PLAIN)

# Enough descriptors for the idle connections (the client and each server hold one apiece).
NOFILE=$(ulimit -Hn)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
[ "$NOFILE" -ge $((IDLE_CONNS + 1024)) ] ||
  die "ulimit -Hn is $NOFILE; idle-memory needs $((IDLE_CONNS + 1024)) descriptors"
ulimit -n "$NOFILE"

user_line() { # the peers switch to 'nobody' when started as root unless told otherwise
  [ "$(id -u)" -ne 0 ] && return
  case $1 in
    nginx) echo "user $(id -un) $(id -gn);" ;;
    h2o) echo "user: $(id -un)" ;;
  esac
}
fill_config() { # fill_config SERVER TEMPLATE OUT
  sed -e "s|@USER_LINE@|$(user_line "$1")|" -e "s|@DIR@|$RUN/$1|g" -e "s|@WWW@|$WWW|g" \
    -e "s|@CERT@|$RUN/cert.pem|g" -e "s|@KEY@|$RUN/key.pem|g" \
    -e "s|@TLS_PORT@|${TLS_PORT[$1]}|g" -e "s|@PLAIN_PORT@|${PLAIN_PORT[$1]}|g" \
    -e "s|@H2C_PORT@|${H2C_PORT[$1]}|g" -e "s|@NOFILE@|$NOFILE|g" \
    -e "s|@MAX_CONNS@|$((IDLE_CONNS + 1000))|g" "$2" >"$3"
}
fill_config nginx bench/peers/nginx.conf.in "$RUN/nginx/nginx.conf"
fill_config h2o bench/peers/h2o.conf.in "$RUN/h2o/h2o.conf"

# --- servers ------------------------------------------------------------------------------------

declare -A PID=()
CLIENT_PIDS=()


start_server() {
  local s=$1
  case $s in
    nook)
      "${SERVER_CPU[@]}" "$HELLO" --threads 1 --docroot "$WWW/static" \
        --listen "127.0.0.1:${PLAIN_PORT[nook]}" --tls-cert "$RUN/cert.pem" --tls-key "$RUN/key.pem" \
        --listen "127.0.0.1:${TLS_PORT[nook]}" >"$RUN/nook/out.log" 2>&1 &
      ;;
    nginx)
      "${SERVER_CPU[@]}" nginx -p "$RUN/nginx/" -e "$RUN/nginx/error.log" -c "$RUN/nginx/nginx.conf" \
        >"$RUN/nginx/out.log" 2>&1 &
      ;;
    h2o)
      "${SERVER_CPU[@]}" h2o -c "$RUN/h2o/h2o.conf" >"$RUN/h2o/out.log" 2>&1 &
      ;;
  esac
  PID[$s]=$!
}

descendants() { # the process and all its descendants, one PID a line
  local p
  echo "$1"
  for p in $(ps -o pid= --ppid "$1" 2>/dev/null); do descendants "$p"; done
}

stop_server() {
  local s=$1 pid=${PID[$1]:-} procs p
  [ -n "$pid" ] || return 0
  procs=$(descendants "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  for p in $procs; do kill -KILL "$p" 2>/dev/null || true; done # what did not follow its parent
  wait "$pid" 2>/dev/null || true
  unset "PID[$s]"
}

fail_server() { # fail_server SERVER WHAT: prints the server's logs and stops the run
  local s=$1
  say "$s: $2"
  for f in "$RUN/$s/out.log" "$RUN/$s/error.log"; do # what it printed; the peers' own log
    [ -s "$f" ] && { say "--- $f"; tail -n 30 "$f" >&2; }
  done
  die "$s is not serving as it should"
}

# check SERVER CURL_ARGS URL BYTES VERSION: one request that must answer 200 with BYTES bytes.
check() {
  local s=$1 args=$2 url=$3 bytes=$4 version=$5 got
  # shellcheck disable=SC2086
  got=$(curl -sk $args --max-time 10 -o /dev/null -w '%{http_code} %{size_download} %{http_version}' \
    "$url" 2>&1) || true
  [ "$got" = "200 $bytes $version" ] ||
    fail_server "$s" "$url ($args) answered '$got', expected '200 $bytes $version'"
}

wait_ready() {
  local s=$1
  for _ in $(seq 100); do
    kill -0 "${PID[$s]}" 2>/dev/null || fail_server "$s" "exited at start"
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:${PLAIN_PORT[$s]}/" && return 0
    sleep 0.1
  done
  fail_server "$s" "not answering after 10 s"
}

verify_server() { # every URL the workloads use, with the protocol they use
  local s=$1 tls="https://127.0.0.1:${TLS_PORT[$1]}" plain="http://127.0.0.1:${PLAIN_PORT[$1]}"
  local body
  body=$(curl -s "$plain/")
  [ "$body" = "Hello, World!" ] || fail_server "$s" "GET / answered '$body'"
  check "$s" --http2 "$tls/" 13 2
  check "$s" --http1.1 "$tls/" 13 1.1
  check "$s" --http2-prior-knowledge "http://127.0.0.1:${H2C_PORT[$s]}/" 13 2
  check "$s" --http1.1 "$plain/" 13 1.1
  check "$s" --http2 "$tls/static/64k.bin" 65536 2
  check "$s" --http1.1 "$plain/static/1m.bin" 1048576 1.1
}

cleanup() {
  local rc=$? p s
  trap - EXIT INT TERM
  for p in "${CLIENT_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for s in "${!PID[@]}"; do stop_server "$s"; done
  if [ "$rc" -ne 0 ] || [ "${BENCH_KEEP:-0}" = 1 ]; then
    say "the run's files are in $RUN"
  else
    rm -rf "$RUN"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- measurements -------------------------------------------------------------------------------

RECORDS=$RUN/records.tsv
: >"$RECORDS"
record() { # record WORKLOAD SERVER RUN VALUE OK NOTE CIPHER [BUSY]
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" "${8:-}" >>"$RECORDS"
}

cpu_ns() { # CPU time of a process tree (every thread, user and system), in nanoseconds
  local p t=0 ns f
  for p in $(descendants "$1"); do
    for f in /proc/"$p"/task/*/schedstat; do
      ns=$(awk '{ print $1 }' "$f" 2>/dev/null) || true
      t=$((t + ${ns:-0}))
    done
  done
  echo "$t"
}

# The load tools run between busy_start and busy_end; BUSY is then the fraction of that time the
# server was on a CPU. A figure divided by it is the figure per second of server CPU: what one
# core of the server does, whether or not the one-thread client kept it busy.
busy_start() { BUSY_CPU0=$(cpu_ns "$1"); BUSY_T0=$(date +%s%N); }
busy_end() {
  local cpu1 t1
  cpu1=$(cpu_ns "$1")
  t1=$(date +%s%N)
  BUSY=$(awk -v c="$((cpu1 - BUSY_CPU0))" -v t="$((t1 - BUSY_T0))" 'BEGIN { printf "%.4f", c / t }')
}

rss_kib() { # resident memory of a process tree, KiB
  local p t=0 kib
  for p in $(descendants "$1"); do
    kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null) || true
    t=$((t + ${kib:-0}))
  done
  echo "$t"
}

passive_opens() { # TCP connections accepted by anyone on this machine so far
  awk '/^Tcp:/ { if (!n) { for (i = 1; i <= NF; i++) if ($i == "PassiveOpens") c = i; n = 1 }
                 else print $c }' /proc/net/snmp
}

# h2load_run WORKLOAD SERVER RUN BODY_BYTES URL ARGS...: requests/s, or MB/s with BODY_BYTES.
h2load_run() {
  local w=$1 s=$2 r=$3 bytes=$4 url=$5 log=$LOGS/$1.$2.$3.log
  shift 5
  busy_start "${PID[$s]}"
  timeout --foreground -k 5 "$LIMIT_S" "${CLIENT_CPU[@]}" h2load -t 1 "$@" "$url" >"$log" 2>&1 || true
  busy_end "${PID[$s]}"
  mapfile -t f < <($REPORT h2load "$log" "$bytes")
  record "$w" "$s" "$r" "${f[@]:0:4}" "$BUSY"
}

wrk_run() { # wrk_run WORKLOAD SERVER RUN BODY_BYTES URL
  local w=$1 s=$2 r=$3 bytes=$4 url=$5 log=$LOGS/$1.$2.$3.log
  busy_start "${PID[$s]}"
  timeout --foreground -k 5 $((SECONDS_PER_RUN + 10)) "${CLIENT_CPU[@]}" wrk -t1 -c64 -d"${SECONDS_PER_RUN}s" \
    "$url" >"$log" 2>&1 || true
  busy_end "${PID[$s]}"
  mapfile -t f < <($REPORT wrk "$log" "$bytes")
  record "$w" "$s" "$r" "${f[@]:0:4}" "$BUSY"
}

# New TLS connections with one request each. wrk and h2load both resume TLS sessions when they
# reconnect (they keep the session of the SSL object they reuse), so the client is openssl
# s_time -new, which makes a full handshake every time and sends one HTTP/1.0 request. One
# s_time is sequential, and OpenSSL 3's client side costs more per handshake than nginx's
# server side, so the client cannot always saturate the server: the figure is connections per
# second of server CPU time, which does not depend on how busy the client keeps it. Every
# connection is counted: there must be as many TCP accepts on the machine as s_time made
# connections, and the clients must have read a whole response (over 64 bytes) per connection.
handshakes_run() {
  local s=$1 r=$2 log=$LOGS/handshakes.$1.$2 i pids=() cpu0 cpu1 acc0 acc1 t0 t1
  acc0=$(passive_opens)
  cpu0=$(cpu_ns "${PID[$s]}")
  t0=$(date +%s.%N)
  for i in $(seq "$HANDSHAKE_CLIENTS"); do
    timeout --foreground -k 5 $((SECONDS_PER_RUN + 10)) "${CLIENT_CPU[@]}" openssl s_time -new -www / \
      -connect "127.0.0.1:${TLS_PORT[$s]}" -time "$SECONDS_PER_RUN" >"$log.$i.log" 2>&1 &
    pids+=($!)
  done
  CLIENT_PIDS+=("${pids[@]}")
  for i in "${pids[@]}"; do wait "$i" || true; done
  CLIENT_PIDS=()
  t1=$(date +%s.%N)
  cpu1=$(cpu_ns "${PID[$s]}")
  acc1=$(passive_opens)
  # "N connections in T real seconds, B bytes read per connection", one line per client
  mapfile -t f < <(cat "$log".*.log | $PY -c '
import re, sys
conns, per_conn = 0, []
for m in re.finditer(r"(\d+) connections in \d+ real seconds, (\d+) bytes read per connection",
                     sys.stdin.read()):
    conns += int(m.group(1)); per_conn.append(int(m.group(2)))
clients, accepts, cpu_s, wall = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
notes = []
if len(per_conn) < clients: notes.append(f"{clients - len(per_conn)} of {clients} clients gave no summary")
if per_conn and min(per_conn) < 64: notes.append(f"a client read only {min(per_conn)} bytes per connection")
if accepts < conns: notes.append(f"only {accepts} TCP accepts for {conns} connections")
value = conns / cpu_s if cpu_s > 0 else 0
notes.append(f"{conns / wall:.0f} conn/s at {100 * cpu_s / wall:.0f}% server CPU")
print(f"{value:.1f}", int(len(notes) == 1 and value > 0), "; ".join(notes), "", sep="\n")
' "$HANDSHAKE_CLIENTS" $((acc1 - acc0)) "$(awk -v c="$((cpu1 - cpu0))" 'BEGIN { print c / 1e9 }')" \
    "$(echo "$t0 $t1" | awk '{print $2 - $1}')")
  record handshakes "$s" "$r" "${f[@]:0:4}"
}

# RSS growth per idle TLS connection, on a freshly started server (an allocator keeps what it
# freed, so a second round on the same process would reuse it). The sum covers every process
# of the server (nginx's master and worker, h2o's helpers).
idle_run() {
  local w=$1 s=$2 r=$3 alpn=h2 client rss0 rss1 line=""
  local log=$LOGS/$w.$s.$r.log
  [ "$w" = idle-memory-h1 ] && alpn=http/1.1
  stop_server "$s"
  start_server "$s"
  wait_ready "$s"
  verify_server "$s"
  sleep 0.5
  rss0=$(rss_kib "${PID[$s]}")
  "${CLIENT_CPU[@]}" $PY bench/idle.py 127.0.0.1 "${TLS_PORT[$s]}" "$IDLE_CONNS" \
    --alpn "$alpn" --deadline "$IDLE_DEADLINE_S" >"$log" 2>&1 &
  client=$!
  CLIENT_PIDS+=("$client")
  for _ in $(seq $(((IDLE_DEADLINE_S + 10) * 10))); do
    line=$(head -n 1 "$log")
    [ -n "$line" ] && break
    kill -0 "$client" 2>/dev/null || break
    sleep 0.1
  done
  line=$(head -n 1 "$log")
  if [ "$line" = "open $IDLE_CONNS" ]; then
    sleep 2 # idle: past NOOK_OPT_IDLE_SLEEP (1 s), and whatever follows the handshakes is done
    rss1=$(rss_kib "${PID[$s]}")
    record "$w" "$s" "$r" "$(awk -v a="$rss0" -v b="$rss1" -v n="$IDLE_CONNS" \
      'BEGIN { printf "%.2f", (b - a) / n }')" 1 "RSS $rss0 -> $rss1 KiB" ""
  else
    record "$w" "$s" "$r" 0 0 "${line:-the client said nothing}" ""
  fi
  kill -TERM "$client" 2>/dev/null || true
  wait "$client" 2>/dev/null || true
  CLIENT_PIDS=()
}

run_workload() { # run_workload WORKLOAD SERVER RUN
  local w=$1 s=$2 r=$3
  local tls="https://127.0.0.1:${TLS_PORT[$s]}" plain="http://127.0.0.1:${PLAIN_PORT[$s]}"
  local h2c="http://127.0.0.1:${H2C_PORT[$s]}"
  case $w in
    h2-tls) h2load_run "$w" "$s" "$r" 0 "$tls/" -n "$REQUESTS" -c 64 -m 16 ;;
    h2c) h2load_run "$w" "$s" "$r" 0 "$h2c/" -n "$REQUESTS" -c 64 -m 16 ;;
    h1-tls) h2load_run "$w" "$s" "$r" 0 "$tls/" --h1 -n "$REQUESTS" -c 64 ;;
    h1-plain) wrk_run "$w" "$s" "$r" 0 "$plain/" ;;
    # 200000 x 64 KiB would take minutes: a fixed time, after a second of warm-up.
    h2-tls-64k) h2load_run "$w" "$s" "$r" 65536 "$tls/static/64k.bin" -c 64 -m 16 \
      -D "$SECONDS_PER_RUN" --warm-up-time 1 ;;
    h1-plain-1m) wrk_run "$w" "$s" "$r" 1048576 "$plain/static/1m.bin" ;;
    handshakes) handshakes_run "$s" "$r" ;;
  esac
}

# --- the run ------------------------------------------------------------------------------------

STAMP=$(date -u +%Y-%m-%d_%H%M%S)
say "runs: $RUNS; workloads: ${WORKLOADS[*]}; files: $RUN"
"$BUILD/aesgcm" "$AEAD_SECONDS" >"$RUN/aead.txt"
# nghttp2 alone, on the servers' CPU: what any server built on it spends per h2c request.
for r in $(seq "$RUNS"); do "${SERVER_CPU[@]}" "$BUILD/h2floor" "$FLOOR_REQUESTS"; done >"$RUN/h2floor.txt"

for s in "${SERVERS[@]}"; do
  start_server "$s"
  wait_ready "$s"
  verify_server "$s"
done

# Runs interleave (run 1 of every server, then run 2...) so that a noisy moment spreads over all.
for w in "${WORKLOADS[@]}"; do
  case $w in idle-memory*) continue ;; esac
  for r in $(seq "$RUNS"); do
    for s in "${SERVERS[@]}"; do
      say "$w: $s, run $r of $RUNS"
      run_workload "$w" "$s" "$r"
      kill -0 "${PID[$s]}" 2>/dev/null || fail_server "$s" "died during $w"
    done
  done
done
for w in idle-memory idle-memory-h1; do
  selected "$w" || continue
  for r in $(seq "$RUNS"); do
    for s in "${SERVERS[@]}"; do
      say "$w: $s, run $r of $RUNS ($IDLE_CONNS connections)"
      idle_run "$w" "$s" "$r"
    done
  done
done
for s in "${SERVERS[@]}"; do stop_server "$s"; done

# --- the report ---------------------------------------------------------------------------------

{
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) ($(nproc) online)"
  echo "kernel=$(uname -sr)"
  echo "nook=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown) (Release)"
  echo "nginx=$(nginx -v 2>&1 | sed 's/.*version: //')"
  echo "h2o=$(h2o --version | head -n 1 | sed 's/h2o version //')"
  echo "mbedTLS=$(head -n 1 "$RUN/aead.txt" | sed 's/^library //')"
  echo "nghttp2=$(head -n 1 "$RUN/h2floor.txt" | sed 's/^library nghttp2 //')"
  echo "OpenSSL (peers and clients)=$(openssl version | cut -d' ' -f1-2)"
  echo "h2load=$(h2load --version | sed 's/^h2load //')"
  echo "wrk=$(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)"
  echo "settings=runs $RUNS; $REQUESTS requests per h2load -n run; ${SECONDS_PER_RUN} s timed runs; $IDLE_CONNS idle connections; $([ ${#SERVER_CPU[@]} -gt 0 ] && echo "servers on CPU 0, clients on the others" || echo "no CPU pinning")"
} >"$RUN/machine.txt"

mkdir -p bench/results
NAME=$STAMP
[ "$QUICK" = 1 ] && NAME=$STAMP-quick
DOCS_ARGS=()
if [ "$QUICK" != 1 ] && [ -z "${BENCH_ONLY:-}" ]; then
  DOCS_ARGS=(--docs docs/performance.md --docs-png "../bench/results/$NAME.png")
fi
TITLE="nook against nginx and h2o, one worker each, on 127.0.0.1"
[ "$QUICK" = 1 ] && TITLE="$TITLE — a QUICK run (short, one run each): for checking the script, not for reading"
echo
$REPORT table --records "$RECORDS" --machine "$RUN/machine.txt" --aead "$RUN/aead.txt" \
  --h2floor "$RUN/h2floor.txt" \
  --out "bench/results/$NAME.md" --plot "$RUN/ratios.dat" --stamp "$STAMP" --title "$TITLE" \
  --png-name "$NAME.png" "${DOCS_ARGS[@]}"

chart() { # chart DATA PNG TITLE: the ratios as clustered bars, a dashed line at 1
  gnuplot <<EOF
set terminal pngcairo size 900,480 font "sans,10"
set output "$2"
set title "$3" noenhanced
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set datafile missing "?"
set yrange [0:*]
set grid ytics
set key top right
set xtics nomirror rotate by -20
set arrow from graph 0, first 1 to graph 1, first 1 nohead dashtype 2 lw 1.5
# Two bars per workload, centred a sixth of a unit either side of it: each gets its value on top.
plot "$1" using 2:xtic(1) title "nook/nginx", "" using 3 title "nook/h2o", \
  "" using (\$0 - 1.0/6):2:(sprintf("%.2f", \$2)) with labels offset 0,0.7 font ",8" notitle, \
  "" using (\$0 + 1.0/6):3:(sprintf("%.2f", \$3)) with labels offset 0,0.7 font ",8" notitle
EOF
}
chart "$RUN/ratios.dat" "bench/results/$NAME.png" \
  "nook / peer per workload, $STAMP (above 1: nook ahead; for idle-memory, below 1)"
PNGS="bench/results/$NAME.png"
if [ -s "$RUN/ratios-cpu.dat" ]; then
  chart "$RUN/ratios-cpu.dat" "bench/results/$NAME-cpu.png" \
    "nook / peer per second of server CPU, $STAMP (above 1: nook does more per core)"
  PNGS="$PNGS and bench/results/$NAME-cpu.png"
fi
echo
say "results: bench/results/$NAME.md, $PNGS"
