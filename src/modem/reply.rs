//! Pure interpretation of modem replies (TS 27.007 information text) into typed values.
//! No I/O; every function takes reply lines and is tested with published samples.

use crate::at::parser::{fields, Field};
use crate::card::Iccid;
use serde::Serialize;

crate::sim::wire_words! {
    /// Registration state (TS 27.007 §7.2 <stat>), in the words a user reads.
    pub enum RegState {
        /// 0: not registered, not searching.
        Idle = "idle",
        /// 1: registered, home network.
        Home = "home",
        /// 2: not registered, searching.
        Searching = "searching",
        /// 3: registration denied.
        Denied = "denied",
        /// 4: unknown (e.g. out of coverage).
        Unknown = "unknown",
        /// 5: registered, roaming.
        Roaming = "roaming",
    }
}

impl RegState {
    fn from_stat(stat: u64) -> RegState {
        match stat {
            0 => RegState::Idle,
            1 | 6 | 9 => RegState::Home, // 6, 9: home, SMS/CSFB-not-preferred (§7.2)
            2 => RegState::Searching,
            3 => RegState::Denied,
            5 | 7 | 10 => RegState::Roaming, // 7, 10: roaming variants (§7.2)
            _ => RegState::Unknown,
        }
    }

    pub fn registered(self) -> bool {
        matches!(self, RegState::Home | RegState::Roaming)
    }
}

/// Registration as reported by +CREG/+CGREG/+CEREG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registration {
    pub state: RegState,
    /// Which command said so: "CREG" (circuit), "CGREG" (GPRS), "CEREG" (EPS).
    pub domain: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_tech: Option<&'static str>,
    /// LAC or TAC, hex as the modem gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub area: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell: Option<String>,
}

/// TS 27.007 §7.3 <AcT> values.
fn access_tech(act: u64) -> Option<&'static str> {
    Some(match act {
        0 => "GSM",
        1 => "GSM Compact",
        2 => "UTRAN",
        3 => "GSM w/EGPRS",
        4 => "UTRAN w/HSDPA",
        5 => "UTRAN w/HSUPA",
        6 => "UTRAN w/HSDPA and HSUPA",
        7 => "E-UTRAN",
        8 => "EC-GSM-IoT",
        9 => "E-UTRAN (NB-S1)",
        10 => "E-UTRA connected to 5GCN",
        11 => "NR connected to 5GCN",
        12 => "NG-RAN",
        13 => "E-UTRA-NR dual connectivity",
        _ => return None,
    })
}

/// One registration line. `solicited`: a reply to `+CxREG?` carries <n> first; the URC
/// does not (TS 27.007 §7.2, §10.1.20, §10.1.22).
pub fn registration(line: &str, solicited: bool) -> Option<Registration> {
    for domain in ["CEREG", "CGREG", "CREG", "C5GREG"] {
        let Some(f) = fields(line, &format!("+{domain}:")) else {
            continue;
        };
        let f = if solicited { f.get(1..)? } else { &f[..] };
        let state = RegState::from_stat(f.first()?.int()?);
        let text = |i: usize| f.get(i).and_then(Field::text).map(str::to_string);
        // +CGREG carries <rac> after <AcT> on some firmware; AcT stays at index 3.
        return Some(Registration {
            state,
            domain: domain.to_string(),
            access_tech: f.get(3).and_then(Field::int).and_then(access_tech),
            area: text(1),
            cell: text(2),
        });
    }
    None
}

/// The most useful registration among several domains: a registered one first, EPS
/// before GPRS before circuit (an LTE-only modem reports CREG as searching).
pub fn best_registration(lines: &[String]) -> Option<Registration> {
    let all: Vec<Registration> = lines.iter().filter_map(|l| registration(l, true)).collect();
    let rank = |d: &str| match d {
        "C5GREG" => 0,
        "CEREG" => 1,
        "CGREG" => 2,
        _ => 3,
    };
    let mut sorted = all;
    sorted.sort_by_key(|r| (!r.state.registered(), rank(&r.domain)));
    sorted.into_iter().next()
}

/// Signal from +CSQ (TS 27.007 §8.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Signal {
    /// <rssi> as given, 0-31, 99 unknown.
    pub csq: u8,
    /// dBm: -113 + 2·rssi (§8.5), absent when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dbm: Option<i16>,
}

