//! Concatenated messages put back together (TS 23.040 §9.2.3.24.1): the parts a
//! modem's storage holds are grouped by sender, reference and part count, and a
//! message is whole when every part from 1 to the count is there. The storage itself
//! is the buffer: a part waits there (not in memory) until its siblings arrive.

use super::pdu::Deliver;
use std::collections::BTreeMap;

/// A received PDU and where the modem keeps it (+CMGL's <index>, TS 27.005 §3.4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub index: u32,
    pub sms: Deliver,
}

/// A message as a person reads it, with the storage indexes its parts occupy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub sender: String,
    /// The first part's TP-SCTS (Unix seconds, UTC).
    pub sent_at: i64,
    pub text: String,
    /// Parts it was sent in (1 for a plain message).
    pub parts: u8,
    /// Parts that never came (given only when an incomplete message is let go).
    pub missing: Vec<u8>,
    pub indexes: Vec<u32>,
}

impl Message {
    /// A key that is the same each time this very message is read from the same SIM
    /// (until it is deleted), and differs for another message: what makes its delivery
    /// once-only across restarts.
    pub fn key(&self, iccid: &str) -> String {
        use ring::digest::{digest, SHA256};
        let mut b = Vec::with_capacity(64 + self.text.len());
        for part in [iccid, &self.sender, &self.sent_at.to_string(), &self.text] {
            b.extend_from_slice(part.as_bytes());
            b.push(0);
        }
        for i in &self.indexes {
            b.extend_from_slice(&i.to_be_bytes());
        }
        hex::encode(&digest(&SHA256, &b).as_ref()[..12])
    }
}

/// Group stored parts into messages. Whole messages come back in the order of their
/// first part's index; incomplete ones are kept waiting (their indexes returned
/// apart), unless `let_go` (a full storage: nothing more can arrive until space is
/// made), when they are delivered with what they have and `missing` said.
pub fn reassemble(stored: Vec<Stored>, let_go: bool) -> (Vec<Message>, Vec<u32>) {
    type Key = (String, u16, u8);
    let mut groups: BTreeMap<Key, Vec<Stored>> = BTreeMap::new();
    let mut out = Vec::new();
    for s in stored {
        match s
            .sms
            .part
            .filter(|p| p.total > 1 && p.seq >= 1 && p.seq <= p.total)
        {
            Some(p) => groups
                .entry((s.sms.sender.clone(), p.reference, p.total))
                .or_default()
                .push(s),
            None => out.push(Message {
                sender: s.sms.sender,
                sent_at: s.sms.sent_at,
                text: s.sms.text,
                parts: 1,
                missing: Vec::new(),
                indexes: vec![s.index],
            }),
        }
    }
    let mut waiting = Vec::new();
    for ((sender, _, total), mut parts) in groups {
        parts.sort_by_key(|s| (s.sms.part.map_or(0, |p| p.seq), s.index));
        // A part stored twice (a resend) counts once.
        parts.dedup_by_key(|s| s.sms.part.map_or(0, |p| p.seq));
        let have: Vec<u8> = parts
            .iter()
            .filter_map(|s| s.sms.part.map(|p| p.seq))
            .collect();
        let missing: Vec<u8> = (1..=total).filter(|n| !have.contains(n)).collect();
        if !missing.is_empty() && !let_go {
            waiting.extend(parts.iter().map(|s| s.index));
            continue;
        }
        out.push(Message {
            sender,
            sent_at: parts.first().map_or(0, |s| s.sms.sent_at),
            text: parts.iter().map(|s| s.sms.text.as_str()).collect(),
            parts: total,
            missing,
            indexes: parts.iter().map(|s| s.index).collect(),
        });
    }
    out.sort_by_key(|m| m.indexes.iter().min().copied());
    waiting.sort_unstable();
    (out, waiting)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sms::pdu::{deliver, parse_deliver, Part};

    fn part(index: u32, sender: &str, text: &str, reference: u16, total: u8, seq: u8) -> Stored {
        let p = Part {
            reference,
            total,
            seq,
        };
        Stored {
            index,
            sms: parse_deliver(&deliver(sender, text, 1_700_000_000, Some(p))).unwrap(),
        }
    }

    #[test]
    fn parts_in_any_order_make_one_message() {
        let stored = vec![
            part(4, "+100", "world", 5, 2, 2),
            part(2, "+100", "hello ", 5, 2, 1),
        ];
        let (m, waiting) = reassemble(stored, false);
        assert!(waiting.is_empty());
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].text, "hello world");
        assert_eq!(m[0].indexes, vec![2, 4]);
        assert_eq!(m[0].parts, 2);
    }

    #[test]
    fn same_reference_from_two_senders_are_two_messages() {
        let stored = vec![
            part(1, "+100", "a", 5, 2, 1),
            part(2, "+200", "x", 5, 2, 1),
            part(3, "+100", "b", 5, 2, 2),
            part(4, "+200", "y", 5, 2, 2),
        ];
        let (m, _) = reassemble(stored, false);
        let texts: Vec<&str> = m.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, vec!["ab", "xy"]);
    }

    #[test]
    fn an_incomplete_message_waits_unless_let_go() {
        let stored = vec![part(1, "+100", "a", 5, 3, 1), part(2, "+100", "c", 5, 3, 3)];
        let (m, waiting) = reassemble(stored.clone(), false);
        assert!(m.is_empty());
        assert_eq!(waiting, vec![1, 2]);
        let (m, waiting) = reassemble(stored, true);
        assert!(waiting.is_empty());
        assert_eq!(m[0].text, "ac");
        assert_eq!(m[0].missing, vec![2]);
    }

    #[test]
    fn keys_differ_by_sim_and_by_message() {
        let (m, _) = reassemble(
            vec![part(1, "+1", "x", 1, 2, 1), part(2, "+1", "y", 1, 2, 2)],
            false,
        );
        assert_ne!(m[0].key("8901"), m[0].key("8902"));
        let mut other = m[0].clone();
        other.text.push('!');
        assert_ne!(m[0].key("8901"), other.key("8901"));
        assert_eq!(m[0].key("8901"), m[0].clone().key("8901"));
    }
}
