//! Recorded sessions the emulator replays. Format (one entry per line, documented in
//! devices/modems/README.md):
//!
//! ```text
//! # comment
//! @source <where the bytes were published>
//! > AT+QCCID                         a command line, as the host sends it
//! < +QCCID: 89860025128306012474     a line of the reply (blank: "<" alone)
//! < OK
//! ```
//!
//! A received command line equal (ignoring case) to the first unused `>` entry with
//! that text is answered with its `<` lines. In a compound line (`AT+CREG?;+QGDCNT?`)
//! each command is looked up on its own (`> AT+QGDCNT?`), its final result deciding
//! whether the line goes on. Anything else falls through to the profile's model.

/// A parsed transcript.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transcript {
    pub sources: Vec<String>,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    command: String,
    reply: Vec<String>,
    used: bool,
}

/// A line the format does not allow, with its number (0: the file as a whole, e.g.
/// unreadable).
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", line_suffix(.line))]
pub struct TranscriptError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

fn line_suffix(line: &usize) -> String {
    match line {
        0 => String::new(),
        n => format!(":{n}"),
    }
}

impl Transcript {
    pub fn load(path: &std::path::Path) -> Result<Transcript, TranscriptError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| TranscriptError {
            file: file.clone(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&file, &text)
    }

    pub fn parse(file: &str, text: &str) -> Result<Transcript, TranscriptError> {
        let mut t = Transcript::default();
        let err = |line: usize, message: &str| TranscriptError {
            file: file.to_string(),
            line,
            message: message.to_string(),
        };
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(src) = line.strip_prefix("@source ") {
                t.sources.push(src.trim().to_string());
            } else if let Some(cmd) = line.strip_prefix("> ") {
                t.entries.push(Entry {
                    command: cmd.trim().to_string(),
                    reply: Vec::new(),
                    used: false,
                });
            } else if let Some(reply) = line.strip_prefix('<') {
                let e = t
                    .entries
                    .last_mut()
                    .ok_or_else(|| err(n, "a reply line before any command"))?;
                e.reply
                    .push(reply.strip_prefix(' ').unwrap_or(reply).to_string());
            } else {
                return Err(err(n, "expected '#', '@source ', '> ' or '<'"));
            }
        }
        if t.sources.is_empty() {
            return Err(err(0, "a transcript names its source (@source)"));
        }
        Ok(t)
    }

    /// The recorded reply lines to `command` (blank lines included), used once.
    pub fn take(&mut self, command: &str) -> Option<Vec<String>> {
        let e = self
            .entries
            .iter_mut()
            .find(|e| !e.used && e.command.eq_ignore_ascii_case(command))?;
        e.used = true;
        Some(e.reply.clone())
    }

    /// The recorded reply framed as the modem sent it: V.250 §5.7.1 puts CR LF before
    /// and after each response line; blank recorded lines stay blank.
    pub fn take_framed(&mut self, command: &str) -> Option<String> {
        let lines = self.take(command)?;
        let mut out = String::from("\r\n");
        for l in &lines {
            out.push_str(l);
            out.push_str("\r\n");
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_replayed_once_in_order() {
        let mut t = Transcript::parse(
            "t",
            "@source x\n> AT+CSQ\n< +CSQ: 5,99\n<\n< OK\n> AT+CSQ\n< +CSQ: 7,99\n< OK\n",
        )
        .unwrap();
        assert_eq!(
            t.take_framed("at+csq").unwrap(),
            "\r\n+CSQ: 5,99\r\n\r\nOK\r\n"
        );
        assert_eq!(t.take("AT+CSQ").unwrap(), vec!["+CSQ: 7,99", "OK"]);
        assert_eq!(t.take("AT+CSQ"), None);
    }

    #[test]
    fn unknown_lines_and_missing_source_are_errors() {
        assert!(Transcript::parse("t", "@source x\nfoo\n").is_err());
        let e = Transcript::parse("t", "> AT\n< OK\n").unwrap_err();
        assert!(e.to_string().contains("@source"));
    }
}
