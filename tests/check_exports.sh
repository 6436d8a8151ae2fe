#!/usr/bin/env bash
# Fails if the shared library exports any symbol that does not start with nook_, or lacks the
# expected SONAME.
set -euo pipefail
lib=$1
bad=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -v '^nook_' || true)
if [ -n "$bad" ]; then
  echo "exported symbols without the nook_ prefix:"; echo "$bad"; exit 1
fi
soname=$(objdump -p "$lib" | awk '/SONAME/ {print $2}')
[ "$soname" = "libnook.so.0" ] || { echo "SONAME is '$soname', expected libnook.so.0"; exit 1; }
echo "exports: $(nm -D --defined-only "$lib" | wc -l) symbols, all nook_*; SONAME $soname"
echo "1 passed, 0 failed"
