//! Everything the CLI prints to stdout goes through here (`out!`, `outln!`), so that a
//! reader who closes the pipe early (`simgate config check | grep -q ok`, `| head -1`)
//! ends the command quietly instead of a panic: std's `println!` panics on EPIPE,
//! because Rust ignores SIGPIPE, which would otherwise have ended the process. Writers
//! that return their `io::Error` (the station's screen, `watch`) reach `cli::main`,
//! which treats a broken pipe the same way ([`is_broken_pipe`]). The lint
//! `clippy::print_stdout`, denied crate-wide, keeps `println!` out.

use std::io::Write;

/// The exit status of a command whose reader went away: 0, as the reader asked for no
/// more (what ripgrep and fd do; a script with `pipefail` is not failed by `grep -q`).
pub(super) const READER_GONE: u8 = 0;

/// Write `args` to stdout (flushed, so a line reaches a pipe as it is printed); a closed
/// pipe ends the process with [`READER_GONE`], another write error with status 1 and
/// its message, as println!'s panic would have, without the panic.
pub(crate) fn write(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(i32::from(READER_GONE));
        }
        eprintln!("simgate: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// Whether an error (anywhere in its chain) is a write into a closed pipe.
pub(super) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `print!` to stdout, ending quietly on a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!($($arg)*))
    };
}

/// `println!` to stdout, ending quietly on a closed pipe.
macro_rules! outln {
    () => {
        $crate::cli::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}
