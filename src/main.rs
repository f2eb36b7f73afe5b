//! The simgate binary: everything lives in the library; see src/cli/mod.rs.

fn main() -> std::process::ExitCode {
    simgate::cli::main()
}
