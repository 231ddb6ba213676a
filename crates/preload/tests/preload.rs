//! The shared object as a C program's `malloc`: C programs in `tests/c/` compiled with the
//! system's `cc` and run with `LD_PRELOAD`, and python3 (when present) running on it.
//!
//! This test binary does not link the library (it would replace the test's own `malloc`); it
//! finds the shared object cargo built next to it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `target/<profile>/deps/libpymalloc_preload.so`, which cargo builds with the crate's rlib
/// before this test (beside this test's own executable; `cargo build` copies it one level up).
fn library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let lib = exe.parent().unwrap().join("libpymalloc_preload.so");
    assert!(lib.exists(), "{} not built", lib.display());
    lib
}

/// Compiles `tests/c/<name>.c` into the test's own scratch directory, under a name of the
/// calling test's own (tests run in parallel).
fn compile(name: &str, test: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let exe = out_dir.join(format!("{name}-{test}"));
    let st = Command::new("cc")
        .args(["-O1", "-g", "-Wall", "-Werror", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("a C compiler `cc` (Rust's own linker on Linux)");
    assert!(st.success(), "cc failed on {}", src.display());
    exe
}

fn run_preloaded(cmd: &mut Command) -> Output {
    let out = cmd.env("LD_PRELOAD", library()).output().unwrap();
    if !out.status.success() {
        panic!(
            "{:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn every_entry_point_behaves_as_glibcs() {
    let out = run_preloaded(&mut Command::new(compile("basic", "entry")));
    let s = stdout(&out);
    assert!(s.ends_with("ok\n"), "{s}");
    // The report printed after a million blocks were freed: arenas were used, none is left
    // with a block in use.
    assert!(s.contains("# arenas allocated total"), "{s}");
}

#[test]
fn the_checks_fail_without_the_library() {
    // The C program notices when it is not running on the allocator (so its "ok" means
    // something): without LD_PRELOAD, `pymalloc_owns` is not found.
    let out = Command::new(compile("basic", "without")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("owns != NULL"));
}

#[test]
fn threads_hand_blocks_over_exit_and_outnumber_the_heaps() {
    let out = run_preloaded(&mut Command::new(compile("threads", "threads")));
    assert_eq!(stdout(&out), "ok\n");
}

#[test]
fn glibcs_first_call_made_by_many_threads_at_once() {
    // glibc sets its allocator up on its first call, without a lock. With the library's own
    // early call skipped (`PYMALLOC_LAZY_GLIBC=1`), that first call comes from 32 threads at
    // once, in each of 150 fresh children (tests/c/glibc_first.c). Without the guard, a child
    // crashed in 5 runs out of 5.
    let mut cmd = Command::new(compile("glibc_first", "first"));
    let out = run_preloaded(cmd.env("PYMALLOC_LAZY_GLIBC", "1"));
    assert_eq!(stdout(&out), "ok\n");
}

#[test]
fn fork_while_other_threads_allocate() {
    let out = run_preloaded(&mut Command::new(compile("fork", "fork")));
    assert_eq!(stdout(&out), "ok\n");
}

/// `PYMALLOC_SHOW_STATS=1`: the report on standard error when the process exits (through
/// `exit`; a process that ends with `_exit` runs no destructors).
#[test]
fn the_report_at_exit() {
    let out = run_preloaded(Command::new("true").env("PYMALLOC_SHOW_STATS", "1"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("# arenas allocated total"), "{err}");
    for off in ["0", ""] {
        let out = run_preloaded(Command::new("true").env("PYMALLOC_SHOW_STATS", off));
        assert!(out.stderr.is_empty());
    }
}

/// python3 with `PYTHONMALLOC=malloc`, so that its objects come from our pools: a script that
/// builds and drops containers on several threads and checks, through ctypes, that its
/// objects are in our arenas.
#[test]
fn python_runs_on_it() {
    if Command::new("python3").arg("-c").arg("1").output().is_err() {
        eprintln!("python3 not found: skipped");
        return;
    }
    let script = r#"
import ctypes, json, threading, gc, weakref
lib = ctypes.CDLL(None)
owns = lib.pymalloc_owns
owns.argtypes = [ctypes.c_void_p]
# A float is one malloc'd block, its address its id().
objs = [float(i) + 0.5 for i in range(1000)]
assert all(owns(id(o)) for o in objs), "objects are not in the arenas"
big = bytearray(100000)
def work(k):
    d = {str(i): [i] * (i % 7) for i in range(20000)}
    s = json.dumps(d)
    assert json.loads(s) == d
threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in threads: t.start()
for t in threads: t.join()
class A: pass
a, b = A(), A()
a.b, b.a = b, a
r = weakref.ref(a)
del a, b
assert gc.collect() >= 2 and r() is None
print("ok")
"#;
    let out = run_preloaded(
        Command::new("python3")
            .args(["-c", script])
            .env("PYTHONMALLOC", "malloc"),
    );
    assert_eq!(stdout(&out), "ok\n");
}

/// The allocation paths never reach `__tls_get_addr` (which can call `malloc`): a walk of the
/// shared object's call graph, from each exported entry point through every direct call and
/// tail jump, stopping only at panic machinery (a panic aborts). Fails if the per-thread words
/// go back to Rust's `thread_local!`, which a `cdylib` reaches through `__tls_get_addr`.
#[test]
fn no_allocation_path_calls_tls_get_addr() {
    let out = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(library())
        .output()
        .expect("objdump (binutils)");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // function -> the functions it calls or jumps to
    let mut calls: std::collections::HashMap<String, Vec<String>> = Default::default();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(name) = line
            .strip_suffix(">:")
            .and_then(|l| l.split_once(" <"))
            .map(|(_, n)| n)
        {
            current = name.to_string();
            calls.entry(current.clone()).or_default();
            continue;
        }
        // "  addr:\tmnemonic operands": calls, jumps and conditional jumps (tail calls).
        let mnemonic = line.split('\t').nth(1).unwrap_or("");
        let is_branch = mnemonic.starts_with("call") || mnemonic.starts_with('j');
        if let (true, Some(start)) = (is_branch, line.rfind('<')) {
            let target = line[start + 1..].trim_end_matches('>');
            let target = target.split('+').next().unwrap();
            if target != current {
                calls
                    .entry(current.clone())
                    .or_default()
                    .push(target.to_string());
            }
        }
    }
    let entry = [
        "malloc",
        "free",
        "calloc",
        "realloc",
        "reallocarray",
        "posix_memalign",
        "aligned_alloc",
        "memalign",
        "valloc",
        "pvalloc",
        "malloc_usable_size",
    ];
    for e in entry {
        assert!(calls.contains_key(e), "{e} not found in the disassembly");
    }
    // No function of ours calls it either (in a debug build, `thread_local!` reaches it through
    // a function pointer, which the walk below cannot follow).
    let ours = [
        "8pymalloc",
        "12pymalloc_vmm",
        "12pymalloc_raw",
        "16pymalloc_preload",
    ];
    for (f, callees) in &calls {
        if ours.iter().any(|c| f.contains(c)) {
            assert!(
                !callees.iter().any(|g| g.starts_with("__tls_get_addr")),
                "{f} calls __tls_get_addr"
            );
        }
    }
    let mut seen: std::collections::HashSet<String> = Default::default();
    let mut path: std::collections::HashMap<String, String> = Default::default();
    let mut todo: Vec<String> = entry.iter().map(|s| s.to_string()).collect();
    while let Some(f) = todo.pop() {
        if !seen.insert(f.clone()) || f.contains("panic") {
            continue;
        }
        if f.starts_with("__tls_get_addr") {
            let mut chain = vec![f.clone()];
            while let Some(p) = path.get(chain.last().unwrap()) {
                chain.push(p.clone());
            }
            panic!("an allocation path reaches __tls_get_addr: {chain:?}");
        }
        for g in calls.get(&f).into_iter().flatten() {
            path.entry(g.clone()).or_insert_with(|| f.clone());
            todo.push(g.clone());
        }
    }
    // The walk does reach past the entry points (it sees the pools' slow paths).
    assert!(seen.len() > 20, "only {} functions reached", seen.len());
}

/// A debug build of the shared object (what `cargo test` builds) reports a bad `free` with its
/// address and what is wrong, and aborts, as `PyMalloc`'s `dealloc` does.
#[cfg(debug_assertions)]
#[test]
fn a_debug_build_reports_a_bad_free() {
    let exe = compile("bad_free", "bad");
    for (how, what) in [
        ("interior", "pointer is not the start of a block"),
        ("double", "double free?"),
    ] {
        let out = Command::new(&exe)
            .arg(how)
            .env("LD_PRELOAD", library())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{how}: not reported");
        assert!(
            err.contains("pymalloc: bad free or realloc of 0x"),
            "{how}: {err}"
        );
        assert!(err.contains(what), "{how}: {err}");
    }
}
