//! Pure, streaming parser for V.250 / TS 27.007 modem output. No I/O: it is handed the
//! bytes received so far and answers one frame, or "incomplete" (more bytes needed) as
//! a normal outcome. [`super::conn::AtConnection`] owns the buffer and does the I/O.
//!
//! The parser frames; it does not decide whether a line is an echo, information text or
//! a URC — that depends on the command in flight, which only the connection knows.

use nom::branch::alt;
use nom::bytes::complete::{tag, take_while, take_while1};
use nom::bytes::streaming::take_till;
use nom::character::complete::{digit1, space0};
use nom::combinator::{all_consuming, map, map_res, opt, rest};
use nom::sequence::preceded;
use nom::{IResult, Parser};

/// Longest line we wait for. Replies are at most a few hundred bytes (a +CGLA reply with
/// 256 APDU bytes is ~530); a longer run without CR/LF is noise, discarded to resync.
pub const MAX_LINE: usize = 4096;

/// One framed unit of modem output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A non-empty text line without its terminator (V.250 §5.7.1: responses are framed
    /// by S3 S4, CR LF). Echo, information text, URC or final result code.
    Line(&'a str),
    /// The data-entry prompt "> " (TS 27.005 §3.5.1, also +CSIM/+CGLA data modes).
    Prompt,
    /// Bytes that cannot be text: line noise, a baud mismatch, a modem booting. Dropped.
    Garbage(&'a [u8]),
}

/// Outcome of [`frame`]: `Ok(None)` means "incomplete", not an error.
pub type Parsed<'a> = Option<(Frame<'a>, usize)>;

/// Frame the next unit at the start of `input`. Returns the frame and the number of
/// bytes it consumed, or `None` when more input is needed. Never fails: anything that
/// cannot be text comes back as [`Frame::Garbage`] so the stream resynchronises at the
/// next line end.
pub fn frame(input: &[u8]) -> Parsed<'_> {
    // A line of blanks only (spaces, tabs) is an empty line too: no frame, so every
    // `Frame::Line` has text.
    let mut at = 0;
    loop {
        match frame_one(&input[at..])? {
            (Frame::Line(""), used) => at += used,
            (f, used) => return Some((f, at + used)),
        }
    }
}

fn frame_one(input: &[u8]) -> Parsed<'_> {
    // Empty lines: the CR LF before and after every response (V.250 §5.7.1), and the
    // lone CR of an echoed command line.
    let skip = input
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    let body = &input[skip..];
    match body.first() {
        None => return None,
        Some(b'>') => {
            return match body.get(1) {
                None => None,
                Some(b' ') => Some((Frame::Prompt, skip + 2)),
                Some(_) => line(body).map(|(f, n)| (f, skip + n)),
            }
        }
        Some(_) => {}
    }
    line(body).map(|(f, n)| (f, skip + n))
}

fn line(body: &[u8]) -> Parsed<'_> {
    // The terminator is looked for within MAX_LINE bytes only, so a longer line is cut
    // there whether or not its end has arrived yet: the frames do not depend on how the
    // serial port split the bytes.
    let window = &body[..body.len().min(MAX_LINE)];
    let found: IResult<&[u8], &[u8]> = take_till(|b| b == b'\r' || b == b'\n')(window);
    match found {
        Ok((_, text)) => {
            let used = text.len() + 1;
            Some((text_frame(text), used))
        }
        Err(_) if window.len() == MAX_LINE => Some((Frame::Garbage(window), MAX_LINE)),
        Err(_) => None,
    }
}

fn text_frame(text: &[u8]) -> Frame<'_> {
    // Modem text is ASCII (V.250 §5.1: IA5). Anything else — NUL, 0xFF bursts from a
    // rebooting modem — is noise. Tabs are tolerated inside operator names.
    let printable = text.iter().all(|b| (0x20..0x7F).contains(b) || *b == b'\t');
    match std::str::from_utf8(text) {
        Ok(s) if printable => Frame::Line(s.trim_end()),
        _ => Frame::Garbage(text),
    }
}

