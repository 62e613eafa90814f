#!/usr/bin/env bash
# Build fio with the libiscsi engine from Debian's fio source package (Debian's binary lacks it).
# Usage: build-fio.sh CACHE_DIR   ->  CACHE_DIR/bin/fio
# Adds a deb-src entry mirroring the machine's own deb entries (own file) when apt has none.
set -euo pipefail

cache=$(realpath -m "${1:?usage: build-fio.sh CACHE_DIR}")
here=$(dirname "$(realpath "$0")")
debsrc=/etc/apt/sources.list.d/ringtgt-deb-src.sources

"$here/apt-ensure.sh" build-essential dpkg-dev pkg-config libiscsi-dev libaio-dev zlib1g-dev

has_deb_src() {
    grep -Eqs '^[[:space:]]*(deb-src[[:space:]]|Types:.*deb-src)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources
}

add_deb_src() {
    local src=/etc/apt/sources.list.d/debian.sources
    if ((EUID != 0)); then
        echo "ringtgt: apt has no deb-src entry; as root, add one (a copy of $src with" \
             "'Types: deb-src') at $debsrc and run 'sudo apt-get update'" >&2
        exit 1
    fi
    [[ -r $src ]] || { echo "ringtgt: $src not found; add a deb-src entry by hand" >&2; exit 1; }
    # Keep only the 'Types: deb' stanzas (blank-line separated), retyped as deb-src.
    awk 'BEGIN { RS = ""; ORS = "\n\n" } /(^|\n)Types: deb(\n|$)/ { sub(/Types: deb/, "Types: deb-src"); print }' \
        "$src" > "$debsrc"
    echo "ringtgt: added $debsrc; apt-get update" >&2
    apt-get update
}

has_deb_src || add_deb_src

mkdir -p "$cache/src" "$cache/bin"
cd "$cache/src"
srcdir=$(find . -maxdepth 1 -type d -name 'fio-*' | head -n1)
if [[ -z $srcdir ]]; then
    apt-get source fio
    srcdir=$(find . -maxdepth 1 -type d -name 'fio-*' | head -n1)
fi
cd "$srcdir"

./configure --enable-libiscsi | tee configure.log
grep -Eq '^iscsi engine +yes' configure.log ||
    { echo "ringtgt: fio configure did not enable the libiscsi engine (see $PWD/configure.log)" >&2; exit 1; }
make -j"$(nproc)"

./fio --enghelp=libiscsi >/dev/null ||
    { echo "ringtgt: built fio has no libiscsi engine" >&2; exit 1; }
install -m 0755 fio "$cache/bin/fio.tmp"
mv "$cache/bin/fio.tmp" "$cache/bin/fio"
echo "ringtgt: fio with libiscsi engine at $cache/bin/fio" >&2
