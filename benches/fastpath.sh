#!/usr/bin/env bash
# Instructions per alloc+free pair on the fast path, for each allocator, counted by callgrind:
# (Ir with N pairs - Ir with 0 pairs) / N. Repeatable on a noisy machine.
#   bash benches/fastpath.sh [SIZE] [N]
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-64}
n=${2:-100000}
cargo build --release -q -p pymalloc-benches --example fastpath
exe=target/release/examples/fastpath
ir() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$exe" "$1" "$size" "$2" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
printf '%-10s %s\n' allocator "instructions per ${size}-byte alloc+free pair (callgrind, N=$n)"
for a in glibc pymalloc mimalloc jemalloc; do
    base=$(ir "$a" 0)
    full=$(ir "$a" "$n")
    awk -v a="$a" -v b="$base" -v f="$full" -v n="$n" 'BEGIN { printf "%-10s %.1f\n", a, (f - b) / n }'
done