/// A final result code: the end of a command's response (V.250 §5.7.1, TS 27.007 §9.2,
/// TS 27.005 §3.2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Final {
    Ok,
    /// V.250 §5.7.1 "ERROR", no detail (+CMEE=0 or a syntax error).
    Error,
    /// +CME ERROR: <err> (TS 27.007 §9.2): numeric with +CMEE=1, text with +CMEE=2.
    CmeError(ErrorCode),
    /// +CMS ERROR: <err> (TS 27.005 §3.2.5).
    CmsError(ErrorCode),
    /// CONNECT, NO CARRIER, BUSY, NO ANSWER, NO DIALTONE (V.250 §5.7.1 Table 1).
    Call(String),
    /// A vendor final named in the modem's profile (e.g. "ABORTED").
    Vendor(String),
}

/// The detail of a +CME/+CMS ERROR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    Numeric(u16),
    Verbose(String),
}

impl ErrorCode {
    /// The numeric code, mapping the verbose forms we act on to their TS 27.007 §9.2.1
    /// numbers, so retries and "SIM not inserted" are decided on numbers, not text.
    pub fn number(&self) -> Option<u16> {
        match self {
            ErrorCode::Numeric(n) => Some(*n),
            ErrorCode::Verbose(text) => {
                let t = text.to_ascii_lowercase();
                VERBOSE_CME
                    .iter()
                    .find(|(_, words)| t == *words)
                    .map(|(n, _)| *n)
            }
        }
    }
}

/// Verbose +CME ERROR texts we decide on (TS 27.007 §9.2.1).
const VERBOSE_CME: &[(u16, &str)] = &[
    (3, "operation not allowed"),
    (4, "operation not supported"),
    (10, "sim not inserted"),
    (11, "sim pin required"),
    (13, "sim failure"),
    (14, "sim busy"),
    (15, "sim wrong"),
    (100, "unknown"),
];

/// TS 27.007 §9.2.1 error numbers simgate acts on.
pub mod cme {
    /// "SIM not inserted".
    pub const SIM_NOT_INSERTED: u16 = 10;
    /// "SIM PIN required".
    pub const SIM_PIN_REQUIRED: u16 = 11;
    /// "SIM failure": some modems say this instead of 10 while the tray is empty.
    pub const SIM_FAILURE: u16 = 13;
    /// "SIM busy": the SIM is initialising; retry later.
    pub const SIM_BUSY: u16 = 14;
}

impl std::fmt::Display for Final {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Final::Ok => f.write_str("OK"),
            Final::Error => f.write_str("ERROR"),
            Final::CmeError(c) => write!(f, "+CME ERROR: {c}"),
            Final::CmsError(c) => write!(f, "+CMS ERROR: {c}"),
            Final::Call(s) | Final::Vendor(s) => f.write_str(s),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorCode::Numeric(n) => write!(f, "{n}"),
            ErrorCode::Verbose(s) => f.write_str(s),
        }
    }
}

/// Is this line a final result code? `vendor` lists the profile's extra finals.
pub fn final_result(line: &str, vendor: &[String]) -> Option<Final> {
    if let Ok((_, f)) = standard_final(line) {
        return Some(f);
    }
    vendor
        .iter()
        .find(|v| line == v.as_str())
        .map(|v| Final::Vendor(v.clone()))
}

fn standard_final(line: &str) -> IResult<&str, Final> {
    all_consuming(alt((
        map(tag("OK"), |_| Final::Ok),
        map(tag("ERROR"), |_| Final::Error),
        map(preceded(tag("+CME ERROR:"), error_code), Final::CmeError),
        map(preceded(tag("+CMS ERROR:"), error_code), Final::CmsError),
        map(
            alt((
                preceded(tag("CONNECT"), rest),
                tag("NO CARRIER"),
                tag("BUSY"),
                tag("NO ANSWER"),
                tag("NO DIALTONE"),
            )),
            |_| Final::Call(line.to_string()),
        ),
    )))
    .parse(line)
}

fn error_code(input: &str) -> IResult<&str, ErrorCode> {
    preceded(
        space0,
        alt((
            map_res(all_consuming(digit1), |d: &str| {
                d.parse::<u16>().map(ErrorCode::Numeric)
            }),
            map(rest, |t: &str| ErrorCode::Verbose(t.trim().to_string())),
        )),
    )
    .parse(input)
}

/// One parameter of an information line (TS 27.007 §4.1 / V.250 §5.4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// A quoted string, with V.250 §5.4.2.2 `\HH` escapes decoded.
    Str(String),
    /// An unquoted token: a number or a bare word ("READY", "SIM PIN").
    Raw(String),
    /// An omitted parameter (",,").
    Empty,
}

