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
for a in glibc pymalloc mimalloc jemalloc freelist; do
    base=$(ir "$a" 0)
    full=$(ir "$a" "$n")
    awk -v a="$a" -v b="$base" -v f="$full" -v n="$n" 'BEGIN { printf "%-10s %.1f\n", a, (f - b) / n }'
done
# The same-thread pair has no locked instruction: PyMalloc's fast paths are inlined into
# `pairs::<PyMalloc>` (everything else it calls is a cold path); count lock-prefixed and
# exchange instructions there.
objdump -d --no-show-raw-insn -C "$exe" > target/fastpath.asm
awk '
    /^[0-9a-f]+ <fastpath::pairs>:/ { inf = 1; body = ""; has = 0; next }
    inf && /^$/ { if (has) { printf "%s", body; exit } inf = 0; next }
    inf { body = body $0 "\n"; if ($0 ~ /PYMALLOC/) has = 1 }' \
    target/fastpath.asm > target/fastpath-pymalloc.asm
locked=$(grep -cE '(^|[[:space:]])lock[[:space:]]|xchg' target/fastpath-pymalloc.asm || true)
echo "locked or exchange instructions in PyMalloc's inlined alloc+free path: $locked" \
    "(of $(wc -l < target/fastpath-pymalloc.asm) instructions)"
