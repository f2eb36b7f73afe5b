//! The activation codes of a provisioning batch (`simgate station --provision FILE.csv`):
//! one code per line, read and checked whole before the first card is touched, so a
//! mistyped code is refused at start with its file and line, never found out on a card.
//!
//! The file is CSV (RFC 4180, one record per line) with a header naming its columns, in
//! any order: `activation_code` (required), `eid`, `confirmation_code`, `labels`
//! (separated by `;`), `nickname`. Blank lines and lines starting with `#` are skipped.

use crate::rsp::activation::{ActivationCode, Secret};
use std::path::Path;

/// One activation code of the batch.
#[derive(Debug, Clone)]
pub struct Code {
    /// Its line in the file (counted from 1), for the person and the results CSV.
    pub line: usize,
    /// The code as written (it holds the matching ID: a secret, never logged).
    pub text: Secret,
    pub code: ActivationCode,
    /// The code's durable name: a digest of the code, so the store never holds the
    /// matching ID (SGP.22 §4.1: the owner's secret) yet knows the code again after a
    /// restart, whatever line it moved to.
    pub key: String,
    /// The eUICC this code is meant for, if the file says.
    pub eid: Option<String>,
    pub confirmation: Option<Secret>,
    pub labels: Vec<String>,
    pub nickname: Option<String>,
}

/// The columns a provisioning file may have.
const COLUMNS: [&str; 5] = [
    "activation_code",
    "eid",
    "confirmation_code",
    "labels",
    "nickname",
];

/// Everything wrong with a provisioning file, one line each: `FILE:LINE: what`.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct CodesError(pub Vec<String>);

/// Read and check the whole file; every bad line is named, not only the first.
pub fn load(path: &Path) -> Result<Vec<Code>, CodesError> {
    let shown = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| CodesError(vec![format!("{shown}: {e}")]))?;
    parse(&shown, &text)
}

/// The digest naming a code in the store: SHA-256 of its text, the first 16 bytes in hex.
pub fn key_of(code: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, code.as_bytes());
    hex::encode(&d.as_ref()[..16])
}

