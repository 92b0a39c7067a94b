//! The `guardrank` binary: parses arguments and calls the library.

/// mimalloc instead of the system allocator: a request allocates and frees many small buffers
/// on two threads at once, and glibc's malloc/free were 10-15% of the service's CPU under load
/// (BENCHMARKS.md, "Profiles").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    guardrank::cli::main()
}
