#!/usr/bin/env bash
# Runs every fuzz harness built in BUILD_DIR for SECONDS each, starting from the committed seed
# corpus (copied, so the repo is not modified) and the harness's dictionary if there is one.
#   tools/fuzz.sh BUILD_DIR [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
build=$1
seconds=${2:-30}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
count=0
for src in tests/fuzz/fuzz_*.c; do
  name=$(basename "$src" .c)
  bin="$build/tests/$name"
  [ -x "$bin" ] || { echo "fuzz: $bin was not built"; exit 1; }
  mkdir -p "$work/$name"
  [ -d "tests/fuzz/corpus/$name" ] && cp -r "tests/fuzz/corpus/$name/." "$work/$name/"
  dict=()
  [ -f "tests/fuzz/$name.dict" ] && dict=(-dict="tests/fuzz/$name.dict")
  echo "fuzz: $name for ${seconds}s"
  "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    "${dict[@]}" -artifact_prefix="$work/" "$work/$name" 2>"$work/$name.log" || {
    tail -n 60 "$work/$name.log"
    echo "fuzz: $name FAILED"
    exit 1
  }
  grep -E '^stat::number_of_executed_units' "$work/$name.log" || true
  count=$((count + 1))
done
echo "fuzz: $count harnesses ran clean"
