//! The simgate binary: everything lives in the library; see src/cli.rs.

fn main() -> std::process::ExitCode {
    simgate::cli::main()
}