pub fn signal(line: &str) -> Option<Signal> {
    let f = fields(line, "+CSQ:")?;
    let rssi = u8::try_from(f.first()?.int()?).ok()?;
    // 99: not known or not detectable (§8.5).
    let dbm = (rssi <= 31).then(|| -113 + 2 * i16::from(rssi));
    Some(Signal { csq: rssi, dbm })
}

/// Operator from one or two +COPS? lines (TS 27.007 §7.3): format 0 long alphanumeric,
/// 1 short, 2 numeric MCC+MNC.
pub fn operator(lines: &[String]) -> (Option<String>, Option<String>) {
    let mut name = None;
    let mut numeric = None;
    for l in lines {
        let Some(f) = fields(l, "+COPS:") else {
            continue;
        };
        let (Some(format), Some(oper)) = (f.get(1).and_then(Field::int), f.get(2)) else {
            continue;
        };
        match (format, oper.text()) {
            (2, Some(o)) => numeric = Some(o.to_string()),
            (0 | 1, Some(o)) => name = Some(o.to_string()),
            _ => {}
        }
    }
    (name, numeric)
}

/// +CPIN? (TS 27.007 §8.3): "READY" or the code the SIM waits for.
pub fn pin_state(lines: &[String]) -> Option<String> {
    lines.iter().find_map(|l| {
        fields(l, "+CPIN:").and_then(|f| f.first().and_then(Field::text).map(str::to_string))
    })
}

/// The ICCID from a vendor reply (`+QCCID: 8901...F`, `#CCID: ...`, or a bare number).
pub fn vendor_iccid(lines: &[String], prefix: Option<&str>) -> Option<Iccid> {
    lines.iter().find_map(|l| {
        let text = match prefix {
            Some(p) => fields(l, p)?.first()?.text()?.to_string(),
            None => l.trim().to_string(),
        };
        Iccid::from_digits(&text).ok()
    })
}

/// A +CRSM reply (TS 27.007 §8.18): SW1, SW2 and the response data.
pub fn crsm(lines: &[String]) -> Option<(u8, u8, Vec<u8>)> {
    lines.iter().find_map(|l| {
        let f = fields(l, "+CRSM:")?;
        let sw1 = u8::try_from(f.first()?.int()?).ok()?;
        let sw2 = u8::try_from(f.get(1)?.int()?).ok()?;
        let data = match f.get(2).and_then(Field::text) {
            Some(h) => hex::decode(h).ok()?,
            None => Vec::new(),
        };
        Some((sw1, sw2, data))
    })
}

/// Active PDP contexts from +CGACT? (TS 27.007 §10.1.10): (cid, active).
pub fn contexts(lines: &[String]) -> Vec<(u8, bool)> {
    lines
        .iter()
        .filter_map(|l| {
            let f = fields(l, "+CGACT:")?;
            let cid = u8::try_from(f.first()?.int()?).ok()?;
            Some((cid, f.get(1)?.int()? == 1))
        })
        .collect()
}

/// Bytes sent and received from a vendor counter line.
pub fn counters(
    lines: &[String],
    prefix: &str,
    sent: usize,
    received: usize,
) -> Option<(u64, u64)> {
    lines.iter().find_map(|l| {
        let f = fields(l, prefix)?;
        Some((f.get(sent)?.int()?, f.get(received)?.int()?))
    })
}

/// The logical channel from +CCHO: bare `<sessionid>` (TS 27.007 §8.45) or Quectel's
/// `+CCHO: <sessionid>` (Quectel manual §5.13).
pub fn channel(lines: &[String]) -> Option<u8> {
    lines.iter().find_map(|l| {
        let text = fields(l, "+CCHO:")
            .and_then(|f| f.first().and_then(Field::text).map(str::to_string))
            .unwrap_or_else(|| l.trim().to_string());
        text.parse().ok()
    })
}

/// The response APDU from +CGLA: `+CGLA: <length>,<response>` (TS 27.007 §8.43).
pub fn cgla(lines: &[String]) -> Option<Vec<u8>> {
    lines.iter().find_map(|l| {
        let f = fields(l, "+CGLA:")?;
        hex::decode(f.get(1)?.text()?).ok()
    })
}

