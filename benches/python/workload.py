"""Allocation-heavy Python, for comparing the C malloc under python3 (see compare.py).

Usage: python3 workload.py NAME SCALE
Prints one line: NAME seconds max_rss_kib. The time covers the work only (not start-up).
"""
import json
import resource
import sys
import threading
import time


def binary_trees(scale):
    # The Computer Language Benchmarks Game's binary-trees, with tuples.
    def make(d):
        return (make(d - 1), make(d - 1)) if d else (None, None)

    def check(t):
        return 1 + check(t[0]) + check(t[1]) if t[0] is not None else 1

    depth = 15 + scale
    long_lived = make(depth)
    total = 0
    for d in range(4, depth + 1, 2):
        for _ in range(2 ** (depth - d)):
            total += check(make(d))
    return total + check(long_lived)


def json_roundtrip(scale):
    doc = {
        str(i): {"name": "item%d" % i, "tags": ["a", "b", str(i)], "v": i * 1.5}
        for i in range(20000 * scale)
    }
    n = 0
    for _ in range(5):
        s = json.dumps(doc)
        n += len(json.loads(s))
    return n


class Node:
    def __init__(self, key, parent):
        self.key = key
        self.parent = parent
        self.children = []


def objects(scale):
    # Instances with attribute dicts, lists growing, strings built and dropped.
    n = 0
    for _ in range(4 * scale):
        root = Node("root", None)
        level = [root]
        for depth in range(5):
            nxt = []
            for p in level:
                for k in range(8):
                    c = Node("%s.%d" % (p.key, k), p)
                    p.children.append(c)
                    nxt.append(c)
            level = nxt
        n += len(level)
        for c in level:
            c.parent = None
    return n


def threads(scale):
    # Two threads building and dropping dicts, lists and strings: the allocator under
    # (GIL-serialised) contention and cross-thread frees of what the other thread made.
    shared = []
    lock = threading.Lock()

    def work(seed):
        out = 0
        for r in range(100 * scale):
            d = {("k%d-%d" % (seed, i)): [i, str(i)] for i in range(2000)}
            with lock:
                shared.append(d)
                if len(shared) > 4:
                    shared.pop(0)  # often the other thread's
            out += len(d)
        return out

    ts = [threading.Thread(target=work, args=(s,)) for s in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return len(shared)


WORKLOADS = {
    "binary-trees": binary_trees,
    "json": json_roundtrip,
    "objects": objects,
    "threads": threads,
}

if __name__ == "__main__":
    name, scale = sys.argv[1], int(sys.argv[2])
    t0 = time.perf_counter()
    WORKLOADS[name](scale)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(name, "%.4f" % dt, rss)
