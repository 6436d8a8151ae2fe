#!/usr/bin/env bash
# The whole test suite, as CI runs it: install dependencies, then
#   1. a normal build and every ctest (unit, integration, symbol export),
#   2. the same suite built with AddressSanitizer + UndefinedBehaviorSanitizer,
#   3. the multi-thread, late-answer (token) and lifecycle tests built with ThreadSanitizer,
#   4. each libFuzzer harness for FUZZ_SECONDS (default 30) over its seed corpus,
#   5. install to a staging prefix and build consumers with pkg-config and find_package,
#   6. a build against mbedTLS 3.x (TLS 1.3; Debian 13's packages, fetched and checked by
#      tools/mbedtls3.sh, not installed) and every ctest on it, then the TLS tests again built
#      with ASan + UBSan against it. MBEDTLS3=0 skips this step.
# Build trees go to build/ (ignored by git). Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
jobs=${JOBS:-2}
fuzz_seconds=${FUZZ_SECONDS:-30}

bash tools/deps.sh

step() { printf '\n==== %s ====\n' "$*"; }

step "build (RelWithDebInfo)"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/release -j"$jobs"
step "tests"
ctest --test-dir build/release --output-on-failure -j"$jobs"

step "build (ASan + UBSan)"
cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DNOOK_SANITIZE=ON >/dev/null
cmake --build build/asan -j"$jobs"
step "tests under ASan + UBSan"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build/asan --output-on-failure -j"$jobs"

step "build (ThreadSanitizer)"
cmake -S . -B build/tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNOOK_TSAN=ON >/dev/null
cmake --build build/tsan -j"$jobs"
step "threaded tests under ThreadSanitizer"
# Unit tests (cross-thread posts, start/stop, the allocation test's server thread) and the
# integration tests whose handlers answer from other threads or that stop servers mid-flight.
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  ctest --test-dir build/tsan --output-on-failure -j"$jobs" \
  -R '^unit\.|test_middleware|test_lifecycle|test_streaming|test_h2_clients|test_mw_builtin|test_proxy$'

step "fuzz (${fuzz_seconds}s per harness)"
cmake -S . -B build/fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DNOOK_FUZZ=ON \
  -DNOOK_BUILD_TESTS=OFF -DNOOK_BUILD_EXAMPLES=OFF >/dev/null
cmake --build build/fuzz -j"$jobs"
bash tools/fuzz.sh build/fuzz "$fuzz_seconds"

step "install + consumers"
rm -rf build/prefix
cmake --install build/release --prefix "$root/build/prefix" >/dev/null
timeout 600 bash tests/consumer/run.sh "$root/build/prefix"

if [ "${MBEDTLS3:-1}" != 0 ]; then
  step "build against mbedTLS 3.x"
  flags=$(bash tools/mbedtls3.sh build/mbedtls3)
  # shellcheck disable=SC2086 # the flags are separate words
  cmake -S . -B build/mbedtls3-nook -DCMAKE_BUILD_TYPE=RelWithDebInfo $flags >/dev/null
  cmake --build build/mbedtls3-nook -j"$jobs"
  # Both the headers (the version the tests are told) and the libraries the loader finds.
  grep -q 'NOOK_MBEDTLS_VERSION=3\.' build/mbedtls3-nook/tests/integration/CTestTestfile.cmake &&
    ldd build/mbedtls3-nook/libnook.so | grep -q "$root/build/mbedtls3/tree/.*libmbedtls" ||
    { echo "test.sh: build/mbedtls3-nook did not pick up mbedTLS 3.x" >&2; exit 1; }
  step "tests against mbedTLS 3.x"
  ctest --test-dir build/mbedtls3-nook --output-on-failure -j"$jobs"
  step "TLS tests against mbedTLS 3.x under ASan + UBSan"
  # shellcheck disable=SC2086
  cmake -S . -B build/mbedtls3-asan -DCMAKE_BUILD_TYPE=Debug -DNOOK_SANITIZE=ON $flags >/dev/null
  cmake --build build/mbedtls3-asan -j"$jobs"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build/mbedtls3-asan --output-on-failure -j"$jobs" \
    -R 'unit\.test_tls|test_tls_alpn|test_tls_send|test_idle_sleep|test_proxy$|test_h2_clients|test_soak'
fi

step "all tests passed"
