//! USSD through a modem (TS 27.007 §7.15 +CUSD; the service: TS 22.090, TS 24.090):
//! a string sent with result presentation on, the network's reply awaited as the
//! `+CUSD:` URC, a session the network keeps open answered from the caller's list or
//! cancelled (`AT+CUSD=2`), and a network that says nothing within the wait cancelled
//! too, so no session is left hanging on the modem. Replies are decoded whatever shape
//! the modem gives them: text in its character set (+CSCS), UCS2 as hex, or GSM 7-bit
//! packed hex (TS 23.038) for families that take and give packed strings.

use super::profile::{Profile, UssdSend};
use crate::at::conn::AtIo;
use crate::at::parser::{fields, Field};
use crate::at::{quote, AtCommand, AtConnection, AtError};
use crate::sms::gsm7;
use crate::sms::pdu::{ussd_alphabet, Alphabet};
use std::time::Duration;

/// The longest USSD string: 182 GSM 7-bit characters (TS 23.038 §6.1.2.3: 160 octets).
pub const MAX_LEN: usize = 182;

/// A string refused before it reaches the modem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UssdInputError {
    #[error("empty USSD string")]
    Empty,
    #[error("USSD string of {0} characters: at most {MAX_LEN}")]
    TooLong(usize),
    #[error("USSD code {0:?}: only digits, *, # and + (TS 22.030 §6.5.2), starting with * or #")]
    Code(String),
    #[error("USSD answer {0:?}: letters, digits, space, *, # and + only")]
    Answer(String),
}

/// Check a code that opens a session (`*100#`; TS 22.030 §6.5.2's characters).
pub fn check_code(code: &str) -> Result<(), UssdInputError> {
    if code.is_empty() {
        return Err(UssdInputError::Empty);
    }
    if code.len() > MAX_LEN {
        return Err(UssdInputError::TooLong(code.len()));
    }
    let ok = code.starts_with(['*', '#'])
        && code
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'*' | b'#' | b'+'));
    if !ok {
        return Err(UssdInputError::Code(code.to_string()));
    }
    Ok(())
}

/// Check an answer to a menu (`1`, a voucher number, a short word).
pub fn check_answer(answer: &str) -> Result<(), UssdInputError> {
    if answer.is_empty() {
        return Err(UssdInputError::Empty);
    }
    if answer.len() > MAX_LEN {
        return Err(UssdInputError::TooLong(answer.len()));
    }
    if !answer
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'*' | b'#' | b'+'))
    {
        return Err(UssdInputError::Answer(answer.to_string()));
    }
    Ok(())
}

/// How a USSD exchange ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The network answered and closed the session (`+CUSD: 0`).
    Done,
    /// The network still waited for an answer and none was left: cancelled
    /// (`AT+CUSD=2`).
    Cancelled,
    /// The network ended the session (`+CUSD: 2`).
    ByNetwork,
}

/// A USSD exchange's replies, in order (one per string sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub replies: Vec<String>,
    pub ended: Ended,
    /// AT command lines this exchange cost.
    pub at_lines: u64,
}

/// Why a USSD exchange gave no reply (the modem or the network said no).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UssdFailure {
    #[error("the modem refused the USSD request: {0}")]
    Refused(String),
    #[error("the network does not support this USSD string (+CUSD: 4)")]
    Unsupported,
    #[error("the network timed out (+CUSD: 5)")]
    NetworkTimeout,
    #[error("another client answered the USSD request (+CUSD: 3)")]
    OtherClient,
    #[error("no USSD reply within {0:?}: the session was cancelled")]
    NoReply(Duration),
}

/// The modem's TE character set (TS 27.007 §5.5 +CSCS), upper case; "IRA" when the
/// modem does not say.
pub async fn charset<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
) -> Result<String, AtError> {
    let cmd = AtCommand::new("AT+CSCS?")?;
    let r = conn.command(&cmd, profile.timeouts.default()).await?;
    Ok(r.ok()
        .and_then(|r| {
            r.line("+CSCS:")
                .and_then(|l| fields(l, "+CSCS:"))
                .and_then(|f| f.first().and_then(Field::text).map(str::to_ascii_uppercase))
        })
        .unwrap_or_else(|| "IRA".into()))
}

