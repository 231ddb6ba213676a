#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let a = pymalloc_raw::RawMalloc;
    let live = pymalloc_fuzz::run(&a, data);
    pymalloc_fuzz::free_all(&a, live);
});
