//! The memory profile: what a line does to pymalloc's blocks, occurrences in a loop,
//! increments that add up, and memory_profiler's table layout. One test in this binary, so no
//! other thread allocates beside it.

use pymalloc_objects::List;
use pymalloc_objects::profile::{Profile, Sample};

#[test]
fn lines_record_blocks_rss_and_occurrences() {
    let mut p = Profile::new("t.py");
    p.enter(1, "@profile");
    p.source(2, "def f():");
    let lists: Vec<List> = p.line(3, "    xs = [[] for _ in range(10000)]", || {
        (0..10_000).map(|_| List::new()).collect()
    });
    for l in &lists[..3] {
        p.line(4, "    for x in xs[:3]: x.append([])", || {
            l.append(List::new())
        });
    }
    p.line(5, "    del xs", || drop(lists));
    // A list without items is one block (the free list starts empty on a new thread).
    let (_, blocks, n) = p.increment(3).unwrap();
    assert_eq!((blocks, n), (10_000, 1));
    // Each run: a new list and the item array of the one appended to.
    let (_, blocks, n) = p.increment(4).unwrap();
    assert_eq!((blocks, n), (6, 3));
    // Freed, but for what the list free list keeps: still in use to pymalloc.
    let (_, blocks, _) = p.increment(5).unwrap();
    assert_eq!(blocks, -(10_003 + 3) + 80);
    assert!(p.increment(2).is_none());
    // Increments add up to the change since entry.
    let (rss0, blocks0, _) = p.increment(1).unwrap();
    let now = Sample::now();
    let sum: (isize, isize) = (3..=5)
        .map(|l| p.increment(l).unwrap())
        .fold((rss0, blocks0), |(r, b), (dr, db, _)| (r + dr, b + db));
    assert_eq!(sum.1, now.blocks as isize);
    assert!(sum.0 > 0 && sum.0 <= now.rss as isize);

    let table = p.to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "Filename: t.py");
    let header = lines[2];
    assert!(header.starts_with("Line #    Mem usage    Increment  Occurrences"));
    assert_eq!(lines[3], "=".repeat(header.len()));
    let col = header.find("Line Contents").unwrap();
    // Every row's text starts under the header's.
    for (row, text) in lines[4..].iter().zip([
        "@profile",
        "def f():",
        "    xs = [[] for _ in range(10000)]",
        "    for x in xs[:3]: x.append([])",
        "    del xs",
    ]) {
        assert_eq!(&row[col..], text, "{row}");
    }
    assert!(lines[6].contains(" 10000     +10000   "), "{}", lines[6]);
    assert!(lines[7].contains("            3 "), "{}", lines[7]);
}
