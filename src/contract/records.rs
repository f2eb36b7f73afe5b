//! The platform's record for a SIM (`sim/<iccid>/platform`, and a `set_record`
//! command's params): parsed, and bounded to what a SIMs page row can hold.

use super::{typed, Refusal, RefusalCode, MAX_INBOUND_BYTES, SCHEMA_VERSION};
use crate::sim::PlatformRecord;
use serde::{Deserialize, Serialize};

/// A platform record message on `sim/<iccid>/platform`: `{"v":1, ...record fields}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PlatformMsg {
    pub v: u32,
    #[serde(flatten)]
    pub record: PlatformRecord,
}

/// Parse and check a platform record. An empty payload (a cleared retained message)
/// means the platform has no record: `Ok(None)`.
pub fn parse_platform_record(payload: &[u8]) -> Result<Option<PlatformRecord>, Refusal> {
    if payload.is_empty() {
        return Ok(None);
    }
    if payload.len() > MAX_INBOUND_BYTES {
        return Err(Refusal::new(
            RefusalCode::TooLarge,
            format!(
                "platform record of {} bytes exceeds {MAX_INBOUND_BYTES}",
                payload.len()
            ),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| Refusal::new(RefusalCode::Malformed, format!("not JSON: {e}")))?;
    #[derive(Deserialize)]
    struct Version {
        v: u32,
    }
    let malformed = |e| {
        Refusal::new(
            RefusalCode::Malformed,
            format!("not a v1 platform record: {e}"),
        )
    };
    let version: Version = typed(value.clone(), "").map_err(malformed)?;
    if version.v != SCHEMA_VERSION {
        return Err(Refusal::new(
            RefusalCode::InvalidField,
            format!("v: schema version {} is not {SCHEMA_VERSION}", version.v),
        ));
    }
    // The record's own fields beside `v` (PlatformMsg's flattened shape); unknown
    // fields are ignored, as a newer platform may send more. A field that does not
    // read as its type (an unknown status word, a string for a number) fails the
    // field's rule: `invalid_field` naming it, as the same record in a `set_record`.
    let record: PlatformRecord = typed(value, "").map_err(|e| {
        Refusal::new(
            RefusalCode::InvalidField,
            format!("not a platform record: {e}"),
        )
    })?;
    check_record(&record)?;
    Ok(Some(record))
}

/// Bounds on a platform record's fields: what a SIMs page row can hold.
pub(super) fn check_record(r: &PlatformRecord) -> Result<(), Refusal> {
    let bad = |field: &str, why: &str| {
        Err(Refusal::new(
            RefusalCode::InvalidField,
            format!("{field}: {why}"),
        ))
    };
    for (field, value, max) in [
        ("plan", &r.plan, 128),
        ("company", &r.company, 128),
        ("end_user", &r.end_user, 128),
        ("note", &r.note, 1024),
    ] {
        if let Some(v) = value {
            if v.chars().count() > max {
                return bad(field, &format!("longer than {max} characters"));
            }
            if v.chars().any(char::is_control) {
                return bad(field, "contains control characters");
            }
        }
    }
    if let Some(d) = r.data_left_mb {
        if !d.is_finite() || d < 0.0 {
            return bad("data_left_mb", "not a non-negative number");
        }
    }
    if r.operator_balance_hours.is_some_and(|h| h > 24 * 31) {
        return bad("operator_balance_hours", "more than a month (744 hours)");
    }
    if r.labels.len() > 32 {
        return bad("labels", "more than 32 labels");
    }
    if r.labels
        .iter()
        .any(|l| l.is_empty() || l.chars().count() > 64 || l.chars().any(char::is_control))
    {
        return bad("labels", "each label must be 1-64 printable characters");
    }
    if r.rules.len() > 32 {
        return bad("rules", "more than 32 rules");
    }
    if let Some(code) = &r.activation_code {
        check_activation_code(code).map_err(|why| {
            Refusal::new(RefusalCode::InvalidField, format!("activation_code: {why}"))
        })?;
    }
    Ok(())
}

/// An activation code as GSMA SGP.22 §4.1 writes it (the one parser: rsp::activation).
pub fn check_activation_code(code: &str) -> Result<(), String> {
    crate::rsp::activation::ActivationCode::parse(code).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::Status;

    #[test]
    fn platform_records_parse_and_bad_ones_are_refused() {
        let rec = parse_platform_record(
            br#"{"v":1,"status":"Suspended","sim_type":"PAYGO","data_left_mb":12.5,"days_left":3,"future_field":1}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(rec.status, Some(Status::Suspended));
        assert_eq!(parse_platform_record(b"").unwrap(), None);
        assert_eq!(
            parse_platform_record(br#"{"v":1,"data_left_mb":-1}"#)
                .unwrap_err()
                .code,
            RefusalCode::InvalidField
        );
        assert_eq!(
            parse_platform_record(br#"{"v":1,"note":"a\u0007b"}"#)
                .unwrap_err()
                .code,
            RefusalCode::InvalidField
        );
    }

    #[test]
    fn a_record_with_an_unknown_status_word_is_refused_invalid_field_naming_it() {
        let r = parse_platform_record(br#"{"v":1,"status":"Sleepy"}"#).unwrap_err();
        assert_eq!(r.code, RefusalCode::InvalidField);
        assert!(r.reason.contains("status: unknown variant"), "{}", r.reason);
        // Not JSON, or no readable version, stays malformed.
        assert_eq!(
            parse_platform_record(b"{").unwrap_err().code,
            RefusalCode::Malformed
        );
        assert_eq!(
            parse_platform_record(br#"{"status":"Active"}"#)
                .unwrap_err()
                .code,
            RefusalCode::Malformed
        );
    }

    #[test]
    fn an_activation_code_is_checked_as_sgp22_writes_it_and_a_bad_one_refuses_the_record() {
        for ok in [
            "LPA:1$smdp.example.com$04386-AGYFT-A74Y8-3F815",
            "LPA:1$smdp.example.com$",
            "LPA:1$rsp.example.net:8443$ABC$1.3.6.1.4.1.31746$1",
        ] {
            check_activation_code(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, why) in [
            ("smdp.example.com$ABC", "LPA:1$"),
            ("LPA:1$smdp.example.com", "matching ID"),
            ("LPA:1$$ABC", "not a host name"),
            ("LPA:1$smdp.example.com$AB C", "letters, digits"),
        ] {
            let e = check_activation_code(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let r = parse_platform_record(br#"{"v":1,"activation_code":"http://x"}"#).unwrap_err();
        assert_eq!(r.code, RefusalCode::InvalidField);
        assert!(r.reason.starts_with("activation_code: "), "{}", r.reason);
        let ok = parse_platform_record(
            br#"{"v":1,"activation_code":"LPA:1$smdp.example.com$04386-AGYFT"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            ok.activation_code.as_deref(),
            Some("LPA:1$smdp.example.com$04386-AGYFT")
        );
    }
}
