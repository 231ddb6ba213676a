//! Measuring a run and reporting it as one machine-readable line.
//!
//! ```text
//! RESULT workload=larson alloc=pymalloc threads=2 scale=1 wall_s=0.8123 cpu_s=1.5901
//!        peak_rss_kib=10432 rss_live_kib=9876 rss_freed_kib=3120 ops=2000000
//!        live_bytes=1024000 checksum=123456789
//! ```
//! (one line in reality). `live_bytes` is `-` where a workload does not know it.

use std::fmt::Write as _;
use std::time::Instant;

/// What a workload reports about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Operations performed (the unit is the workload's own: replacements, blocks, nodes...).
    pub ops: u64,
    /// A value derived from the data the workload verified; the same for every allocator.
    pub checksum: u64,
}

/// Handed to a workload so it can mark the moment its live set is largest, just before it
/// frees it: the RSS is read there, and the live bytes recorded if the workload knows them.
#[derive(Debug, Default)]
pub struct Probe {
    rss_live: Option<usize>,  // bytes
    live_bytes: Option<u64>,  // bytes requested by the live set, if known
    rss_freed: Option<usize>, // bytes, if the workload marks its own "after free" point
}

impl Probe {
    /// Records the RSS now (the live point) and, if known, the bytes the program holds.
    pub fn live(&mut self, live_bytes: Option<u64>) {
        self.rss_live = pymalloc_vmm::resident_bytes();
        self.live_bytes = live_bytes;
    }

    /// Records the RSS now as the "after free" figure, for a workload whose free phase ends
    /// with some objects still alive; otherwise it is read after the workload returns.
    pub fn freed(&mut self) {
        self.rss_freed = pymalloc_vmm::resident_bytes();
    }
}

/// A run's measurements.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Workload name.
    pub workload: String,
    /// Allocator name.
    pub alloc: String,
    /// Threads used.
    pub threads: usize,
    /// Scale factor (1 = the full run).
    pub scale: f64,
    /// Wall-clock seconds.
    pub wall_s: f64,
    /// User + system CPU seconds.
    pub cpu_s: f64,
    /// Peak resident set, KiB (`getrusage` `ru_maxrss`).
    pub peak_rss_kib: u64,
    /// Resident set at the live point, KiB.
    pub rss_live_kib: u64,
    /// Resident set after everything was freed, KiB.
    pub rss_freed_kib: u64,
    /// The workload's operation count.
    pub ops: u64,
    /// Bytes the live set held, when known.
    pub live_bytes: Option<u64>,
    /// The workload's checksum.
    pub checksum: u64,
}

impl Record {
    /// The one-line form printed by the workload programs.
    pub fn line(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "RESULT workload={} alloc={} threads={} scale={} wall_s={:.4} cpu_s={:.4} \
             peak_rss_kib={} rss_live_kib={} rss_freed_kib={} ops={} live_bytes={} checksum={}",
            self.workload,
            self.alloc,
            self.threads,
            self.scale,
            self.wall_s,
            self.cpu_s,
            self.peak_rss_kib,
            self.rss_live_kib,
            self.rss_freed_kib,
            self.ops,
            self.live_bytes.map_or("-".to_string(), |b| b.to_string()),
            self.checksum
        );
        s
    }

    /// Parses a line made by [`Record::line`]; `None` if it is not one.
    pub fn parse(line: &str) -> Option<Record> {
        let rest = line.trim().strip_prefix("RESULT ")?;
        let mut r = Record {
            workload: String::new(),
            alloc: String::new(),
            threads: 0,
            scale: 0.0,
            wall_s: 0.0,
            cpu_s: 0.0,
            peak_rss_kib: 0,
            rss_live_kib: 0,
            rss_freed_kib: 0,
            ops: 0,
            live_bytes: None,
            checksum: 0,
        };
        let mut seen = 0;
        for field in rest.split_whitespace() {
            let (k, v) = field.split_once('=')?;
            seen += 1;
            match k {
                "workload" => r.workload = v.to_string(),
                "alloc" => r.alloc = v.to_string(),
                "threads" => r.threads = v.parse().ok()?,
                "scale" => r.scale = v.parse().ok()?,
                "wall_s" => r.wall_s = v.parse().ok()?,
                "cpu_s" => r.cpu_s = v.parse().ok()?,
                "peak_rss_kib" => r.peak_rss_kib = v.parse().ok()?,
                "rss_live_kib" => r.rss_live_kib = v.parse().ok()?,
                "rss_freed_kib" => r.rss_freed_kib = v.parse().ok()?,
                "ops" => r.ops = v.parse().ok()?,
                "live_bytes" => {
                    r.live_bytes = if v == "-" {
                        None
                    } else {
                        Some(v.parse().ok()?)
                    }
                }
                "checksum" => r.checksum = v.parse().ok()?,
                _ => return None,
            }
        }
        (seen == 12).then_some(r)
    }
}

