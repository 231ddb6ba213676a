# What a collection costs python3 per object, the fastest of ROUNDS rounds, for N objects:
# freeing N garbage lists in 2-cycles, and a full collection over N live lists.
# Usage: python3 gc_cost.py N ROUNDS. Prints two lines: ns per object for each.
# Run by the `gcmodule` example and by `cargo bench -p pymalloc-benches --bench gc`.
import gc
import sys
import time

n, rounds = int(sys.argv[1]), int(sys.argv[2])
gc.disable()
# The interpreter's own tracked objects are in every full collection: its time for them
# alone (an empty collection) is taken off, so that what is left is per object measured.
gc.collect()
# The correction is a small part of what is measured only for large N (100 000 and more).
empty = free = live = float("inf")
for _ in range(rounds):
    t = time.perf_counter(); gc.collect(); empty = min(empty, time.perf_counter() - t)
    for _ in range(n // 2):
        a = []; b = [a]; a.append(b)
    del a, b
    t = time.perf_counter(); k = gc.collect(); d = time.perf_counter() - t
    free = min(free, (d - empty) * 1e9 / k)
    keep = [[] for _ in range(n)]
    gc.collect()
    t = time.perf_counter(); gc.collect(); d = time.perf_counter() - t
    live = min(live, (d - empty) * 1e9 / n)
    del keep
print(free)
print(live)
