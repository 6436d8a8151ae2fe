#!/usr/bin/env bash
# Builds and runs tests/consumer/consumer.c against nook installed under PREFIX:
# once with pkg-config, once with CMake's find_package (shared and static targets).
#   tests/consumer/run.sh PREFIX
set -euo pipefail
prefix=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
libdir=$(dirname "$(find "$prefix" -name nook.pc | head -n 1)")/..

echo "consumer: SONAME $(objdump -p "$libdir/libnook.so" | awk '/SONAME/ {print $2}')"

export PKG_CONFIG_PATH="$libdir/pkgconfig"
cc -Wall -Werror -o "$work/consumer_pc" "$here/consumer.c" $(pkg-config --cflags --libs nook) \
  -Wl,-rpath,"$libdir"
"$work/consumer_pc"
echo "consumer: pkg-config build ok"

cmake -S "$here" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_RPATH="$libdir" >/dev/null
cmake --build "$work/cmake" >/dev/null
"$work/cmake/consumer_shared"
"$work/cmake/consumer_static"
if ldd "$work/cmake/consumer_static" | grep -q libnook; then
  echo "consumer: the static build links libnook.so dynamically"; exit 1
fi
echo "consumer: find_package builds ok (shared and static)"
