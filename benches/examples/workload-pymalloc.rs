//! The workloads under PyMalloc.
#[global_allocator]
static GLOBAL: pymalloc::PyMalloc = pymalloc::PyMalloc::new();

fn main() {
    pymalloc_benches::measure::program_main("pymalloc");
}