pub fn parse(file: &str, text: &str) -> Result<Vec<Code>, CodesError> {
    let mut errors = Vec::new();
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let Some((hline, header)) = lines.next() else {
        return Err(CodesError(vec![format!(
            "{file}: empty: a header line (activation_code[,eid,confirmation_code,labels,nickname]) and one code per line"
        )]));
    };
    let names = match fields(header) {
        Ok(f) => f,
        Err(e) => return Err(CodesError(vec![format!("{file}:{hline}: header: {e}")])),
    };
    let mut index = [None; COLUMNS.len()];
    for (i, name) in names.iter().enumerate() {
        let name = name.trim().to_ascii_lowercase();
        match COLUMNS.iter().position(|c| *c == name) {
            Some(c) if index[c].is_some() => {
                errors.push(format!("{file}:{hline}: header: column \"{name}\" twice"))
            }
            Some(c) => index[c] = Some(i),
            None => errors.push(format!(
                "{file}:{hline}: header: unknown column \"{name}\" (known: {})",
                COLUMNS.join(", ")
            )),
        }
    }
    if index[0].is_none() {
        errors.push(format!(
            "{file}:{hline}: header: no activation_code column (the first line names the columns)"
        ));
        return Err(CodesError(errors));
    }
    let mut out: Vec<Code> = Vec::new();
    for (n, line) in lines {
        let at = |what: &str| format!("{file}:{n}: {what}");
        let f = match fields(line) {
            Ok(f) => f,
            Err(e) => {
                errors.push(at(&e));
                continue;
            }
        };
        if f.len() > names.len() {
            errors.push(at(&format!(
                "{} fields, the header names {}",
                f.len(),
                names.len()
            )));
            continue;
        }
        let get = |c: usize| {
            index[c]
                .and_then(|i| f.get(i))
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let Some(text) = get(0) else {
            errors.push(at("activation_code: empty"));
            continue;
        };
        let code = match ActivationCode::parse(&text) {
            Ok(c) => c,
            // The error says what is wrong, never the code itself (its matching ID).
            Err(e) => {
                errors.push(at(&format!("activation_code: {e}")));
                continue;
            }
        };
        let eid = get(1);
        if let Some(e) = &eid {
            if !crate::card::euicc::eid_check_ok(e) {
                errors.push(at(&format!(
                    "eid \"{e}\": not an EID (32 digits whose check digits hold, GSMA SGP.29 §2.2)"
                )));
                continue;
            }
        }
        let confirmation = get(2).map(Secret::new);
        if code.confirmation_required && confirmation.is_none() {
            errors.push(at(
                "confirmation_code: the activation code says the profile needs one, and the line has none",
            ));
            continue;
        }
        let nickname = get(4);
        if nickname
            .as_ref()
            .is_some_and(|n| n.len() > crate::card::es10::NICKNAME_MAX)
        {
            errors.push(at("nickname: longer than 64 bytes (SGP.22 §5.7.21)"));
            continue;
        }
        let labels = get(3)
            .map(|l| {
                l.split(';')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let key = key_of(&text);
        if let Some(first) = out.iter().find(|c| c.key == key) {
            errors.push(at(&format!(
                "activation_code: the same code as line {}: a code is used once",
                first.line
            )));
            continue;
        }
        if let Some(first) = eid
            .as_ref()
            .and_then(|e| out.iter().find(|c| c.eid.as_ref() == Some(e)))
        {
            errors.push(at(&format!(
                "eid: the same EID as line {}: one code per eUICC",
                first.line
            )));
            continue;
        }
        out.push(Code {
            line: n,
            text: Secret::new(text),
            code,
            key,
            eid,
            confirmation,
            labels,
            nickname,
        });
    }
    if !errors.is_empty() {
        return Err(CodesError(errors));
    }
    if out.is_empty() {
        return Err(CodesError(vec![format!(
            "{file}: no activation code after the header"
        )]));
    }
    Ok(out)
}

/// One CSV record's fields (RFC 4180: a field may be quoted, `""` inside quotes is a
/// quote; a record is one line here).
fn fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cur.push(c),
            (false, '"') if cur.trim().is_empty() && !was_quoted => {
                cur.clear();
                quoted = true;
                was_quoted = true;
            }
            (false, '"') => return Err("a quote inside an unquoted field".into()),
            (false, ',') => {
                out.push(std::mem::take(&mut cur));
                was_quoted = false;
            }
            (false, c) if was_quoted && !c.is_whitespace() => {
                return Err("text after a closing quote".into())
            }
            (false, c) => cur.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    out.push(cur);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EID: &str = "89049032123451234512345678910062";

    #[test]
    fn a_file_of_codes_with_optional_columns_in_any_order_is_read() {
        let text = format!(
            "# batch 7\nnickname,activation_code,eid,labels,confirmation_code\n\
             truck 7,LPA:1$smdp.example.com$AB-1,{EID},fleet;north,\n\
             ,\"LPA:1$smdp.example.com$AB-2$$1\",,,1234\n\n"
        );
        let codes = parse("b.csv", &text).unwrap();
        assert_eq!(codes.len(), 2);
        assert_eq!(codes[0].line, 3);
        assert_eq!(codes[0].eid.as_deref(), Some(EID));
        assert_eq!(codes[0].labels, ["fleet", "north"]);
        assert_eq!(codes[0].nickname.as_deref(), Some("truck 7"));
        assert_eq!(codes[0].code.smdp, "smdp.example.com");
        assert_eq!(codes[1].line, 4);
        assert_eq!(codes[1].confirmation.as_ref().unwrap().expose(), "1234");
        assert_ne!(codes[0].key, codes[1].key);
    }

    #[test]
    fn every_bad_line_is_refused_with_file_line_and_what_is_wrong() {
        let text = "activation_code,eid\n\
             LPA:1$smdp.example.com$AB-1,\n\
             LPA:2$smdp.example.com$AB-2,\n\
             LPA:1$smdp.example.com$AB-1,\n\
             LPA:1$smdp.example.com$AB-3,8904903212345123451234567891006\n\
             LPA:1$smdp.example.com$AB-4$$1,\n";
        let e = parse("b.csv", text).unwrap_err().0;
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(
            e[0].starts_with("b.csv:3: activation_code: must start with LPA:1$"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("b.csv:4: activation_code: the same code as line 2"),
            "{e:?}"
        );
        assert!(e[2].starts_with("b.csv:5: eid \""), "{e:?}");
        assert!(e[3].starts_with("b.csv:6: confirmation_code:"), "{e:?}");
        // The matching IDs are secrets: no error repeats one.
        assert!(!e.iter().any(|l| l.contains("AB-")), "{e:?}");
    }

    #[test]
    fn a_header_without_the_code_column_or_with_an_unknown_one_is_refused() {
        let e = parse("b.csv", "code,eid\nLPA:1$a.example$X,\n")
            .unwrap_err()
            .0;
        assert!(e[0].contains("unknown column \"code\""), "{e:?}");
        assert!(e[1].contains("no activation_code column"), "{e:?}");
        let e = parse("b.csv", "activation_code\n").unwrap_err().0;
        assert!(e[0].contains("no activation code"), "{e:?}");
    }

    #[test]
    fn quoted_fields_follow_rfc_4180() {
        assert_eq!(
            fields("a,\"b,c\",\"d\"\"e\"").unwrap(),
            ["a", "b,c", "d\"e"]
        );
        assert!(fields("a,\"b").is_err());
        assert!(fields("a,b\"c").is_err());
    }
}
