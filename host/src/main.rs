fn main() -> std::process::ExitCode {
    tidings_host::cli::main()
}
