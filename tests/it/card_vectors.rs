//! ICCID decoding against published vectors (tests/fixtures/card_vectors.jsonl, copied
//! from ../shared/vectors with their sources: pySim's unit tests).

use simgate::card::iccid::{luhn_valid, Iccid};

fn vectors(kind: &str) -> Vec<serde_json::Value> {
    let text = include_str!("../fixtures/card_vectors.jsonl");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("fixture line is JSON"))
        .filter(|v| v["kind"] == kind)
        .collect()
}

#[test]
fn ef_iccid_vectors_decode_to_their_published_digits() {
    let vs: Vec<_> = vectors("iccid")
        .into_iter()
        .filter(|v| v["raw"].is_string())
        .collect();
    assert!(!vs.is_empty(), "no EF.ICCID vectors in the fixture");
    for v in vs {
        let raw = hex::decode(v["raw"].as_str().unwrap()).unwrap();
        let iccid = Iccid::from_ef(&raw).unwrap_or_else(|e| panic!("{}: {e}", v["source"]));
        assert_eq!(
            iccid.as_str(),
            v["decoded"].as_str().unwrap(),
            "{}",
            v["source"]
        );
        assert!(iccid.luhn_ok(), "{}", v["source"]);
    }
}

#[test]
fn published_iccids_pass_luhn_and_a_changed_check_digit_fails() {
    for v in vectors("iccid") {
        let digits = v["decoded"].as_str().unwrap();
        assert!(luhn_valid(digits), "{}", v["source"]);
        let mut wrong = digits.to_string();
        let last = wrong.pop().unwrap().to_digit(10).unwrap();
        wrong.push(char::from_digit((last + 1) % 10, 10).unwrap());
        let iccid = Iccid::from_digits(&wrong).unwrap();
        assert!(!iccid.luhn_ok(), "{wrong} must fail Luhn");
        assert_eq!(
            iccid.as_str(),
            wrong,
            "a failing ICCID is reported as read, never fixed"
        );
    }
}
