//! The debug hooks over PyMalloc as a program's `#[global_allocator]`: std collections on 4
//! threads, freed across threads, with every block checked on free and realloc.

use std::collections::{BTreeMap, HashMap};

use pymalloc::PyMalloc;
use pymalloc_raw::debug::{Debug, api};

#[global_allocator]
static GLOBAL: Debug<PyMalloc> = Debug::new(PyMalloc::new(), api::OBJECT);

/// Insertions per thread into each collection (fewer under Miri).
const N: u64 = if cfg!(miri) { 40 } else { 5000 };

#[test]
fn collections_on_four_threads_pass_every_check() {
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut m: HashMap<String, Vec<u64>> = HashMap::new();
                let mut b = BTreeMap::new();
                for i in 0..N {
                    m.entry(format!("{t}-{}", i % 777)).or_default().push(i);
                    b.insert(i, format!("{i:>width$}", width = (i % 40) as usize));
                }
                (m, b)
            })
        })
        .collect();
    // Dropped on this thread, not the ones that built them.
    let mut total = 0;
    for h in handles {
        let (m, b) = h.join().unwrap();
        total += m.values().map(Vec::len).sum::<usize>() + b.len();
    }
    assert_eq!(total, 4 * 2 * N as usize);
    // Every block went through the hooks (serial numbers count calls) and PyMalloc is sound.
    assert!(GLOBAL.serial() > 4 * 2 * N);
    GLOBAL.inner().check_invariants().unwrap();
}
