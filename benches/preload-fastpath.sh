#!/usr/bin/env bash
# Instructions per malloc+free pair through the C API, for each allocator loaded with
# LD_PRELOAD (glibc: none), counted by callgrind as (Ir with N pairs - Ir with 0 pairs) / N.
# The PLT calls into the shared object are counted too, as a C program pays them.
#   bash benches/preload-fastpath.sh [SIZE] [N]
# mimalloc and jemalloc come from Debian's libmimalloc2.0 and libjemalloc2 when installed.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-64}
n=${2:-100000}
cargo build --release -q -p pymalloc-preload
mkdir -p target/c
cc -O2 -o target/c/pairs benches/c/pairs.c
ir() {
    env ${1:+LD_PRELOAD=$1} valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        target/c/pairs "$size" "$2" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
printf '%-10s %s\n' malloc "instructions per ${size}-byte malloc+free pair (callgrind, N=$n)"
for entry in glibc: pymalloc:target/release/libpymalloc_preload.so \
    mimalloc:/usr/lib/x86_64-linux-gnu/libmimalloc.so.2 \
    jemalloc:/usr/lib/x86_64-linux-gnu/libjemalloc.so.2; do
    name=${entry%%:*} lib=${entry#*:}
    if [ -n "$lib" ] && [ ! -e "$lib" ]; then
        printf '%-10s %s\n' "$name" "(not installed)"
        continue
    fi
    base=$(ir "$lib" 0)
    full=$(ir "$lib" "$n")
    awk -v a="$name" -v b="$base" -v f="$full" -v n="$n" 'BEGIN { printf "%-10s %.1f\n", a, (f - b) / n }'
done
