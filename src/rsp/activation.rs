//! Activation codes (GSMA SGP.22 §4.1): what a QR code or a platform hands the LPA to
//! start a download. Parsed once, here; everything else takes an [`ActivationCode`].

use std::fmt;

/// A value that must never reach a log, an event or the store (SGP.22 §4.1: the matching
/// ID and the confirmation code are secrets of the profile's owner): Debug and Display
/// print a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("…")
    }
}

/// An activation code: `LPA:1$<SM-DP+ address>$<matching ID>[$<SM-DP+ OID>[$<confirmation
/// code required flag>]]` (SGP.22 §4.1; "LPA:" is the QR code's scheme, §4.1.3, optional
/// here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationCode {
    /// The SM-DP+'s address: a host name (an FQDN in SGP.22), here also `host:port`, as
    /// test servers and lpac accept.
    pub smdp: String,
    /// The AC_Token; empty when the SM-DP+ finds the profile by EID alone (§4.1.1).
    pub matching_id: Secret,
    pub smdp_oid: Option<String>,
    /// Flag "1": the download needs a confirmation code the user types (§4.1.1).
    pub confirmation_required: bool,
}

impl ActivationCode {
    /// Parse and check every field; the error says which one and why.
    pub fn parse(code: &str) -> Result<ActivationCode, String> {
        if code.len() > 255 {
            return Err("longer than 255 characters".into());
        }
        if code.chars().any(char::is_control) {
            return Err("contains control characters".into());
        }
        let body = code.strip_prefix("LPA:").unwrap_or(code);
        let Some(rest) = body.strip_prefix("1$") else {
            return Err("must start with LPA:1$ (SGP.22 §4.1: AC_Format 1)".into());
        };
        let parts: Vec<&str> = rest.split('$').collect();
        if !(2..=4).contains(&parts.len()) {
            return Err(
                "must be LPA:1$<SM-DP+ address>$<matching ID>[$<OID>[$<1 if a confirmation code is required>]]"
                    .into(),
            );
        }
        let smdp = parts[0];
        check_address(smdp)?;
        let matching = parts[1];
        // SGP.22 §4.1.1: the AC_Token is made of upper-case letters, digits and '-';
        // lower case is accepted here as many operators print it.
        if !matching
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("matching ID: letters, digits and '-' only".into());
        }
        let smdp_oid = match parts.get(2) {
            None | Some(&"") => None,
            Some(oid)
                if oid
                    .split('.')
                    .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
            {
                Some(oid.to_string())
            }
            Some(oid) => return Err(format!("SM-DP+ OID \"{oid}\" is not a dotted OID")),
        };
        let confirmation_required = match parts.get(3) {
            None | Some(&"") | Some(&"0") => false,
            Some(&"1") => true,
            Some(f) => {
                return Err(format!(
                    "confirmation code flag \"{f}\": SGP.22 §4.1 allows 1 (required) or nothing"
                ))
            }
        };
        Ok(ActivationCode {
            smdp: smdp.to_ascii_lowercase(),
            matching_id: Secret::new(matching),
            smdp_oid,
            confirmation_required,
        })
    }
}

/// An SM-DP+ address: a host name (letters, digits, '-', '.') with an optional `:port`.
pub fn check_address(addr: &str) -> Result<(), String> {
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (addr, None),
    };
    if host.is_empty()
        || host.len() > 253
        || host.starts_with('-')
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
    {
        return Err(format!("SM-DP+ address \"{addr}\" is not a host name"));
    }
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |n| n == 0) {
            return Err(format!(
                "SM-DP+ address \"{addr}\": port \"{p}\" is not 1-65535"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fields_of_sgp22_4_1_are_read() {
        let a = ActivationCode::parse("LPA:1$SMDP.Example.com$04386-AGYFT-A74Y8-3F815").unwrap();
        assert_eq!(a.smdp, "smdp.example.com");
        assert_eq!(a.matching_id.expose(), "04386-AGYFT-A74Y8-3F815");
        assert!(!a.confirmation_required);
        let b = ActivationCode::parse("LPA:1$localhost:8443$MID$$1").unwrap();
        assert_eq!(b.smdp, "localhost:8443");
        assert!(b.confirmation_required);
        assert_eq!(b.smdp_oid, None);
        let c = ActivationCode::parse("1$smdp.io$$1.3.6.1.4.1.31746").unwrap();
        assert_eq!(c.smdp_oid.as_deref(), Some("1.3.6.1.4.1.31746"));
        assert!(c.matching_id.is_empty());
    }

    #[test]
    fn each_wrong_field_is_named() {
        for (code, says) in [
            ("LPA:2$smdp.io$X", "AC_Format 1"),
            ("LPA:1$smdp.io", "must be"),
            ("LPA:1$sm dp.io$X", "not a host name"),
            ("LPA:1$smdp.io:0$X", "port"),
            ("LPA:1$smdp.io$X Y", "matching ID"),
            ("LPA:1$smdp.io$X$1.a", "OID"),
            ("LPA:1$smdp.io$X$$yes", "confirmation code flag"),
            ("LPA:1$smdp.io$X\n", "control"),
        ] {
            let e = ActivationCode::parse(code).unwrap_err();
            assert!(e.contains(says), "{code}: {e}");
        }
    }

    #[test]
    fn a_secret_never_prints() {
        let a = ActivationCode::parse("LPA:1$smdp.io$TOPSECRET").unwrap();
        assert!(!format!("{a:?}").contains("TOPSECRET"));
        assert!(!format!("{}", a.matching_id).contains("TOPSECRET"));
    }
}