/// The <str> of `AT+CUSD=1,<str>,15` for this family and character set.
pub fn encode(text: &str, send: UssdSend, charset: &str) -> String {
    match send {
        UssdSend::PackedHex => {
            // Checked strings are GSM 7-bit; a character outside it goes as '?'.
            let septets: Vec<u8> = text
                .chars()
                .flat_map(|c| gsm7::septets_of(c).unwrap_or(vec![0x3F]))
                .collect();
            quote(&hex::encode_upper(gsm7::pack_ussd(&septets)))
        }
        UssdSend::Text if charset == "UCS2" => quote(&hex::encode_upper(gsm7::encode_ucs2(text))),
        UssdSend::Text => quote(text),
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.len().is_multiple_of(2) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A reply's text from +CUSD's <str> and <dcs>, as this family and character set give
/// it: UCS2 hex (the TE set is UCS2, or the network's UCS2 passed through as hex, as
/// most firmwares do with dcs 72), GSM 7-bit packed hex (a packed-hex family), or text.
pub fn decode(s: &str, dcs: Option<u8>, send: UssdSend, charset: &str) -> String {
    let alphabet = dcs.map_or(Alphabet::Gsm7, ussd_alphabet);
    let hex = is_hex(s);
    if hex && s.len().is_multiple_of(4) && (charset == "UCS2" || alphabet == Alphabet::Ucs2) {
        if let Ok(b) = hex::decode(s) {
            return gsm7::decode_ucs2(&b);
        }
    }
    if hex && send == UssdSend::PackedHex && alphabet == Alphabet::Gsm7 {
        if let Ok(b) = hex::decode(s) {
            return gsm7::decode(&gsm7::unpack_ussd(&b));
        }
    }
    s.to_string()
}

/// A +CUSD line (its quoted string may have spanned several lines, rejoined with LF):
/// <m>, <str>, <dcs>.
fn parse(line: &str) -> Option<(u64, Option<String>, Option<u8>)> {
    let f = fields(line, "+CUSD:")?;
    let m = f.first().and_then(Field::int)?;
    let s = f.get(1).and_then(|x| x.text().map(str::to_string));
    let dcs = f
        .get(2)
        .and_then(Field::int)
        .and_then(|d| u8::try_from(d).ok());
    Some((m, s, dcs))
}

/// Odd count of quotes: a reply whose string goes on on the next line (menus with
/// line breaks, sent raw by most firmwares).
fn open_quote(line: &str) -> bool {
    line.bytes().filter(|b| *b == b'"').count() % 2 == 1
}

/// The next +CUSD reply, its string rejoined when the modem broke it over lines.
async fn next_reply<T: AtIo>(
    conn: &mut AtConnection<T>,
    mut line: String,
) -> Result<String, AtError> {
    // Bounded: a reply is at most 182 characters, a few lines.
    for _ in 0..32 {
        if !open_quote(&line) {
            break;
        }
        let more = conn.next_urc().await?;
        line.push('\n');
        line.push_str(&more);
    }
    Ok(line)
}

/// Run one USSD exchange: `code`, then each of `answers` while the network keeps the
/// session open. `wait` bounds each reply; the session is cancelled when it runs out
/// or when the network asks for more than `answers` give.
pub async fn run<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
    code: &str,
    answers: &[String],
    wait: Duration,
) -> Result<Result<Exchange, UssdFailure>, AtError> {
    let start = conn.stats().commands;
    let send = profile.ussd.as_ref().map(|u| u.send).unwrap_or_default();
    let set = charset(conn, profile).await?;
    let mut replies = Vec::new();
    let mut steps: Vec<String> = Vec::with_capacity(1 + answers.len());
    steps.push(code.to_string());
    steps.extend(answers.iter().cloned());
    for (i, step) in steps.iter().enumerate() {
        let more = i + 1 < steps.len();
        // TS 27.007 §7.15: <n>=1 result code presentation on; <dcs> 15 (TS 23.038 §5:
        // GSM 7-bit, language unspecified).
        let cmd = AtCommand::new(&format!("AT+CUSD=1,{},15", encode(step, send, &set)))?;
        let r = conn.command(&cmd, profile.timeouts.network()).await?;
        let reply = match r {
            Err(refusal) => return Ok(Err(UssdFailure::Refused(refusal.result.to_string()))),
            // Some firmwares answer before the final result: the reply is in the lines.
            Ok(r) => match r.lines.iter().position(|l| l.starts_with("+CUSD")) {
                Some(i) => Some(r.lines[i..].join("\n")),
                None => None,
            },
        };
        let line = match reply {
            Some(l) => l,
            None => match tokio::time::timeout(wait, conn.next_urc_with("+CUSD:")).await {
                Ok(l) => next_reply(conn, l?).await?,
                Err(_) => {
                    cancel(conn, profile).await?;
                    return Ok(Err(UssdFailure::NoReply(wait)));
                }
            },
        };
        let Some((m, s, dcs)) = parse(&line) else {
            return Err(AtError::Unclear {
                command: cmd.to_string(),
                answer: line,
            });
        };
        if let Some(s) = &s {
            replies.push(decode(s, dcs, send, &set));
        }
        let ended = match m {
            0 => Ended::Done,
            1 if more => continue,
            1 => {
                cancel(conn, profile).await?;
                Ended::Cancelled
            }
            2 => Ended::ByNetwork,
            3 => return Ok(Err(UssdFailure::OtherClient)),
            4 => return Ok(Err(UssdFailure::Unsupported)),
            5 => return Ok(Err(UssdFailure::NetworkTimeout)),
            _ => {
                return Err(AtError::Unclear {
                    command: cmd.to_string(),
                    answer: line,
                })
            }
        };
        return Ok(Ok(Exchange {
            replies,
            ended,
            at_lines: conn.stats().commands - start,
        }));
    }
    // Only reached with no step at all, which `code` rules out; said plainly.
    Ok(Ok(Exchange {
        replies,
        ended: Ended::Done,
        at_lines: conn.stats().commands - start,
    }))
}

/// Cancel the session (TS 27.007 §7.15 <n>=2); a modem with none open may say ERROR.
async fn cancel<T: AtIo>(conn: &mut AtConnection<T>, profile: &Profile) -> Result<(), AtError> {
    let cmd = AtCommand::new("AT+CUSD=2")?;
    let _ = conn.command(&cmd, profile.timeouts.default()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_answers_are_checked() {
        assert!(check_code("*100#").is_ok());
        assert!(check_code("#123*1#").is_ok());
        for bad in ["", "100", "*100#\"", "*1;AT+CFUN=0", "*100#\r"] {
            assert!(check_code(bad).is_err(), "{bad:?}");
        }
        assert!(check_answer("1").is_ok());
        assert!(check_answer("YES 2").is_ok());
        assert!(check_answer("1\"").is_err());
        assert!(check_code(&format!("*{}#", "1".repeat(200))).is_err());
    }

    #[test]
    fn strings_go_out_in_the_family_s_shape() {
        assert_eq!(encode("*100#", UssdSend::Text, "IRA"), "\"*100#\"");
        assert_eq!(
            encode("*100#", UssdSend::PackedHex, "GSM"),
            "\"AA180C3602\""
        );
        assert_eq!(
            encode("*100#", UssdSend::Text, "UCS2"),
            "\"002A0031003000300023\""
        );
    }

    #[test]
    fn replies_are_decoded_whatever_their_shape() {
        // UCS2 passed through as hex (dcs 72), the TE set being IRA.
        let ucs = hex::encode_upper(gsm7::encode_ucs2("Баланс 5 €"));
        assert_eq!(decode(&ucs, Some(72), UssdSend::Text, "IRA"), "Баланс 5 €");
        // The TE set is UCS2: every string is UCS2 hex, whatever the dcs.
        let ucs = hex::encode_upper(gsm7::encode_ucs2("Balance 5"));
        assert_eq!(decode(&ucs, Some(15), UssdSend::Text, "UCS2"), "Balance 5");
        // Packed GSM 7-bit hex from a packed-hex family.
        let packed = hex::encode_upper(gsm7::pack(&gsm7::encode("Saldo 12 MB").unwrap(), 0));
        assert_eq!(
            decode(&packed, Some(15), UssdSend::PackedHex, "GSM"),
            "Saldo 12 MB"
        );
        // Text stays text, also when it happens to look like hex.
        assert_eq!(decode("1234", Some(15), UssdSend::Text, "IRA"), "1234");
        assert_eq!(
            decode("Saldo 12 MB", Some(15), UssdSend::Text, "IRA"),
            "Saldo 12 MB"
        );
    }

    /// TS 23.038 §6.1.2.3.1: 8 characters packed fill 7 octets exactly; a CR in the
    /// last 7 bits is padding, not text.
    #[test]
    fn the_cr_padding_of_a_packed_string_is_dropped() {
        let mut s = gsm7::encode("1234567").unwrap();
        s.push(0x0D);
        let packed = hex::encode_upper(gsm7::pack(&s, 0));
        assert_eq!(
            decode(&packed, Some(15), UssdSend::PackedHex, "GSM"),
            "1234567"
        );
    }

    #[test]
    fn cusd_lines_parse() {
        assert_eq!(
            parse("+CUSD: 0,\"Balance 5\",15"),
            Some((0, Some("Balance 5".into()), Some(15)))
        );
        assert_eq!(parse("+CUSD: 4"), Some((4, None, None)));
        assert_eq!(
            parse("+CUSD: 1,\"1 Balance\n2 Offers\",15").map(|p| p.1),
            Some(Some("1 Balance\n2 Offers".into()))
        );
        assert!(open_quote("+CUSD: 1,\"1 Balance"));
        assert!(!open_quote("+CUSD: 1,\"1 Balance\n2 Offers\",15"));
    }
}