/// User + system CPU seconds of this process so far, and its peak RSS in KiB.
fn rusage() -> (f64, u64) {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    (secs(ru.ru_utime) + secs(ru.ru_stime), ru.ru_maxrss as u64)
}

/// Runs `f` and measures it.
pub fn run(
    workload: &str,
    alloc: &str,
    threads: usize,
    scale: f64,
    f: impl FnOnce(&mut Probe) -> Outcome,
) -> Record {
    let mut probe = Probe::default();
    let (cpu0, _) = rusage();
    let t0 = Instant::now();
    let outcome = f(&mut probe);
    let wall_s = t0.elapsed().as_secs_f64();
    let (cpu1, peak_rss_kib) = rusage();
    let rss_freed = probe
        .rss_freed
        .or_else(pymalloc_vmm::resident_bytes)
        .unwrap_or(0);
    Record {
        workload: workload.to_string(),
        alloc: alloc.to_string(),
        threads,
        scale,
        wall_s,
        cpu_s: cpu1 - cpu0,
        peak_rss_kib,
        rss_live_kib: (probe.rss_live.unwrap_or(0) / 1024) as u64,
        rss_freed_kib: (rss_freed / 1024) as u64,
        ops: outcome.ops,
        live_bytes: probe.live_bytes,
        checksum: outcome.checksum,
    }
}

/// The `main` of every per-allocator workload program:
/// `workload-<alloc> <WORKLOAD> [--threads T] [--scale S]`, or `--list`.
pub fn program_main(alloc: &str) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut threads = 2;
    let mut scale: f64 = 1.0;
    let mut name = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--threads" => threads = it.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            "--scale" => scale = it.next().and_then(|v| v.parse().ok()).unwrap_or(-1.0),
            "--list" => {
                for w in crate::workloads::ALL {
                    println!("{:<14} {}", w.name, w.stresses);
                }
                return;
            }
            other => name = Some(other.to_string()),
        }
    }
    let Some(w) = name.as_deref().and_then(crate::workloads::find) else {
        eprintln!("usage: workload-{alloc} <WORKLOAD> [--threads T] [--scale S]   (--list)");
        std::process::exit(2);
    };
    if threads == 0 || scale.is_nan() || scale <= 0.0 {
        eprintln!("--threads must be >= 1 and --scale > 0");
        std::process::exit(2);
    }
    let params = crate::workloads::Params { threads, scale };
    let record = run(w.name, alloc, threads, scale, |probe| {
        (w.run)(&params, probe)
    });
    println!("{}", record.line());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_parses_back() {
        let r = Record {
            workload: "larson".into(),
            alloc: "pymalloc".into(),
            threads: 2,
            scale: 0.5,
            wall_s: 1.25,
            cpu_s: 2.5,
            peak_rss_kib: 100,
            rss_live_kib: 90,
            rss_freed_kib: 10,
            ops: 12345,
            live_bytes: Some(999),
            checksum: 42,
        };
        assert_eq!(Record::parse(&r.line()), Some(r.clone()));
        let none = Record {
            live_bytes: None,
            ..r
        };
        assert_eq!(Record::parse(&none.line()), Some(none));
        assert_eq!(Record::parse("RESULT workload=x"), None);
        assert_eq!(Record::parse("something else"), None);
    }
}
