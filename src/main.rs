//! `liandong`: see `liandong --help` and the README.
fn main() -> std::process::ExitCode {
    liandong::cli::main()
}
