//! The `weir` command line for the end-to-end tests: exactly what the
//! `weir` binary runs, built in this package so tests can start it.

fn main() -> std::process::ExitCode {
    weir::cli::main()
}
