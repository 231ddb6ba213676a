#![no_main]
use libfuzzer_sys::fuzz_target;
use pymalloc::PyMalloc;
use pymalloc_raw::debug::{Debug, api};

fuzz_target!(|data: &[u8]| {
    // The debug hooks check every block on free and realloc; the live set is compared with
    // the wrapped allocator's statistics (every block, small or large, is one inner block).
    let a = Debug::new(PyMalloc::new(), api::OBJECT);
    let live = pymalloc_fuzz::run(&a, data);
    let s = a.inner().stats();
    assert_eq!(s.blocks_in_use() + s.large_blocks, live.len(), "stats disagree with the live set");
    a.inner().check_invariants().unwrap();
    pymalloc_fuzz::free_all(&a, live);
    a.inner().check_invariants().unwrap();
});
