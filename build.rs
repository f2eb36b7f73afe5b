//! Link settings of the simgate binary.

use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    // Packed relative relocations (DT_RELR): the binary's ~9,600 relative relocations
    // (pointers in vtables and statics, moved with the PIE's load address) take 4.7 KiB
    // instead of 234 KiB of .rela.dyn, which the loader reads whole at every start and
    // which stayed resident: 320 KiB of `simgate read`'s peak (benches/lean.rs), and less
    // to apply before main. The loader must know DT_RELR: glibc 2.36 or newer (the linker
    // then makes the binary require GLIBC_ABI_DT_RELR, and the package's libc6 version
    // follows). Only when building for this machine's glibc, which is then the one the
    // binary and its package are linked against.
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let native = var("TARGET") == var("HOST");
    if native
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && glibc_at_least(2, 36)
    {
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    // The functions `simgate read` runs, then those the daemon runs, first and together
    // (src/gateway.order, written by `cargo bench --bench lean -- order`). Left where
    // the compiler put them, read's 260 KiB of code lay scattered over the binary's 4.2
    // MiB, and the kernel maps a file's pages in blocks around each page touched (64 KiB,
    // or the page cache's whole large folio): 3.0 MiB of `read`'s 6.9 MiB peak were the
    // binary's code, 0.5 MiB once ordered; the daemon's code went from 4.1 to 1.9 MiB
    // (benches/lean.rs). It is lld's option, the linker Rust uses on x86_64 Linux since
    // 1.90; names the binary does not have are skipped, so a stale list only loses the
    // saving. The release (gateway) build only: the names are its own.
    println!("cargo::rerun-if-changed=src/gateway.order");
    if var("PROFILE") == "release"
        && var("TARGET") == "x86_64-unknown-linux-gnu"
        && rustc_minor().is_some_and(|minor| minor >= 90)
    {
        let order = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("src/gateway.order");
        println!(
            "cargo::rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo::rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// The minor version of the compiler building this (`rustc -V`: "rustc 1.95.0 (...)").
fn rustc_minor() -> Option<u32> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("-V").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .nth(1)?
        .split('.')
        .nth(1)?
        .parse()
        .ok()
}

/// Whether this machine's glibc (`getconf GNU_LIBC_VERSION`: "glibc 2.36") is at least
/// `major.minor`; no when it cannot tell.
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}
