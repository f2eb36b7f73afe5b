//! The simgate binary: everything lives in the library; see src/cli/mod.rs.

#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    simgate::cli::main()
}

/// C's `pow`, from the `libm` crate (rust-lang's port of musl's libm), so that the binary
/// needs no libm.so.6: its one caller is tokio's multi-thread scheduler (an `f64::powf`
/// in the statistics that tune its global queue interval), and the library loaded for
/// that call was 404 KiB of every simgate process's resident memory (mapped, relocated
/// and its IFUNCs resolved at each start: benches/lean.rs). Defined here, the linker
/// resolves that call to it and, linking with --as-needed, leaves libm.so.6 out.
// A symbol of the C library's name is a global definition for the whole process; it is
// the standard C function, with the standard semantics (no errno, which no caller reads).
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}
