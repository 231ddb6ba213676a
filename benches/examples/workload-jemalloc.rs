//! The workloads under jemalloc (the `tikv-jemallocator` crate).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    pymalloc_benches::measure::program_main("jemalloc");
}
