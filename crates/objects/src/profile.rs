//! A line-by-line memory profile in the shape of memory_profiler's `@profile` table, with
//! pymalloc's view of the same steps beside it.
//!
//! The caller names each step with a line number and its source text and runs it through
//! [`Profile::line`]. Before and after a step the profile reads two figures:
//! - the process's resident set (RSS, from `/proc/self/statm`), which is what memory_profiler
//!   shows: pages the OS has given the process, in MiB;
//! - the blocks pymalloc has handed out and not had back (small blocks in use plus large
//!   blocks, free-listed objects included: to pymalloc they are in use), which the OS view
//!   cannot show. Creating a two-item list changes the RSS by nothing (the pool's page is
//!   resident already) but takes blocks.
//!
//! As memory_profiler does, "Mem usage" is the largest RSS seen after the line, "Increment"
//! the sum of the changes the line's runs caused, and "Occurrences" how often it ran. The
//! first line ([`Profile::enter`], the decorator) shows the RSS on entry as its own increment.
//! Lines that run nothing ([`Profile::source`]) show their text only.

use core::fmt;

/// What the profile reads at a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The process's resident set in bytes; 0 where `/proc/self/statm` is unavailable.
    pub rss: usize,
    /// Blocks pymalloc ([`allocator()`](crate::allocator)) has handed out and not had back.
    pub blocks: usize,
}

impl Sample {
    /// Reads both figures now.
    pub fn now() -> Sample {
        let s = crate::allocator().stats();
        Sample {
            rss: pymalloc_vmm::resident_bytes().unwrap_or(0),
            blocks: s.blocks_in_use() + s.large_blocks,
        }
    }
}

struct Row {
    line: u32,
    text: String,
    measured: Option<Measured>,
}

#[derive(Clone, Copy)]
struct Measured {
    mem: usize,       // the largest RSS after a run
    increment: isize, // RSS change, summed over runs
    occurrences: usize,
    blocks: usize,      // blocks in use after the last run
    blocks_incr: isize, // change in blocks, summed over runs
}

/// A profile of one function's lines. `Display` prints the table.
pub struct Profile {
    filename: String,
    rows: Vec<Row>,
    last: Option<Sample>, // read after the previous line
}

impl Profile {
    /// A profile headed `Filename: <filename>`.
    pub fn new(filename: &str) -> Profile {
        Profile {
            filename: filename.to_owned(),
            rows: Vec::new(),
            last: None,
        }
    }

    /// The first line (memory_profiler's `@profile`): the figures on entry, each its own
    /// increment.
    pub fn enter(&mut self, line: u32, text: &str) {
        let now = Sample::now();
        self.last = Some(now);
        let m = self.row(line, text);
        *m = Some(Measured {
            mem: now.rss,
            increment: now.rss as isize,
            occurrences: 1,
            blocks: now.blocks,
            blocks_incr: now.blocks as isize,
        });
    }

    /// A line that runs nothing (`def f():`, a blank line): its text only.
    pub fn source(&mut self, line: u32, text: &str) {
        self.row(line, text);
    }

    /// Runs one line's work and records what changed since the previous line was recorded
    /// (as memory_profiler attributes what happens between two line events to the line that
    /// ran): work the caller does between two calls counts toward the next line. Called again
    /// with the same line number (a loop), it adds an occurrence.
    pub fn line<R>(&mut self, line: u32, text: &str, f: impl FnOnce() -> R) -> R {
        let before = self.last.unwrap_or_else(Sample::now);
        let r = f();
        let after = Sample::now();
        self.last = Some(after);
        let m = self.row(line, text);
        let d_rss = after.rss as isize - before.rss as isize;
        let d_blocks = after.blocks as isize - before.blocks as isize;
        match m {
            Some(m) => {
                m.mem = m.mem.max(after.rss);
                m.increment += d_rss;
                m.occurrences += 1;
                m.blocks = after.blocks;
                m.blocks_incr += d_blocks;
            }
            None => {
                *m = Some(Measured {
                    mem: after.rss,
                    increment: d_rss,
                    occurrences: 1,
                    blocks: after.blocks,
                    blocks_incr: d_blocks,
                })
            }
        }
        r
    }

    /// The recorded change of one line: (RSS increment in bytes, blocks increment,
    /// occurrences); `None` if it has not run.
    pub fn increment(&self, line: u32) -> Option<(isize, isize, usize)> {
        let r = self.rows.iter().find(|r| r.line == line)?;
        r.measured
            .map(|m| (m.increment, m.blocks_incr, m.occurrences))
    }

    fn row(&mut self, line: u32, text: &str) -> &mut Option<Measured> {
        let i = match self.rows.iter().position(|r| r.line == line) {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    line,
                    text: text.to_owned(),
                    measured: None,
                });
                self.rows.sort_by_key(|r| r.line);
                self.rows
                    .iter()
                    .position(|r| r.line == line)
                    .expect("just added")
            }
        };
        &mut self.rows[i].measured
    }
}

fn mib(bytes: isize) -> String {
    format!("{:.3} MiB", bytes as f64 / f64::from(1 << 20))
}

/// One row of the table; every column as text. memory_profiler's template, with the
/// occurrences column one wider so that its header lines up, and two more columns.
fn write_row(f: &mut fmt::Formatter<'_>, cols: [&str; 7]) -> fmt::Result {
    let [line, mem, inc, occ, blocks, binc, text] = cols;
    writeln!(
        f,
        "{line:>6} {mem:>12} {inc:>12}  {occ:>11} {blocks:>10} {binc:>10}   {text}"
    )
}

impl fmt::Display for Profile {
    /// memory_profiler's table (three decimals, as the seed text shows, where memory_profiler
    /// prints one), with two more columns: pymalloc's blocks in use after the line and their
    /// increment.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Filename: {}\n", self.filename)?;
        let header = [
            "Line #",
            "Mem usage",
            "Increment",
            "Occurrences",
            "Blocks",
            "Blk incr",
            "Line Contents",
        ];
        write_row(f, header)?;
        let width = 6 + 13 + 13 + 13 + 11 + 11 + 3 + header[6].len();
        writeln!(f, "{}", "=".repeat(width))?;
        for r in &self.rows {
            let line = r.line.to_string();
            match r.measured {
                Some(m) => write_row(
                    f,
                    [
                        &line,
                        &mib(m.mem as isize),
                        &mib(m.increment),
                        &m.occurrences.to_string(),
                        &m.blocks.to_string(),
                        &format!("{:+}", m.blocks_incr),
                        &r.text,
                    ],
                )?,
                None => write_row(f, [&line, "", "", "", "", "", &r.text])?,
            }
        }
        Ok(())
    }
}
