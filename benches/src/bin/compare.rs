//! The benchmark runner: builds one workload program per allocator, runs them interleaved
//! (A B C D, A B C D, ...) so that machine noise hits every allocator alike, and prints the
//! medians, the spread, and PyMalloc's ratio to each peer.
//!
//! ```text
//! cargo run --release -p pymalloc-benches --bin compare -- \
//!     [--runs N] [--threads T] [--quick] [--scale S] [--markdown] [WORKLOAD...]
//! ```
//!
//! `--markdown` also writes the tables into `docs/BENCHMARKS.md`, between the
//! `<!-- results:begin -->` and `<!-- results:end -->` markers, with the machine, the date, the
//! commit and the exact command.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pymalloc_benches::measure::Record;
use pymalloc_benches::workloads;

const ALLOCATORS: [&str; 4] = ["glibc", "pymalloc", "mimalloc", "jemalloc"];
const OURS: &str = "pymalloc";

struct Options {
    runs: usize,
    threads: usize,
    scale: f64,
    markdown: bool,
    workloads: Vec<&'static str>,
}

fn usage() -> ! {
    eprintln!(
        "usage: compare [--runs N] [--threads T] [--quick] [--scale S] [--markdown] [WORKLOAD...]\n\
         workloads: {}",
        workloads::ALL
            .iter()
            .map(|w| w.name)
            .collect::<Vec<_>>()
            .join(" ")
    );
    std::process::exit(2);
}

fn parse_args() -> Options {
    let mut o = Options {
        runs: 3,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        scale: 1.0,
        markdown: false,
        workloads: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> String {
            args.next().unwrap_or_else(|| {
                eprintln!("{name} needs a value");
                usage()
            })
        };
        match a.as_str() {
            "--runs" => o.runs = value("--runs").parse().unwrap_or_else(|_| usage()),
            "--threads" => o.threads = value("--threads").parse().unwrap_or_else(|_| usage()),
            "--scale" => o.scale = value("--scale").parse().unwrap_or_else(|_| usage()),
            "--quick" => {
                o.scale = 0.1;
                o.runs = o.runs.min(2);
            }
            "--markdown" => o.markdown = true,
            "-h" | "--help" => usage(),
            name => match workloads::find(name) {
                Some(w) => o.workloads.push(w.name),
                None => {
                    eprintln!("unknown workload {name:?}");
                    usage()
                }
            },
        }
    }
    if o.runs == 0 || o.threads == 0 || o.scale <= 0.0 {
        usage();
    }
    if o.workloads.is_empty() {
        o.workloads = workloads::ALL.iter().map(|w| w.name).collect();
    }
    o
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ has a parent")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

fn build() {
    eprintln!(
        "building the workload programs (cargo build --release -p pymalloc-benches --examples)"
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "pymalloc-benches", "--examples"])
        .current_dir(workspace_root())
        .status()
        .expect("run cargo");
    if !status.success() {
        eprintln!("build failed");
        std::process::exit(1);
    }
}

/// One run of one program; `Err` carries what went wrong.
fn run_one(alloc: &str, workload: &str, o: &Options) -> Result<Record, String> {
    let exe = target_dir()
        .join("release/examples")
        .join(format!("workload-{alloc}"));
    let out = Command::new(&exe)
        .args([
            workload,
            "--threads",
            &o.threads.to_string(),
            "--scale",
            &o.scale.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{}: {}",
            out.status,
            stderr.lines().take(3).collect::<Vec<_>>().join(" | ")
        ));
    }
    stdout
        .lines()
        .find_map(Record::parse)
        .ok_or_else(|| "no RESULT line".to_string())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median and relative spread ((max - min) / median) of a field over runs.
fn stat(records: &[Record], f: impl Fn(&Record) -> f64) -> (f64, f64) {
    let v: Vec<f64> = records.iter().map(f).collect();
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let m = median(v);
    (m, if m > 0.0 { (hi - lo) / m } else { 0.0 })
}

fn mib(kib: f64) -> String {
    format!("{:.1}", kib / 1024.0)
}

struct Summary {
    workload: &'static str,
    per_alloc: Vec<(String, Vec<Record>, Vec<String>)>, // alloc, successful runs, failures
    checksum_ok: bool,
}

fn main() {
    let o = parse_args();
    build();
    let total = o.runs * o.workloads.len() * ALLOCATORS.len();
    let mut results: Vec<Summary> = o
        .workloads
        .iter()
        .map(|&w| Summary {
            workload: w,
            per_alloc: ALLOCATORS
                .iter()
                .map(|a| (a.to_string(), Vec::new(), Vec::new()))
                .collect(),
            checksum_ok: true,
        })
        .collect();
    let mut done = 0;
    for run in 0..o.runs {
        for s in &mut results {
            for (alloc, records, failures) in &mut s.per_alloc {
                done += 1;
                eprint!(
                    "\r[{done:>3}/{total}] run {}/{}  {:<14} {:<9}",
                    run + 1,
                    o.runs,
                    s.workload,
                    alloc
                );
                match run_one(alloc, s.workload, &o) {
                    Ok(r) => records.push(r),
                    Err(e) => failures.push(e),
                }
            }
        }
    }
    eprintln!("\r{:<60}", "done");
    for s in &mut results {
        let sums: Vec<u64> = s
            .per_alloc
            .iter()
            .flat_map(|(_, r, _)| r.iter().map(|x| x.checksum))
            .collect();
        s.checksum_ok = sums.windows(2).all(|w| w[0] == w[1]);
    }
    let text = report(&o, &results);
    print!("{text}");
    if o.markdown {
        write_markdown(&o, &text);
    }
    let failed = results
        .iter()
        .any(|s| !s.checksum_ok || s.per_alloc.iter().any(|(_, _, f)| !f.is_empty()));
    if failed {
        std::process::exit(1);
    }
}

