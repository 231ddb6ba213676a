//! The seed text's first scenario under the memory profiler: `list = [1, 2]`, its reference
//! count, `list.append(3)`, the count again; memory_profiler's table (the process's RSS per
//! line) with pymalloc's blocks in use beside it, then `getsizeof` before and after the append.
//!
//! ```python
//! @profile
//! def test():
//!     list = [1, 2]
//!     a = sys.getrefcount(list)
//!     print(a)
//!     list.append(3)
//!     b = sys.getrefcount(list)
//!     print(b)
//! ```
//!
//! Run: `cargo run --release -p pymalloc-objects --example profile`

use pymalloc_objects::profile::Profile;
use pymalloc_objects::{Int, List, allocator, getrefcount, getsizeof};

/// Pools in use, over every size class.
fn pools() -> usize {
    allocator().stats().classes.iter().map(|c| c.pools).sum()
}

fn main() {
    let mut p = Profile::new("TEST01.py (the seed text's, on pymalloc-objects)");
    p.enter(3, "@profile");
    p.source(4, "def test():");
    let list = p.line(5, "    list = [1, 2]", || {
        List::from_objs([Int::new(1).into_obj(), Int::new(2).into_obj()])
    });
    let a = p.line(6, "    a = sys.getrefcount(list)", || getrefcount(&list));
    let size_before = getsizeof(&list);
    p.line(7, "    print(a)", || println!("{a}"));
    let new_pools = p.line(8, "    list.append(3)", || {
        let before = pools();
        list.append(Int::new(3));
        pools() - before
    });
    let b = p.line(9, "    b = sys.getrefcount(list)", || getrefcount(&list));
    p.line(10, "    print(b)", || println!("{b}"));
    println!();
    print!("{p}");
    println!();
    println!("getrefcount(list): {a} before the append, {b} after (python3: 2 and 2)");
    println!(
        "getsizeof(list): {size_before} bytes before the append, {} after (python3: 72 and 120)",
        getsizeof(&list)
    );
    let (rss, blocks, _) = p.increment(8).expect("line 8 ran");
    println!(
        "The append grew the list's item array from 2 to {} slots (CPython's list_resize): {blocks:+} block(s)",
        list.allocated()
    );
    println!(
        "in use for pymalloc, {new_pools} new pool(s), and {rss:+} bytes of RSS for the process."
    );
}
