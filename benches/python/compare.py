"""python3 on each C malloc, side by side in one run: glibc's own, CPython's built-in pymalloc
over glibc ("builtin", PYTHONMALLOC=pymalloc), pymalloc-rs preloaded
(target/release/libpymalloc_preload.so), and mimalloc and jemalloc when their Debian packages
are installed (libmimalloc2.0, libjemalloc2).

    cargo build --release -p pymalloc-preload
    python3 benches/python/compare.py [--runs N] [--scale S] [--pythonmalloc malloc|pymalloc]

Runs are interleaved (every allocator once, then again) and each is a fresh process; the table
gives medians of the work's time and of the peak RSS, and each as a ratio to glibc.
"""
import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# (name, library to preload, PYTHONMALLOC override). "builtin" is CPython's own pymalloc (its
# objects never reach malloc), on glibc: the allocator python3 ships with, for reference.
PEERS = [
    ("glibc", None),
    ("builtin", None),
    ("pymalloc", os.path.join(ROOT, "target/release/libpymalloc_preload.so")),
    ("mimalloc", "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2"),
    ("jemalloc", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
]
WORKLOADS = ["binary-trees", "json", "objects", "threads"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--pythonmalloc", default="malloc", choices=["malloc", "pymalloc"])
    args = ap.parse_args()
    peers = []
    for name, lib in PEERS:
        if name == "builtin" and args.pythonmalloc == "pymalloc":
            continue  # the same as glibc then
        if lib is not None and not os.path.exists(lib):
            if name == "pymalloc":
                sys.exit("build it first: cargo build --release -p pymalloc-preload")
            print("# %s: %s not found, left out" % (name, lib))
            continue
        peers.append((name, lib))
    results = {(w, p): ([], []) for w in WORKLOADS for p, _ in peers}
    for _ in range(args.runs):
        for w in WORKLOADS:
            for name, lib in peers:
                mode = "pymalloc" if name == "builtin" else args.pythonmalloc
                env = dict(os.environ, PYTHONMALLOC=mode)
                env.pop("LD_PRELOAD", None)
                if lib:
                    env["LD_PRELOAD"] = lib
                out = subprocess.run(
                    [sys.executable, os.path.join(HERE, "workload.py"), w, str(args.scale)],
                    env=env, check=True, capture_output=True, text=True,
                ).stdout.split()
                results[(w, name)][0].append(float(out[1]))
                results[(w, name)][1].append(int(out[2]) / 1024)
    print("# python %s, PYTHONMALLOC=%s, %d runs, scale %d: medians; ratio to glibc"
          % (sys.version.split()[0], args.pythonmalloc, args.runs, args.scale))
    print("%-13s %-9s %9s %7s %11s %7s" % ("workload", "alloc", "time s", "ratio", "peak MiB", "ratio"))
    geo = {name: [1.0, 1.0] for name, _ in peers}
    for w in WORKLOADS:
        base_t = statistics.median(results[(w, "glibc")][0])
        base_m = statistics.median(results[(w, "glibc")][1])
        for name, _ in peers:
            t = statistics.median(results[(w, name)][0])
            m = statistics.median(results[(w, name)][1])
            geo[name][0] *= t / base_t
            geo[name][1] *= m / base_m
            print("%-13s %-9s %9.3f %7.2f %11.1f %7.2f" % (w, name, t, t / base_t, m, m / base_m))
    k = len(WORKLOADS)
    for name, _ in peers:
        print("%-13s %-9s %9s %7.2f %11s %7.2f"
              % ("geomean", name, "", geo[name][0] ** (1 / k), "", geo[name][1] ** (1 / k)))


if __name__ == "__main__":
    main()
