//! `weir`: the Weir command-line entry point (see `weir::cli`).

fn main() -> std::process::ExitCode {
    weir::cli::main()
}