/// The response APDU from +CGLA, its length checked: `<length>` counts the hex
/// characters of `<response>` (TS 27.007 §8.43). A shorter response is a truncated
/// answer (some firmwares cut long ones), said with both figures.
pub fn cgla_checked(lines: &[String]) -> Result<Vec<u8>, String> {
    apdu_checked(lines, "+CGLA")
}

/// The response APDU of +CGLA or +CSIM (`+CSIM: <length>,<response>`, TS 27.007 §8.17,
/// the same shape), its length checked.
pub fn apdu_checked(lines: &[String], command: &str) -> Result<Vec<u8>, String> {
    let prefix = format!("{command}:");
    let Some(f) = lines.iter().find_map(|l| fields(l, &prefix)) else {
        return Err(format!("no {prefix} line in {lines:?}"));
    };
    let said = f.first().and_then(Field::int);
    let text = f.get(1).and_then(Field::text).unwrap_or_default();
    if said.is_some_and(|n| n != text.len() as u64) {
        return Err(format!(
            "{command} answer truncated: its length says {} hex characters, {} came",
            said.unwrap_or_default(),
            text.len()
        ));
    }
    let bytes = hex::decode(text).map_err(|e| format!("{command} answer not hex: {e}"))?;
    if bytes.len() < 2 {
        return Err(format!("{command} answer without a status word"));
    }
    Ok(bytes)
}

/// The EID in a GetEUICCData response: tag BF3E, then 5A 10 and 16 bytes (SGP.22
/// §5.7.20), followed by SW 9000.
pub fn eid(resp: &[u8]) -> Option<String> {
    let (body, sw) = resp.split_at(resp.len().checked_sub(2)?);
    if sw != [0x90, 0x00] {
        return None;
    }
    let at = body.windows(2).position(|w| w == [0x5A, 0x10])?;
    let eid = body.get(at + 2..at + 18)?;
    Some(hex::encode_upper(eid))
}

