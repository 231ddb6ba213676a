//! The workloads under PyMalloc.
#[global_allocator]
static GLOBAL: pymalloc::PyMalloc = pymalloc::PyMalloc::new();

fn main() {
    // What a program using PyMalloc as its global allocator does: threads collect their heaps
    // as they exit (see `PyMalloc::collect_at_thread_exit`).
    assert!(GLOBAL.collect_at_thread_exit());
    pymalloc_benches::measure::program_main("pymalloc");
}
