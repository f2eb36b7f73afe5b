//! Every published reply in tests/fixtures/at-vectors.jsonl (a shared corpus kept
//! unchanged, each with its `source`) goes through the framing parser and the
//! reply interpretation, and must give the vector's expected values.

use serde_json::Value;
use simgate::at::parser::{fields, final_result, frame, Frame};
use simgate::modem::reply;

/// The information lines of a response as the modem sent it, finals removed.
fn lines(response: &str) -> Vec<String> {
    let bytes = format!("\r\n{response}\r\n").into_bytes();
    let mut input = bytes.as_slice();
    let mut out = Vec::new();
    while let Some((f, used)) = frame(input) {
        if let Frame::Line(l) = f {
            if final_result(l, &[]).is_none() {
                out.push(l.to_string());
            }
        }
        input = &input[used..];
    }
    out
}

fn check(cmd: &str, l: &[String], e: &Value) -> bool {
    let first = l.first().map(String::as_str).unwrap_or_default();
    match cmd {
        "AT+CGACT?" => {
            let want: Vec<(u8, bool)> = e["contexts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["cid"].as_u64().unwrap() as u8,
                        c["active"].as_bool().unwrap(),
                    )
                })
                .collect();
            assert_eq!(reply::contexts(l), want);
        }
        "AT+CREG?" | "AT+CGREG?" | "(URC, AT+CGREG=2)" | "(URC, AT+CREG=2)" => {
            let r = reply::registration(first, !cmd.starts_with("(URC")).unwrap();
            // vintage_net's URC vector asserts only that it is a URC: its first field
            // is then <stat>, 1 (home).
            let want = match e["stat"].as_u64().unwrap_or(1) {
                1 => "home",
                2 => "searching",
                3 => "denied",
                5 => "roaming",
                _ => "other",
            };
            assert_eq!(serde_json::to_value(r.state).unwrap(), want, "{first}");
            if let Some(ci) = e["ci_hex"].as_str() {
                assert_eq!(r.cell.as_deref(), Some(ci));
            }
            if let Some(lac) = e["lac_tac"].as_u64() {
                assert_eq!(
                    u64::from_str_radix(r.area.as_deref().unwrap(), 16).unwrap(),
                    lac
                );
            }
        }
        "AT+COPS?" => {
            let (_, numeric) = reply::operator(l);
            assert_eq!(numeric.as_deref(), e["operator"].as_str());
        }
        "AT+CPIN?" => assert_eq!(reply::pin_state(l).as_deref(), Some("SIM PIN")),
        "AT+CRSM=..." => {
            let (sw1, sw2, data) = reply::crsm(l).unwrap();
            assert_eq!(
                (u64::from(sw1), u64::from(sw2)),
                (e["sw1"].as_u64().unwrap(), e["sw2"].as_u64().unwrap())
            );
            assert_eq!(hex::encode_upper(data), e["hex"].as_str().unwrap());
        }
        "AT+CSQ" => match e["rssi"].as_u64() {
            Some(rssi) => assert_eq!(u64::from(reply::signal(first).unwrap().csq), rssi),
            None => assert_eq!(reply::signal(first), None, "corrupt +CSQ must not parse"),
        },
        "AT+CIMI" => assert_eq!(first, e["imsi"].as_str().unwrap()),
        "AT+QCCID" | "AT#CCID" => {
            let prefix = if cmd == "AT#CCID" {
                "#CCID:"
            } else {
                "+QCCID:"
            };
            let want = e["iccid"]
                .as_str()
                .map(str::to_string)
                // A tokenizer vector: the application strips the filler.
                .unwrap_or_else(|| {
                    e["tokens"][0]
                        .as_str()
                        .unwrap()
                        .trim_end_matches('F')
                        .to_string()
                });
            assert_eq!(reply::vendor_iccid(l, Some(prefix)).unwrap().as_str(), want);
        }
        "AT+QGDCNT?" => assert_eq!(
            reply::counters(l, "+QGDCNT:", 0, 1),
            Some((
                e["bytes_sent"].as_u64().unwrap(),
                e["bytes_recv"].as_u64().unwrap()
            ))
        ),
        "AT#GDATAVOL=1" => assert_eq!(
            reply::counters(l, "#GDATAVOL:", 2, 3),
            Some((e["sent"].as_u64().unwrap(), e["received"].as_u64().unwrap()))
        ),
        "AT+QSIMSTAT?" | "(URC, AT+QSIMSTAT=1)" => {
            let f = fields(first, "+QSIMSTAT:").unwrap();
            assert_eq!(f[1].int(), e["inserted_status"].as_u64());
        }
        "AT#QSS?" => assert_eq!(
            fields(first, "#QSS:").unwrap()[1].int(),
            e["status"].as_u64()
        ),
        "AT+QINISTAT" => assert_eq!(
            fields(first, "+QINISTAT:").unwrap()[0].int(),
            e["status"].as_u64()
        ),
        "(URC, AT+QNETDEVSTATUS=1)" => {
            assert_eq!(
                fields(first, "+QNETDEVSTATUS:").unwrap()[1].int(),
                e["state"].as_u64()
            )
        }
        "AT+CGPADDR=1" => assert_eq!(
            fields(first, "+CGPADDR:").unwrap()[1].text(),
            e["pdp_addr"].as_str()
        ),
        c if c.starts_with("AT+CCHO=") => {
            assert_eq!(reply::channel(l).map(u64::from), e["session_id"].as_u64())
        }
        c if c.starts_with("AT+CGLA=") => {
            assert_eq!(
                hex::encode_upper(reply::cgla(l).unwrap()),
                e["response"].as_str().unwrap()
            )
        }
        _ => return false,
    }
    true
}

#[test]
fn every_published_reply_parses_to_its_expected_values() {
    let text = include_str!("../fixtures/at-vectors.jsonl");
    let mut checked = 0;
    let mut skipped = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(
            v["source"].as_str().is_some_and(|s| !s.is_empty()),
            "line {}",
            n + 1
        );
        let cmd = v["command"].as_str().unwrap();
        let response = v["response"].as_str().unwrap();
        if check(cmd, &lines(response), &v["expected"]) {
            checked += 1;
        } else {
            skipped.push(cmd.to_string());
        }
    }
    assert!(skipped.is_empty(), "vectors without a check: {skipped:?}");
    assert_eq!(checked, text.lines().count());
}