/// Unprefixed identity lines (+CGMI, +CGMM, +CGMR, +CGSN, TS 27.007 §5.1-§5.4): some
/// firmware prefixes them anyway ("+CGMR: x", Quectel's "Revision: x").
pub fn identity_text(line: &str) -> String {
    let mut t = line.trim();
    for p in ["+CGMI:", "+CGMM:", "+CGMR:", "+CGSN:", "Revision:"] {
        if let Some(rest) = t.strip_prefix(p) {
            t = rest.trim();
        }
    }
    t.trim_matches('"').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    // Samples from tests/fixtures/at-vectors.jsonl (sources there).

    #[test]
    fn creg_states_and_location() {
        let r = registration("+CREG: 2,5,\"9BCD\",\"09AB\"", true).unwrap();
        assert_eq!(r.state, RegState::Roaming);
        assert_eq!(r.area.as_deref(), Some("9BCD"));
        let r = registration("+CREG: 2,1,\"9BCD\",\"09AB\",2", true).unwrap();
        assert_eq!((r.state, r.access_tech), (RegState::Home, Some("UTRAN")));
        assert_eq!(
            registration("+CREG: 2,2", true).unwrap().state,
            RegState::Searching
        );
        assert_eq!(
            registration("+CREG: 2,3", true).unwrap().state,
            RegState::Denied
        );
    }

    #[test]
    fn cgreg_urc_has_no_n() {
        let r = registration("+CGREG: 1,\"D504\",\"80428B5\",7", false).unwrap();
        assert_eq!(r.state, RegState::Home);
        assert_eq!(r.cell.as_deref(), Some("80428B5"));
        assert_eq!(r.access_tech, Some("E-UTRAN"));
        let r = registration("+CGREG: 2,5,\"00DE\",\"0A5B\",0,\"01\"", true).unwrap();
        assert_eq!((r.state, r.access_tech), (RegState::Roaming, Some("GSM")));
    }

    #[test]
    fn best_registration_prefers_registered_eps() {
        let r = best_registration(&l(&[
            "+CREG: 0,2",
            "+CGREG: 0,1",
            "+CEREG: 2,1,\"1A2B\",\"01ABCDEF\",7",
        ]))
        .unwrap();
        assert_eq!(r.domain, "CEREG");
        assert_eq!(r.state, RegState::Home);
    }

    #[test]
    fn csq_to_dbm() {
        assert_eq!(
            signal("+CSQ: 2,99"),
            Some(Signal {
                csq: 2,
                dbm: Some(-109)
            })
        );
        assert_eq!(signal("+CSQ: 99,99").unwrap().dbm, None);
        assert_eq!(signal("+CSQ: 5A,99"), None);
    }

    #[test]
    fn cops_name_and_numeric() {
        let (name, num) = operator(&l(&[
            "+COPS: 0,0,\"Vodafone NL\",7",
            "+COPS: 2,2,\"20404\",6",
        ]));
        assert_eq!(name.as_deref(), Some("Vodafone NL"));
        assert_eq!(num.as_deref(), Some("20404"));
        assert_eq!(operator(&l(&["+COPS: 0"])), (None, None));
    }

    #[test]
    fn iccid_with_filler_and_plain() {
        let i = vendor_iccid(&l(&["+QCCID: 8901260886258128535F"]), Some("+QCCID:")).unwrap();
        assert_eq!(i.as_str(), "8901260886258128535");
        let i = vendor_iccid(&l(&["#CCID: 8903213243545678129"]), Some("#CCID:")).unwrap();
        assert_eq!(i.as_str(), "8903213243545678129");
        let i = vendor_iccid(&l(&["89860025128306012474"]), None).unwrap();
        assert_eq!(i.as_str(), "89860025128306012474");
        // Hex digits are kept as read (openLuat/luatos-doc-pool 780E_AT_SIM应用指南.md
        // publishes +ICCID: 898604981022C0254186); lower case is normalised.
        let i = vendor_iccid(&l(&["+ICCID: 898604981022c0254186"]), Some("+ICCID:")).unwrap();
        assert_eq!(i.as_str(), "898604981022C0254186");
        assert!(!i.luhn_ok());
    }

    #[test]
    fn crsm_and_cgact_and_counters() {
        assert_eq!(
            crsm(&l(&["+CRSM: 144,0,FFFF"])),
            Some((144, 0, vec![0xFF, 0xFF]))
        );
        assert_eq!(crsm(&l(&["+CRSM: 144,0"])), Some((144, 0, vec![])));
        assert_eq!(
            contexts(&l(&["+CGACT: 5,1", "+CGACT: 4,0"])),
            vec![(5, true), (4, false)]
        );
        assert_eq!(
            counters(&l(&["+QGDCNT: 3832,4618"]), "+QGDCNT:", 0, 1),
            Some((3832, 4618))
        );
        assert_eq!(
            counters(&l(&["#GDATAVOL: 2,729407,11,729418"]), "#GDATAVOL:", 2, 3),
            Some((11, 729418))
        );
    }

    #[test]
    fn cgla_length_is_checked() {
        assert_eq!(
            cgla_checked(&l(&["+CGLA: 4,\"9000\""])),
            Ok(vec![0x90, 0x00])
        );
        let err = cgla_checked(&l(&["+CGLA: 8,\"BF2D\""])).unwrap_err();
        assert!(err.contains("truncated") && err.contains("says 8"), "{err}");
    }

    #[test]
    fn logical_channel_and_cgla() {
        assert_eq!(channel(&l(&["+CCHO: 1"])), Some(1));
        assert_eq!(channel(&l(&["3"])), Some(3));
        assert_eq!(cgla(&l(&["+CGLA: 4,\"6121\""])), Some(vec![0x61, 0x21]));
    }

    #[test]
    fn eid_from_get_euicc_data() {
        let resp = hex::decode("BF3E125A1089049032123451234512345678901235").unwrap();
        let mut with_sw = resp.clone();
        with_sw.extend_from_slice(&[0x90, 0x00]);
        assert_eq!(
            eid(&with_sw).as_deref(),
            Some("89049032123451234512345678901235")
        );
        assert_eq!(eid(&resp), None);
    }

    #[test]
    fn identity_lines_lose_their_prefixes() {
        assert_eq!(
            identity_text("Revision: EC25EFAR06A03M4G"),
            "EC25EFAR06A03M4G"
        );
        assert_eq!(identity_text("+CGMI: \"u-blox\""), "u-blox");
    }
}
