#![no_main]
use libfuzzer_sys::fuzz_target;
use pymalloc::{GeometryExt, PyMalloc, Py310};

fuzz_target!(|data: &[u8]| {
    // A fresh allocator per input, so the statistics describe this input alone.
    let a = PyMalloc::new();
    let live = pymalloc_fuzz::run(&a, data);
    let s = a.stats();
    let small = live.iter().filter(|l| Py310::class_for(l.layout.size(), l.layout.align()).is_some()).count();
    assert_eq!(s.blocks_in_use(), small, "stats disagree with the live set");
    assert_eq!(s.large_blocks, live.len() - small);
    a.check_invariants().unwrap();
    pymalloc_fuzz::free_all(&a, live);
    let s = a.stats();
    assert_eq!((s.blocks_in_use(), s.large_blocks), (0, 0));
    a.check_invariants().unwrap();
});
