//! The `guardrank` binary: parses arguments and calls the library.

fn main() -> std::process::ExitCode {
    guardrank::cli::main()
}
