//! Smoke test: every workload at a tiny scale, in-process under the default allocator and as
//! the `workload-glibc` program, so the suite cannot silently rot. No timing is asserted.

use std::path::PathBuf;
use std::process::Command;

use pymalloc_benches::measure::{self, Record};
use pymalloc_benches::workloads::{self, Params};

const SCALE: f64 = 0.002;

fn in_process(name: &str, threads: usize) -> Record {
    let w = workloads::find(name).unwrap();
    let p = Params {
        threads,
        scale: SCALE,
    };
    measure::run(w.name, "default", threads, SCALE, |probe| {
        (w.run)(&p, probe)
    })
}

#[test]
fn every_workload_runs_and_agrees_with_itself() {
    for w in workloads::ALL {
        let a = in_process(w.name, 2);
        let b = in_process(w.name, 2);
        assert!(a.ops > 0, "{}: no work done", w.name);
        assert_eq!(
            a.checksum, b.checksum,
            "{}: checksum is not deterministic",
            w.name
        );
        if let Some(expected) = workloads::expected_checksum(
            w.name,
            &Params {
                threads: 2,
                scale: SCALE,
            },
        ) {
            assert_eq!(a.checksum, expected, "{}: wrong answer", w.name);
        }
        // The line a program prints parses back to the same line.
        let line = a.line();
        assert_eq!(
            Record::parse(&line).map(|r| r.line()),
            Some(line),
            "{}",
            w.name
        );
    }
}

#[test]
fn binary_trees_checksum_is_independent_of_threads() {
    let one = in_process("binary-trees", 1);
    let three = in_process("binary-trees", 3);
    assert_eq!(one.checksum, three.checksum);
    assert_eq!(
        one.checksum,
        workloads::expected_checksum(
            "binary-trees",
            &Params {
                threads: 1,
                scale: SCALE
            }
        )
        .unwrap()
    );
}

/// `cargo test` builds the examples next to the test binaries: target/<profile>/examples.
fn program(alloc: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    profile_dir
        .join("examples")
        .join(format!("workload-{alloc}"))
}

#[test]
fn the_programs_print_one_parsable_line_each() {
    for alloc in ["glibc", "pymalloc"] {
        let exe = program(alloc);
        assert!(exe.exists(), "{} not built", exe.display());
        for w in workloads::ALL {
            let out = Command::new(&exe)
                .args([w.name, "--threads", "2", "--scale", &SCALE.to_string()])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{alloc} {}: {}",
                w.name,
                String::from_utf8_lossy(&out.stderr)
            );
            let lines: Vec<&str> = stdout.lines().collect();
            assert_eq!(lines.len(), 1, "{alloc} {}: {stdout}", w.name);
            let r = Record::parse(lines[0]).unwrap_or_else(|| panic!("unparsable: {}", lines[0]));
            assert_eq!(
                (r.workload.as_str(), r.alloc.as_str(), r.threads),
                (w.name, alloc, 2)
            );
            assert!(r.peak_rss_kib > 0 && r.rss_freed_kib > 0 && r.ops > 0);
            let same = in_process(w.name, 2);
            assert_eq!(
                r.checksum, same.checksum,
                "{alloc} {}: answer differs in-process",
                w.name
            );
        }
    }
}

#[test]
fn bad_arguments_are_refused() {
    let out = Command::new(program("glibc"))
        .arg("no-such-workload")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}
