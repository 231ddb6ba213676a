//! `getsizeof` of the values docs/OBJECTS.md lists, here and in CPython: prints a Markdown
//! table, asking `python3` (if it is on the PATH) for its figures in the same run.
//!
//! Run: `cargo run --release -p pymalloc-objects --example sizes`

use std::process::Command;

use pymalloc_objects::{Dict, Int, List, Obj, Str, getsizeof};

fn main() {
    let cases: Vec<(&str, &str, Obj)> = vec![
        ("`0`", "0", Int::new(0).into()),
        ("`1`", "1", Int::new(1).into()),
        ("`2**100`", "2**100", Int::from_i128(1 << 100).into()),
        ("`\"\"`", "''", Str::new("").into()),
        ("`\"abc\"`", "'abc'", Str::new("abc").into()),
        ("`[]`", "[]", List::new().into()),
        (
            "`[1, 2]`",
            "[1, 2]",
            List::from_objs([Int::new(1).into_obj(), Int::new(2).into_obj()]).into(),
        ),
        ("`[1, 2]` after `.append(3)`", "x=[1, 2]; x.append(3); x", {
            let l = List::from_objs([Int::new(1).into_obj(), Int::new(2).into_obj()]);
            l.append(Int::new(3));
            l.into()
        }),
        ("`{}`", "{}", Dict::new().into()),
        (
            "`{i: i for i in range(10)}`",
            "{i: i for i in range(10)}",
            {
                let d = Dict::new();
                for i in 0..10 {
                    d.set(Int::new(i), Int::new(i)).expect("hashable");
                }
                d.into()
            },
        ),
        (
            "`{str(i): i for i in range(10)}`",
            "{str(i): i for i in range(10)}",
            {
                let d = Dict::new();
                for i in 0..10 {
                    d.set(Str::new(&i.to_string()), Int::new(i))
                        .expect("hashable");
                }
                d.into()
            },
        ),
    ];
    let script: String = cases
        .iter()
        .map(|(_, py, _)| {
            // The last expression of a `;`-separated statement list is the value measured.
            match py.rsplit_once("; ") {
                Some((stmts, last)) => format!("{stmts}\nprint(sys.getsizeof({last}))\n"),
                None => format!("print(sys.getsizeof({py}))\n"),
            }
        })
        .collect();
    let python = Command::new("python3")
        .arg("-c")
        .arg(format!("import sys\n{script}"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        });
    let version = Command::new("python3")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "python3 not found".into());
    println!("| value | pymalloc-objects | {version} |");
    println!("|---|---:|---:|");
    for (i, (label, _, obj)) in cases.iter().enumerate() {
        let theirs = python
            .as_ref()
            .and_then(|v| v.get(i).cloned())
            .unwrap_or_else(|| "–".into());
        println!("| {label} | {} | {theirs} |", getsizeof(obj));
    }
}