fn report(o: &Options, results: &[Summary]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{} run(s) per allocator, interleaved; {} thread(s); scale {}. Medians; spread = (max - min) / median.\n",
        o.runs, o.threads, o.scale
    );
    let _ = writeln!(
        t,
        "| workload | allocator | wall s | spread | cpu s | peak RSS MiB | RSS live MiB | RSS after free MiB |"
    );
    let _ = writeln!(t, "|---|---|---:|---:|---:|---:|---:|---:|");
    for s in results {
        for (alloc, records, failures) in &s.per_alloc {
            if records.is_empty() {
                let why = failures.first().map_or("no runs", String::as_str);
                let _ = writeln!(
                    t,
                    "| {} | {} | FAILED: {} | | | | | |",
                    s.workload,
                    alloc,
                    why.replace('|', "/")
                );
                continue;
            }
            let (wall, spread) = stat(records, |r| r.wall_s);
            let (cpu, _) = stat(records, |r| r.cpu_s);
            let (peak, _) = stat(records, |r| r.peak_rss_kib as f64);
            let (live, _) = stat(records, |r| r.rss_live_kib as f64);
            let (freed, _) = stat(records, |r| r.rss_freed_kib as f64);
            let mark = if alloc == OURS { "**" } else { "" };
            let _ = writeln!(
                t,
                "| {} | {mark}{alloc}{mark} | {wall:.3} | {:.0}% | {cpu:.3} | {} | {} | {} |",
                s.workload,
                spread * 100.0,
                mib(peak),
                mib(live),
                mib(freed)
            );
        }
        if !s.checksum_ok {
            let _ = writeln!(
                t,
                "| {} | CHECKSUM MISMATCH between allocators | | | | | | |",
                s.workload
            );
        }
    }
    // Ratios: ours / peer, per workload, and their geometric mean.
    let _ = writeln!(
        t,
        "\nPyMalloc / peer (below 1.00 means PyMalloc is faster or smaller):\n"
    );
    let peers: Vec<&str> = ALLOCATORS.iter().copied().filter(|&a| a != OURS).collect();
    let _ = write!(t, "| workload |");
    for p in &peers {
        let _ = write!(t, " time / {p} | peak RSS / {p} | RSS after free / {p} |");
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "|---|{}", "---:|".repeat(3 * peers.len()));
    let mut logs = vec![[0.0f64; 3]; peers.len()];
    let mut counted = vec![0usize; peers.len()];
    let pick = |s: &Summary, a: &str| {
        s.per_alloc
            .iter()
            .find(|(n, r, _)| n == a && !r.is_empty())
            .map(|(_, r, _)| r.clone())
    };
    for s in results {
        let Some(ours) = pick(s, OURS) else { continue };
        let _ = write!(t, "| {} |", s.workload);
        for (i, p) in peers.iter().enumerate() {
            let Some(theirs) = pick(s, p) else {
                let _ = write!(t, " - | - | - |");
                continue;
            };
            let fields: [fn(&Record) -> f64; 3] = [
                |r| r.wall_s,
                |r| r.peak_rss_kib as f64,
                |r| r.rss_freed_kib as f64,
            ];
            for (k, f) in fields.iter().enumerate() {
                let ratio = stat(&ours, f).0 / stat(&theirs, f).0.max(1e-9);
                logs[i][k] += ratio.ln();
                let _ = write!(t, " {ratio:.2} |");
            }
            counted[i] += 1;
        }
        let _ = writeln!(t);
    }
    let _ = write!(t, "| **geometric mean** |");
    for (sums, &n) in logs.iter().zip(&counted) {
        for &sum in sums {
            let g = if n > 0 {
                (sum / n as f64).exp()
            } else {
                f64::NAN
            };
            let _ = write!(t, " **{g:.2}** |");
        }
    }
    let _ = writeln!(t);
    let failures: Vec<String> = results
        .iter()
        .flat_map(|s| {
            s.per_alloc.iter().flat_map(move |(a, _, f)| {
                f.iter().map(move |e| format!("{} / {a}: {e}", s.workload))
            })
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(t, "\nFailed runs:");
        for f in failures {
            let _ = writeln!(t, "- {f}");
        }
    }
    t
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .current_dir(workspace_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn write_markdown(o: &Options, tables: &str) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut commit = command_output("git", &["rev-parse", "--short", "HEAD"]);
    if !command_output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        commit.push_str(" (with uncommitted changes)");
    }
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut section = String::new();
    let _ = writeln!(section, "<!-- results:begin -->");
    let _ = writeln!(
        section,
        "Machine: {cpu}, {cores} cores. Date: {date}. Commit: `{commit}`.\n"
    );
    let _ = writeln!(
        section,
        "Command: `cargo run --release -p pymalloc-benches --bin compare -- {}`\n",
        args.join(" ")
    );
    let _ = writeln!(section, "{tables}");
    let _ = write!(section, "<!-- results:end -->");
    let path = workspace_root().join("docs/BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let new = match (
        old.find("<!-- results:begin -->"),
        old.find("<!-- results:end -->"),
    ) {
        (Some(b), Some(e)) if b < e => {
            format!(
                "{}{}{}",
                &old[..b],
                section,
                &old[e + "<!-- results:end -->".len()..]
            )
        }
        _ => format!("{old}\n## Results\n\n{section}\n"),
    };
    if let Err(e) = std::fs::write(&path, new) {
        eprintln!("could not write {}: {e}", path.display());
        std::process::exit(1);
    }
    eprintln!(
        "wrote the results into {} (scale {}, {} runs)",
        path.display(),
        o.scale,
        o.runs
    );
}
