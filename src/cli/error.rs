//! Errors at the binary's edge: which are the user's (exit 2), and one line per error.

use crate::config;

/// A mistake in what the user gave — an argument's value, or a file named by one —
/// rather than the work failing: exit 2, like clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Whether an error is the user's input (exit 2): a `UsageError`, or a configuration,
/// modem profile, card image or transcript file that does not load.
pub(super) fn is_usage(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<UsageError>()
            || c.is::<config::ConfigError>()
            || c.is::<crate::modem::profile::ProfileError>()
            // A reader name that names no reader (the message lists those present).
            || matches!(
                c.downcast_ref::<crate::reader::ReaderError>(),
                Some(crate::reader::ReaderError::UnknownReader { .. })
            )
            || emulator_input(c)
            // Transparent: its own source is the profile error's cause, not the error.
            || matches!(
                c.downcast_ref::<crate::daemon::DaemonError>(),
                Some(
                    crate::daemon::DaemonError::Profile(_)
                        | crate::daemon::DaemonError::Http(_)
                        | crate::daemon::DaemonError::Reader(
                            crate::reader::ReaderError::UnknownReader { .. }
                        )
                )
            )
            // The page's address taken or not ours to bind.
            || matches!(
                c.downcast_ref::<crate::station::StationError>(),
                Some(crate::station::StationError::Http(_))
            )
    })
}

/// A card image or transcript that does not load (the emulators' input files).
#[cfg(feature = "emulators")]
fn emulator_input(c: &(dyn std::error::Error + 'static)) -> bool {
    c.is::<crate::emu::vcard::image::ImageError>()
        || c.is::<crate::emu::transcript::TranscriptError>()
}

#[cfg(not(feature = "emulators"))]
fn emulator_input(_: &(dyn std::error::Error + 'static)) -> bool {
    false
}

/// An error and its causes on one line. Our error types already name their cause in
/// their message; a cause whose text is already there is not repeated.
pub fn report(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::report;

    #[derive(Debug, thiserror::Error)]
    #[error("card.toml: cannot read: {source}")]
    struct Named {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_named_is_not_repeated_and_a_new_one_is_added() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(Named { source: io() });
        assert_eq!(report(&e), "card.toml: cannot read: No such file");
        let e = anyhow::Error::new(io()).context("opening the port");
        assert_eq!(report(&e), "opening the port: No such file");
    }
}
