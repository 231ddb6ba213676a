//! The workloads under mimalloc (the `mimalloc` crate).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    pymalloc_benches::measure::program_main("mimalloc");
}
