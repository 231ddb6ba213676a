//! The workloads under glibc's malloc (Rust's `System` allocator).
#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() {
    pymalloc_benches::measure::program_main("glibc");
}
