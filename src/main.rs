//! `liandong`: see `liandong --help` and the README.

/// mimalloc, not glibc's allocator: requests are parsed on the runtime's workers and their
/// transfers freed on the store's writer thread, and glibc's per-thread arenas made that
/// cross-thread free a tenth of the gateway's time (docs/PERFORMANCE.md). Its `override`
/// feature makes it `malloc` too, so SQLite's own allocations use it (docs/DECISIONS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    liandong::cli::main()
}