impl Field {
    pub fn text(&self) -> Option<&str> {
        match self {
            Field::Str(s) | Field::Raw(s) => Some(s),
            Field::Empty => None,
        }
    }

    pub fn int(&self) -> Option<u64> {
        match self {
            Field::Raw(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// A hexadecimal number, quoted or not (LAC/TAC and cell ids, TS 27.007 §7.2).
    pub fn hex(&self) -> Option<u64> {
        self.text().and_then(|s| u64::from_str_radix(s, 16).ok())
    }
}

/// Split an information line `+NAME: a,"b",c` into its name and fields. Tolerates a
/// space before the colon (Quectel's `+QSIMSTAT : 1,0` in its manual §5.11). A line
/// without `prefix` gives `None`.
pub fn fields(line: &str, prefix: &str) -> Option<Vec<Field>> {
    let name = prefix.trim_end_matches(':');
    let after = line.strip_prefix(name)?;
    let after = after.trim_start().strip_prefix(':')?;
    Some(param_list(after.trim()))
}

/// Parse a comma-separated parameter list. Malformed quoting keeps the remainder as one
/// raw field rather than failing: the caller validates what it needs.
pub fn param_list(input: &str) -> Vec<Field> {
    let mut out = Vec::new();
    let mut rest_in = input;
    if rest_in.is_empty() {
        return out;
    }
    loop {
        let parsed: IResult<&str, Field> = alt((quoted, unquoted)).parse(rest_in);
        let Ok((after, field)) = parsed else {
            out.push(Field::Raw(rest_in.to_string()));
            return out;
        };
        out.push(field);
        let after = after.trim_start();
        match after.strip_prefix(',') {
            Some(next) => rest_in = next.trim_start(),
            None if after.is_empty() => return out,
            None => {
                out.push(Field::Raw(after.to_string()));
                return out;
            }
        }
    }
}

fn quoted(input: &str) -> IResult<&str, Field> {
    let (input, _) = tag("\"")(input)?;
    let (input, body) = take_while(|c| c != '"')(input)?;
    let (input, _) = tag("\"")(input)?;
    Ok((input, Field::Str(unescape(body))))
}

fn unquoted(input: &str) -> IResult<&str, Field> {
    map(opt(take_while1(|c| c != ',')), |t: Option<&str>| match t {
        Some(t) if !t.trim().is_empty() => Field::Raw(t.trim().to_string()),
        _ => Field::Empty,
    })
    .parse(input)
}

/// Decode V.250 §5.4.2.2 `\HH` escapes; an invalid escape is kept literally. Escapes
/// stand for bytes: a run of them that is UTF-8 (what `at::command::quote` writes for
/// text beyond ASCII) is read as UTF-8, any other escaped byte as its Latin-1 character.
fn unescape(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut bytes: Vec<u8> = Vec::new();
    let flush = |bytes: &mut Vec<u8>, out: &mut String| {
        for chunk in bytes.utf8_chunks() {
            out.push_str(chunk.valid());
            out.extend(chunk.invalid().iter().map(|b| char::from(*b)));
        }
        bytes.clear();
    };
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            if let Some(code) = body
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                bytes.push(code);
                chars.next();
                chars.next();
                continue;
            }
        }
        flush(&mut bytes, &mut out);
        out.push(c);
    }
    flush(&mut bytes, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_frames(mut input: &[u8]) -> (Vec<Frame<'_>>, usize) {
        let mut out = Vec::new();
        let mut used = 0;
        while let Some((f, n)) = frame(input) {
            out.push(f);
            input = &input[n..];
            used += n;
        }
        (out, used)
    }

    #[test]
    fn echo_information_and_final_frame_as_lines() {
        let input = b"AT+QCCID\r\r\n+QCCID: 89860025128306012474\r\n\r\nOK\r\n";
        let (frames, used) = all_frames(input);
        assert_eq!(
            frames,
            vec![
                Frame::Line("AT+QCCID"),
                Frame::Line("+QCCID: 89860025128306012474"),
                Frame::Line("OK")
            ]
        );
        // The LF after the last CR is left for the next call, which skips it.
        assert_eq!(used, input.len() - 1);
    }

    #[test]
    fn a_partial_line_is_incomplete_not_an_error() {
        assert_eq!(frame(b"\r\n+CSQ: 2"), None);
        assert_eq!(frame(b"\r\n"), None);
        assert_eq!(frame(b""), None);
        assert_eq!(frame(b"\r\n>"), None);
    }

    #[test]
    fn prompt_is_framed_without_a_line_end() {
        assert_eq!(frame(b"\r\n> "), Some((Frame::Prompt, 4)));
    }

    #[test]
    fn noise_is_garbage_and_the_next_line_still_parses() {
        let (frames, _) = all_frames(b"\xff\x00\xfe\r\nOK\r\n");
        assert_eq!(
            frames,
            vec![Frame::Garbage(b"\xff\x00\xfe"), Frame::Line("OK")]
        );
    }

    /// Regression (found by `make fuzz`, at_stream): "\t\r\n" was framed as an empty
    /// `Line("")`, which the connection would have taken for information text.
    #[test]
    fn a_line_of_blanks_is_an_empty_line_not_a_frame() {
        let (frames, used) = all_frames(b"\r\t\r\n \t \rOK\r\n");
        assert_eq!((frames, used), (vec![Frame::Line("OK")], 11));
        assert_eq!(frame(b"\t\r\n+CSQ"), None);
    }

    #[test]
    fn an_endless_line_is_cut_to_resync() {
        let noise = vec![b'x'; MAX_LINE + 10];
        let (f, n) = frame(&noise).expect("a full buffer is framed");
        assert!(matches!(f, Frame::Garbage(_)));
        assert_eq!(n, MAX_LINE);
    }

    #[test]
    fn finals_numeric_and_verbose() {
        let v = [];
        assert_eq!(final_result("OK", &v), Some(Final::Ok));
        assert_eq!(
            final_result("+CME ERROR: 10", &v),
            Some(Final::CmeError(ErrorCode::Numeric(10)))
        );
        let verbose = final_result("+CME ERROR: SIM not inserted", &v);
        assert_eq!(
            verbose,
            Some(Final::CmeError(ErrorCode::Verbose(
                "SIM not inserted".into()
            )))
        );
        let Some(Final::CmeError(code)) = verbose else {
            panic!("not a CME error")
        };
        assert_eq!(code.number(), Some(cme::SIM_NOT_INSERTED));
        assert_eq!(
            final_result("+CMS ERROR: 500", &v),
            Some(Final::CmsError(ErrorCode::Numeric(500)))
        );
        assert_eq!(final_result("OKAY", &v), None);
        assert_eq!(final_result("+CSQ: 2,99", &v), None);
        assert_eq!(
            final_result("NO CARRIER", &v),
            Some(Final::Call("NO CARRIER".into()))
        );
        let vendor = ["ABORTED".to_string()];
        assert_eq!(
            final_result("ABORTED", &vendor),
            Some(Final::Vendor("ABORTED".into()))
        );
    }

    #[test]
    fn fields_of_a_registration_line() {
        // pmoerenhout/at-commander NetworkRegistrationResponseTest (test_creg_2_1...).
        let f = fields("+CREG: 2,1,\"9BCD\",\"09AB\",2", "+CREG:").unwrap();
        assert_eq!(f[1].int(), Some(1));
        assert_eq!(f[2].hex(), Some(39885));
        assert_eq!(f[3].hex(), Some(2475));
        assert_eq!(f[4].int(), Some(2));
    }

    #[test]
    fn fields_tolerate_space_before_colon_and_empty_params() {
        let f = fields("+QSIMSTAT : 1,0", "+QSIMSTAT:").unwrap();
        assert_eq!(f, vec![Field::Raw("1".into()), Field::Raw("0".into())]);
        let f = fields("+COPS: 0,,\"x\\22y\"", "+COPS").unwrap();
        assert_eq!(
            f,
            vec![
                Field::Raw("0".into()),
                Field::Empty,
                Field::Str("x\"y".into())
            ]
        );
        assert_eq!(fields("+CGREG: 1", "+CREG:"), None);
    }

    #[test]
    fn corrupt_number_is_not_an_int() {
        // nerves-networking/vintage_net_mobile at_parser_test.exs:73.
        let f = fields("+CSQ: 5A,99", "+CSQ:").unwrap();
        assert_eq!(f[0].int(), None);
    }
}
