/// mimalloc rather than glibc's malloc: the service allocates and frees on
/// many threads at once (the async runtime, SQLite, file writes), where
/// glibc's arenas cost it ~10 % of its CPU under load (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tidings_host::cli::main()
}
