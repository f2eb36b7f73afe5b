//! Command text. The only way to build an [`AtCommand`] checks it, and the only way to
//! put an outside value (a payload, a config) into one is [`quote`], so no value can end
//! a command line early or smuggle a second command: no AT injection.

use std::fmt;

/// A checked command line, without its terminating CR; the flag marks a line carrying a
/// PIN or PUK, whose arguments its Display and Debug never show (so neither does any
/// log line, error or refusal built from it).
#[derive(Clone, PartialEq, Eq)]
pub struct AtCommand(String, bool);

/// Why text cannot be a command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("command must start with AT: {0:?}")]
    NoPrefix(String),
    #[error("command contains byte 0x{byte:02X} at {at}: only printable ASCII is sent")]
    Forbidden { byte: u8, at: usize },
    #[error("unbalanced quote in command {0:?}")]
    Unbalanced(String),
    /// Data after a prompt (an SMS PDU) holding a byte that would end or abort it.
    #[error("data for a prompt holds a control or non-ASCII byte")]
    Data,
}

impl AtCommand {
    /// Check trusted text (a profile's command, a constant). Printable ASCII only: CR
    /// (S3) would end the line (V.250 §5.2.1), Ctrl-Z/ESC end or abort data entry
    /// (TS 27.005 §3.5.1); quotes must balance so a later argument cannot escape one.
    pub fn new(text: &str) -> Result<AtCommand, CommandError> {
        if !text.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("AT")) {
            return Err(CommandError::NoPrefix(text.to_string()));
        }
        if let Some((at, byte)) = text
            .bytes()
            .enumerate()
            .find(|(_, b)| !(0x20..0x7F).contains(b))
        {
            return Err(CommandError::Forbidden { byte, at });
        }
        if text.bytes().filter(|b| *b == b'"').count() % 2 != 0 {
            return Err(CommandError::Unbalanced(text.to_string()));
        }
        Ok(AtCommand(text.to_string(), false))
    }

    /// A line carrying a secret (`AT+CPIN="1234"`): checked like any, shown as
    /// `AT+CPIN=***`.
    pub fn secret(text: &str) -> Result<AtCommand, CommandError> {
        let mut c = AtCommand::new(text).map_err(|e| match e {
            // The checks' messages would quote the text.
            CommandError::NoPrefix(_) => CommandError::NoPrefix("***".into()),
            CommandError::Unbalanced(_) => CommandError::Unbalanced("***".into()),
            other => other,
        })?;
        c.1 = true;
        Ok(c)
    }

    /// The bytes to send. Never for showing: Display redacts a secret's arguments.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The response prefixes this line can produce: `+CGACT:` for `AT+CGACT?`, one per
    /// command of a compound line (`AT+CREG?;+CSQ`). Used to tell replies from URCs.
    pub fn reply_prefixes(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut in_quote = false;
        let bytes = self.0.as_bytes();
        let mut i = 2;
        while i < bytes.len() {
            match bytes[i] {
                b'"' => in_quote = !in_quote,
                b'+' | b'#' | b'$' | b'!' | b'^' | b'%' if !in_quote => {
                    let start = i;
                    let end = self.0[start + 1..]
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .map_or(self.0.len(), |e| start + 1 + e);
                    if end > start + 1 {
                        out.push(format!("{}:", self.0[start..end].to_ascii_uppercase()));
                    }
                    i = end;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
        out
    }
}

impl AtCommand {
    /// The commands of this line, each as a line of its own: a compound line
    /// (`AT+CREG?;+CGREG?`) split at every ';' outside a string constant (V.250 §5.2.1).
    /// Basic commands run together without a separator (`ATE0V1`) stay one.
    pub fn atoms(&self) -> Vec<AtCommand> {
        let mut out = Vec::new();
        let mut cur = String::from("AT");
        let mut quoted = false;
        for c in self.0[2..].chars() {
            match c {
                '"' => {
                    quoted = !quoted;
                    cur.push(c);
                }
                ';' if !quoted => {
                    if cur.len() > 2 {
                        out.push(AtCommand(std::mem::replace(&mut cur, "AT".into()), self.1));
                    }
                }
                _ => cur.push(c),
            }
        }
        if cur.len() > 2 || out.is_empty() {
            out.push(AtCommand(cur, self.1));
        }
        out
    }

    /// Whether this line's (last) command is an extended one (`+`, or a vendor's `#`,
    /// `$`, `!`, `^`, `%`): V.250 §5.2.1 wants a ';' before anything that follows it.
    fn ends_extended(&self) -> bool {
        !self.reply_prefixes().is_empty()
    }
}

/// Join commands into one line (V.250 §5.2.1): a ';' after each extended command that is
/// followed by another, basic commands run together (`ATE0V1+CMEE=1`). Each part was
/// checked on its own, so the whole is a valid line.
pub fn join(parts: &[AtCommand]) -> AtCommand {
    let mut text = String::from("AT");
    for (i, p) in parts.iter().enumerate() {
        if i > 0 && parts[i - 1].ends_extended() {
            text.push(';');
        }
        text.push_str(&p.0[2..]);
    }
    AtCommand(text, parts.iter().any(|p| p.1))
}

impl fmt::Display for AtCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1 {
            let shown = self.0.find('=').map_or(self.0.as_str(), |i| &self.0[..i]);
            write!(f, "{shown}=***")
        } else {
            f.write_str(&self.0)
        }
    }
}

