//! The emulated modem's operator channels: USSD (TS 27.007 §7.15) answered from the
//! home operator's replies in devices/operators (src/operators.rs, by the SIM's IMSI),
//! in the shape the family and the TE character set give them; SMS in PDU mode (TS
//! 27.005): a storage of limited size, messages received into it with `+CMTI`, the
//! network holding what does not fit until space is made (TS 23.040 §10.1), listing,
//! reading, deleting, and sending through the `> ` prompt.

use crate::at::parser::{param_list, Field};
use crate::modem::profile::{Profile, UssdSend};
use crate::operators::Operators;
use crate::sms::gsm7;
use crate::sms::pdu::{deliver, ussd_alphabet, Alphabet, Part};

/// A stored message: <stat> (0 unread, 1 read) and its PDU.
#[derive(Debug, Clone)]
struct Slot {
    index: u32,
    stat: u8,
    pdu: String,
}

/// The modem's messaging state.
#[derive(Debug)]
pub struct Messaging {
    operators: Operators,
    /// The TE character set (+CSCS), upper case.
    charset: String,
    /// A USSD session waits for an answer.
    ussd_open: bool,
    store: Vec<Slot>,
    capacity: usize,
    /// Messages the network holds while the storage is full (PDUs).
    held: std::collections::VecDeque<String>,
    /// PDUs sent with +CMGS.
    pub sent: Vec<String>,
    next_mr: u8,
    next_reference: u16,
}

/// TS 27.005 §3.2.5: 321 invalid memory index, 303 operation not supported, 304
/// invalid PDU mode parameter.
const CMS_INVALID_INDEX: &str = "+CMS ERROR: 321";
const CMS_NOT_SUPPORTED: &str = "+CMS ERROR: 303";
const CMS_INVALID_PDU: &str = "+CMS ERROR: 304";

impl Messaging {
    pub fn new(operators: Operators, capacity: usize) -> Messaging {
        Messaging {
            operators,
            charset: "IRA".into(),
            ussd_open: false,
            store: Vec::new(),
            capacity,
            held: Default::default(),
            sent: Vec::new(),
            next_mr: 0,
            next_reference: 0,
        }
    }

    pub fn stored(&self) -> usize {
        self.store.len()
    }

    /// Store a PDU if there is room: its `+CMTI` URC, or None (held by the network).
    fn store_pdu(&mut self, pdu: String) -> Option<String> {
        if self.store.len() >= self.capacity {
            self.held.push_back(pdu);
            return None;
        }
        // The lowest free index, counted from 1 as SIM storages do.
        let index = (1..)
            .find(|i| !self.store.iter().any(|s| s.index == *i))
            .unwrap_or(1);
        self.store.push(Slot {
            index,
            stat: 0,
            pdu,
        });
        Some(format!("+CMTI: \"SM\",{index}"))
    }

