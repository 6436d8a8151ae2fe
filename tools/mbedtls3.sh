#!/usr/bin/env bash
# Fetches mbedTLS 3.x (headers and libraries) from Debian 13 (trixie) into DIR, without
# installing anything, so that nook can be built and tested against it on Debian 12, whose own
# packages stop at 2.28:
#
#   bash tools/mbedtls3.sh DIR      # prints the cmake flags that select DIR's mbedTLS
#
# Every file is checked before use: trixie's InRelease against Debian's archive keyring (gpgv),
# the package index against InRelease's SHA-256, each .deb against the index's.
set -euo pipefail

dir=${1:?usage: tools/mbedtls3.sh DIR}
mirror=${NOOK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=trixie
arch=$(dpkg --print-architecture)
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
mkdir -p "$dir/debs" "$dir/tree"
cd "$dir"

fetch() { curl -fsS --retry 3 --max-time 300 -o "$2" "$1"; }

# The SHA-256 a Debian index lists for PATH (Release files: "hash size path").
release_sha256() {
  awk -v p="$1" '/^SHA256:/ {on = 1; next} /^[^ ]/ {on = 0} on && $3 == p {print $1}' InRelease
}

fetch "$mirror/dists/$suite/InRelease" InRelease
gpgv --keyring "$keyring" InRelease 2>/dev/null ||
  { echo "mbedtls3.sh: $suite's InRelease has no valid signature" >&2; exit 1; }

index=main/binary-$arch/Packages.xz
want=$(release_sha256 "$index")
[ -n "$want" ] || { echo "mbedtls3.sh: $index is not in InRelease" >&2; exit 1; }
fetch "$mirror/dists/$suite/$index" Packages.xz
echo "$want  Packages.xz" | sha256sum -c --quiet
xz -dc Packages.xz > Packages

# One field of one package's stanza.
field() {
  awk -v pkg="$1" -v f="$2:" '$1 == "Package:" {on = ($2 == pkg)} on && $1 == f {
    sub(/^[^:]*: /, ""); print; exit}' Packages
}

# libmbedtls-dev and the three runtime libraries it depends on (names carry their SONAMEs).
pkgs="libmbedtls-dev $(field libmbedtls-dev Depends | tr ',' '\n' | awk '{print $1}')"
for p in $pkgs; do
  file=$(field "$p" Filename)
  sum=$(field "$p" SHA256)
  [ -n "$file" ] && [ -n "$sum" ] || { echo "mbedtls3.sh: $p is not in $suite" >&2; exit 1; }
  deb=debs/$(basename "$file")
  [ -f "$deb" ] || fetch "$mirror/$file" "$deb"
  echo "$sum  $deb" | sha256sum -c --quiet
  dpkg-deb -x "$deb" tree
done

inc=$PWD/tree/usr/include
lib=$(dirname "$(find "$PWD/tree/usr/lib" -name libmbedtls.so | head -n 1)")
grep -q '#define MBEDTLS_VERSION_MAJOR  *3' "$inc/mbedtls/build_info.h" ||
  { echo "mbedtls3.sh: $suite's mbedTLS is not 3.x" >&2; exit 1; }
echo "-DMBEDTLS_INCLUDE_DIR=$inc -DMBEDTLS_LIBRARY=$lib/libmbedtls.so" \
  "-DMBEDX509_LIBRARY=$lib/libmbedx509.so -DMBEDCRYPTO_LIBRARY=$lib/libmbedcrypto.so"
