#!/usr/bin/env bash
# Runs every fuzz harness built in BUILD_DIR for SECONDS each, starting from the committed seed
# corpus (copied, so the repo is not modified) and the harness's dictionary if there is one.
#   tools/fuzz.sh BUILD_DIR [SECONDS]
# Environment:
#   FUZZ_PARALLEL=N   run N harnesses at once (default 1)
#   FUZZ_OUT=DIR      keep each harness's log, grown corpus and any crash artifact in DIR
#                     (default: a temporary directory removed on exit)
# An input that fails a harness is also copied to BUILD_DIR/fuzz-artifacts/, and the command that
# reproduces it is printed.
# The long run reported in docs/security.md was
#   FUZZ_PARALLEL=2 FUZZ_OUT=/tmp/fuzz-long nice -n 19 bash tools/fuzz.sh build/fuzz 1800
set -euo pipefail
cd "$(dirname "$0")/.."
build=$1
seconds=${2:-30}
parallel=${FUZZ_PARALLEL:-1}
if [ -n "${FUZZ_OUT:-}" ]; then
  work=$FUZZ_OUT
  mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi

run_one() {
  local name=$1 bin="$build/tests/$1"
  mkdir -p "$work/$name" "$work/$name.artifacts"
  [ -d "tests/fuzz/corpus/$name" ] && cp -r "tests/fuzz/corpus/$name/." "$work/$name/"
  local dict=()
  [ -f "tests/fuzz/$name.dict" ] && dict=(-dict="tests/fuzz/$name.dict")
  echo "fuzz: $name for ${seconds}s"
  if ! "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      "${dict[@]}" -artifact_prefix="$work/$name.artifacts/" "$work/$name" \
      2>"$work/$name.log"; then
    tail -n 60 "$work/$name.log"
    # Keep the input that failed where it survives the temporary directory, and say how to run it.
    local artifact kept
    mkdir -p "$build/fuzz-artifacts"
    for artifact in "$work/$name.artifacts"/*; do
      if [ -f "$artifact" ]; then
        kept="$build/fuzz-artifacts/$name-$(basename "$artifact")"
        cp "$artifact" "$kept"
        echo "fuzz: $name: reproduce with: $bin $kept"
      fi
    done
    echo "fuzz: $name FAILED"
    return 1
  fi
  echo "fuzz: $name: $(grep -E '^stat::number_of_executed_units' "$work/$name.log" || true)"
}

names=()
for src in tests/fuzz/fuzz_*.c; do
  name=$(basename "$src" .c)
  [ -x "$build/tests/$name" ] || { echo "fuzz: $build/tests/$name was not built"; exit 1; }
  names+=("$name")
done

failed=0
running=0
for name in "${names[@]}"; do
  if [ "$running" -ge "$parallel" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
  run_one "$name" &
  running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done
[ "$failed" -eq 0 ] || { echo "fuzz: a harness failed"; exit 1; }
echo "fuzz: ${#names[@]} harnesses ran clean"