    /// A message from `sender` arrives: split into concatenated parts when it needs
    /// more than one (153 GSM 7-bit septets or 67 UCS2 characters each); the URCs to
    /// send.
    pub fn receive(&mut self, sender: &str, text: &str, now: i64) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        let gsm = gsm7::encode(text).is_some();
        let (single, each) = if gsm { (160, 153) } else { (70, 67) };
        let parts: Vec<String> = if chars.len() <= single {
            vec![text.to_string()]
        } else {
            chars.chunks(each).map(|c| c.iter().collect()).collect()
        };
        self.next_reference = self.next_reference.wrapping_add(1);
        let total = parts.len() as u8;
        let mut urcs = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let part = (total > 1).then_some(Part {
                reference: self.next_reference & 0xFF,
                total,
                seq: i as u8 + 1,
            });
            urcs.extend(self.store_pdu(deliver(sender, p, now, part)));
        }
        urcs
    }

    /// Room was made: the network delivers what it held.
    fn release(&mut self) -> Vec<String> {
        let mut urcs = Vec::new();
        while self.store.len() < self.capacity {
            let Some(pdu) = self.held.pop_front() else {
                break;
            };
            urcs.extend(self.store_pdu(pdu));
        }
        urcs
    }

    /// A messaging command: its lines, or its error; `urcs` gets what follows the
    /// final result (a USSD reply, new-message indications).
    pub fn command(
        &mut self,
        profile: &Profile,
        imsi: Option<&str>,
        name: &str,
        arg: &str,
        urcs: &mut Vec<String>,
    ) -> Result<Vec<String>, String> {
        let params = || param_list(arg.get(1..).unwrap_or_default());
        match (name, arg) {
            ("+CSCS", "?") => Ok(vec![format!("+CSCS: \"{}\"", self.charset)]),
            ("+CSCS", a) if a.starts_with('=') => {
                let cs = params()
                    .first()
                    .and_then(Field::text)
                    .map(str::to_ascii_uppercase)
                    .ok_or("ERROR")?;
                if !matches!(cs.as_str(), "IRA" | "GSM" | "UCS2") {
                    return Err("+CME ERROR: 4".into());
                }
                self.charset = cs;
                Ok(vec![])
            }
            ("+CUSD", "?") => Ok(vec!["+CUSD: 1".into()]),
            ("+CUSD", a) if a.starts_with('=') => {
                let p = params();
                let n = p.first().and_then(Field::int).ok_or("ERROR")?;
                if n == 2 {
                    self.ussd_open = false;
                    return Ok(vec![]);
                }
                let Some(s) = p.get(1).and_then(Field::text) else {
                    return Ok(vec![]);
                };
                let send = profile.ussd.as_ref().map(|u| u.send).unwrap_or_default();
                let code = self.incoming(s, send).ok_or("+CME ERROR: 4")?;
                urcs.push(self.ussd_reply(imsi, &code, send));
                Ok(vec![])
            }
            ("+CMGF", "=0") | ("+CNMI", _) => Ok(vec![]),
            // Text mode is not emulated: PDU mode is what simgate speaks.
            ("+CMGF", "?") => Ok(vec!["+CMGF: 0".into()]),
            ("+CMGF", _) => Err(CMS_NOT_SUPPORTED.into()),
            ("+CPMS", "?") => {
                let (u, c) = (self.store.len(), self.capacity);
                Ok(vec![format!(
                    "+CPMS: \"SM\",{u},{c},\"SM\",{u},{c},\"SM\",{u},{c}"
                )])
            }
            ("+CMGL", a) => {
                // =4 all; =0 unread (TS 27.005 §3.4.2, PDU mode).
                let want = params().first().and_then(Field::int).unwrap_or(4);
                if a.is_empty() || want > 4 {
                    return Err(CMS_NOT_SUPPORTED.into());
                }
                let mut lines = Vec::new();
                self.store.sort_by_key(|s| s.index);
                for s in &mut self.store {
                    if want == 4 || u64::from(s.stat) == want {
                        lines.push(format!(
                            "+CMGL: {},{},,{}",
                            s.index,
                            s.stat,
                            s.pdu.len() / 2 - 8
                        ));
                        lines.push(s.pdu.clone());
                        s.stat = 1;
                    }
                }
                Ok(lines)
            }
            ("+CMGR", a) if a.starts_with('=') => {
                let i = params().first().and_then(Field::int).ok_or("ERROR")?;
                let s = self
                    .store
                    .iter_mut()
                    .find(|s| u64::from(s.index) == i)
                    .ok_or(CMS_INVALID_INDEX)?;
                let lines = vec![
                    format!("+CMGR: {},,{}", s.stat, s.pdu.len() / 2 - 8),
                    s.pdu.clone(),
                ];
                s.stat = 1;
                Ok(lines)
            }
            ("+CMGD", a) if a.starts_with('=') => {
                let i = params().first().and_then(Field::int).ok_or("ERROR")?;
                let before = self.store.len();
                self.store.retain(|s| u64::from(s.index) != i);
                if self.store.len() == before {
                    return Err(CMS_INVALID_INDEX.into());
                }
                urcs.extend(self.release());
                Ok(vec![])
            }
            _ => Err("ERROR".into()),
        }
    }

    /// The PDU of a +CMGS (TS 27.005 §3.5.1): checked to be an SMS-SUBMIT of the
    /// announced length, kept; the answer's lines.
    pub fn submit(&mut self, tpdu_len: usize, pdu: &str) -> Result<Vec<String>, String> {
        let bytes = hex::decode(pdu.trim()).map_err(|_| CMS_INVALID_PDU.to_string())?;
        let sca = usize::from(*bytes.first().ok_or(CMS_INVALID_PDU)?);
        let tpdu = bytes.get(1 + sca..).ok_or(CMS_INVALID_PDU)?;
        if tpdu.len() != tpdu_len || tpdu.first().is_none_or(|f| f & 0x03 != 0x01) {
            return Err(CMS_INVALID_PDU.into());
        }
        self.sent.push(pdu.trim().to_string());
        self.next_mr = self.next_mr.wrapping_add(1);
        Ok(vec![format!("+CMGS: {}", self.next_mr)])
    }

    /// The string a +CUSD carried, as the family and character set code it.
    fn incoming(&self, s: &str, send: UssdSend) -> Option<String> {
        match send {
            UssdSend::PackedHex => {
                let b = hex::decode(s).ok()?;
                Some(gsm7::decode(&gsm7::unpack_ussd(&b)))
            }
            UssdSend::Text if self.charset == "UCS2" => {
                Some(gsm7::decode_ucs2(&hex::decode(s).ok()?))
            }
            UssdSend::Text => Some(s.to_string()),
        }
    }

    /// The network's answer to `code` as a `+CUSD:` URC.
    fn ussd_reply(&mut self, imsi: Option<&str>, code: &str, send: UssdSend) -> String {
        let entry = imsi
            .and_then(|i| self.operators.for_imsi(i))
            .and_then(|o| o.emulator.iter().find(|e| e.code == code))
            .cloned();
        let Some(e) = entry else {
            self.ussd_open = false;
            return "+CUSD: 4".into();
        };
        if e.network.as_deref() == Some("timeout") {
            self.ussd_open = false;
            return "+CUSD: 5".into();
        }
        let Some(reply) = e.reply.filter(|_| e.network.is_none()) else {
            self.ussd_open = false;
            return "+CUSD: 4".into();
        };
        self.ussd_open = e.continues;
        let s = if ussd_alphabet(e.dcs) == Alphabet::Ucs2 || self.charset == "UCS2" {
            // Most firmwares pass the network's UCS2 through as hex.
            hex::encode_upper(gsm7::encode_ucs2(&reply))
        } else if send == UssdSend::PackedHex {
            let septets: Vec<u8> = reply
                .chars()
                .flat_map(|c| gsm7::septets_of(c).unwrap_or(vec![0x3F]))
                .collect();
            hex::encode_upper(gsm7::pack_ussd(&septets))
        } else {
            // IRA holds ASCII only: anything else shows as '?', as modems do. Line
            // breaks stay raw, as most firmwares send a menu's.
            reply
                .chars()
                .map(|c| if c.is_ascii() && c != '"' { c } else { '?' })
                .collect()
        };
        format!("+CUSD: {},\"{s}\",{}", u8::from(e.continues), e.dcs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sms::concat::reassemble;
    use crate::sms::Stored;

    fn profile() -> Profile {
        crate::modem::Profiles::shipped()
            .unwrap()
            .get("generic-3gpp")
            .unwrap()
            .clone()
    }

    #[test]
    fn a_full_storage_holds_messages_back_until_space_is_made() {
        let mut m = Messaging::new(Operators::default(), 2);
        let mut urcs = Vec::new();
        for i in 0..3 {
            urcs.extend(m.receive("+1", &format!("m{i}"), 0));
        }
        assert_eq!(urcs.len(), 2);
        assert_eq!(m.stored(), 2);
        let mut after = Vec::new();
        m.command(&profile(), None, "+CMGD", "=1", &mut after)
            .unwrap();
        assert_eq!(after, vec!["+CMTI: \"SM\",1".to_string()]);
        assert_eq!(m.stored(), 2);
    }

    #[test]
    fn a_long_ucs2_message_arrives_in_parts_that_reassemble() {
        let mut m = Messaging::new(Operators::default(), 10);
        let text = "Ваш баланс пополнен. ".repeat(5);
        assert_eq!(m.receive("+79161234567", &text, 0).len(), 2);
        let mut urcs = Vec::new();
        let lines = m
            .command(&profile(), None, "+CMGL", "=4", &mut urcs)
            .unwrap();
        let l = crate::modem::sms::read_listing(&lines);
        let stored: Vec<Stored> = l.received;
        let (msgs, waiting) = reassemble(stored, false);
        assert!(waiting.is_empty());
        assert_eq!(msgs[0].text, text);
    }
}