impl fmt::Debug for AtCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AtCommand({self})")
    }
}

/// Quote an outside value as a V.250 §5.4.2.2 string constant. `"` and `\` and every
/// non-printable byte become `\HH`, so the value can neither close the string nor end
/// the line. TS 27.007 §1 "string type" uses the same escapes.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for b in value.bytes() {
        match b {
            b'"' | b'\\' | 0..=0x1F | 0x7F..=0xFF => out.push_str(&format!("\\{b:02X}")),
            _ => out.push(char::from(b)),
        }
    }
    out.push('"');
    out
}

/// Expand a profile template, replacing `{name}` with numbers only. Numbers cannot
/// inject anything; strings go through [`quote`] before they reach here.
pub fn expand(template: &str, args: &[(&str, u64)]) -> Result<AtCommand, CommandError> {
    let mut text = template.to_string();
    for (name, value) in args {
        text = text.replace(&format!("{{{name}}}"), &value.to_string());
    }
    AtCommand::new(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> AtCommand {
        AtCommand::new(s).unwrap()
    }

    #[test]
    fn a_compound_line_splits_into_its_commands_and_joins_back() {
        let line = at("AT+CREG?;+CGREG?;+COPS=3,\"a;b\"");
        let atoms = line.atoms();
        assert_eq!(
            atoms.iter().map(AtCommand::as_str).collect::<Vec<_>>(),
            ["AT+CREG?", "AT+CGREG?", "AT+COPS=3,\"a;b\""],
            "a ';' inside a string constant is no separator"
        );
        assert_eq!(join(&atoms), line);
        assert_eq!(at("AT+CSQ").atoms(), [at("AT+CSQ")]);
    }

    #[test]
    fn basic_commands_join_without_a_separator_extended_ones_with_one() {
        assert_eq!(
            join(&[at("ATE0"), at("ATV1"), at("AT+CMEE=1")]).as_str(),
            "ATE0V1+CMEE=1"
        );
        assert_eq!(
            join(&[at("AT+CMEE=1"), at("ATE0")]).as_str(),
            "AT+CMEE=1;E0"
        );
        assert_eq!(
            join(&[at("AT#CCID"), at("AT+CSQ")]).as_str(),
            "AT#CCID;+CSQ"
        );
    }

    #[test]
    fn quoted_value_cannot_end_the_line_or_the_string() {
        let evil = "internet\";+CFUN=0\r\nAT+CFUN=0\x1a";
        let cmd = AtCommand::new(&format!("AT+CGDCONT=1,\"IP\",{}", quote(evil))).unwrap();
        assert_eq!(
            cmd.as_str(),
            "AT+CGDCONT=1,\"IP\",\"internet\\22;+CFUN=0\\0D\\0AAT+CFUN=0\\1A\""
        );
        assert_eq!(cmd.reply_prefixes(), vec!["+CGDCONT:".to_string()]);
    }

    #[test]
    fn raw_control_characters_are_refused() {
        assert!(matches!(
            AtCommand::new("AT+CFUN=1\rAT+CFUN=0"),
            Err(CommandError::Forbidden { byte: b'\r', .. })
        ));
        assert!(matches!(
            AtCommand::new("AT+X=\"a"),
            Err(CommandError::Unbalanced(_))
        ));
        assert!(matches!(
            AtCommand::new("+CSQ"),
            Err(CommandError::NoPrefix(_))
        ));
    }

    #[test]
    fn compound_lines_list_every_reply_prefix() {
        let cmd = AtCommand::new("AT+CREG?;+CEREG?;#GDATAVOL=1;+QGDCNT?").unwrap();
        assert_eq!(
            cmd.reply_prefixes(),
            vec!["+CREG:", "+CEREG:", "#GDATAVOL:", "+QGDCNT:"]
        );
    }

    #[test]
    fn templates_take_numbers_only() {
        assert_eq!(
            expand("AT+QUIMSLOT={slot}", &[("slot", 2)])
                .unwrap()
                .as_str(),
            "AT+QUIMSLOT=2"
        );
    }
}
