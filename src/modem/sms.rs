//! SMS through a modem in PDU mode (TS 27.005): received messages kept in the modem's
//! storage and announced by `+CMTI` (`+CNMI=2,1`: stored, then indicated — never
//! routed straight to the TE, where a message the host fails to take is lost), listed
//! with `+CMGL=4`, deleted one by one with `+CMGD` only once the caller has made each
//! durable; sent with `+CMGS` (one PDU per part). Decoding is src/sms's.

use super::profile::Profile;
use crate::at::conn::AtIo;
use crate::at::parser::{fields, Field};
use crate::at::{AtCommand, AtConnection, AtError, Refusal};
use crate::sms::{parse_deliver, Stored};

/// What the modem's storage holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Received messages (SMS-DELIVER), decoded.
    pub received: Vec<Stored>,
    /// Received PDUs that do not decode: index, the PDU (hex) and why.
    pub undecodable: Vec<(u32, String, String)>,
    /// Storage use (+CPMS <used1>, <total1>), when the modem said.
    pub used: Option<u32>,
    pub total: Option<u32>,
}

impl Listing {
    /// Nothing more can arrive until space is made (the network holds the rest, TS
    /// 23.040 §10.1 memory capacity exceeded).
    pub fn full(&self) -> bool {
        matches!((self.used, self.total), (Some(u), Some(t)) if t > 0 && u >= t)
    }
}

/// PDU mode, new messages stored and indicated (TS 27.005 §3.2.3 +CMGF=0, §3.4.1
/// +CNMI=2,1: <mode> 2 buffers indications while the link is busy, <mt> 1 stores the
/// message and sends `+CMTI: <mem>,<index>`). `Ok(false)`: the modem has no SMS.
pub async fn setup<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
) -> Result<bool, AtError> {
    let cmds = [
        AtCommand::new("AT+CMGF=0")?,
        AtCommand::new("AT+CNMI=2,1,0,0,0")?,
    ];
    let g = conn.group(&cmds, profile.timeouts.sim()).await?;
    Ok(g.refused.is_empty())
}

/// List every message in the storage (TS 27.005 §3.4.2 +CMGL=4 "all", PDU mode: a
/// `+CMGL: <index>,<stat>,[<alpha>],<length>` line, then the PDU), with the storage's
/// use (§3.2.2 +CPMS?), in one line.
pub async fn list<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
) -> Result<Result<Listing, Refusal>, AtError> {
    let cmds = [AtCommand::new("AT+CPMS?")?, AtCommand::new("AT+CMGL=4")?];
    let g = conn.group(&cmds, profile.timeouts.sim()).await?;
    if let Some(r) = g.refused.iter().find(|r| r.command.contains("CMGL")) {
        return Ok(Err(r.clone()));
    }
    Ok(Ok(read_listing(&g.lines)))
}

/// The listing's lines read (pure).
pub fn read_listing(lines: &[String]) -> Listing {
    let mut out = Listing::default();
    if let Some(f) = lines.iter().find_map(|l| fields(l, "+CPMS:")) {
        out.used = f
            .get(1)
            .and_then(Field::int)
            .and_then(|v| u32::try_from(v).ok());
        out.total = f
            .get(2)
            .and_then(Field::int)
            .and_then(|v| u32::try_from(v).ok());
    }
    let mut it = lines.iter().peekable();
    while let Some(l) = it.next() {
        let Some(f) = fields(l, "+CMGL:") else {
            continue;
        };
        let (Some(index), Some(stat)) = (
            f.first()
                .and_then(Field::int)
                .and_then(|v| u32::try_from(v).ok()),
            f.get(1).and_then(Field::int),
        ) else {
            continue;
        };
        let Some(pdu) = it.next_if(|n| !n.starts_with('+')) else {
            continue;
        };
        // <stat> 0 received unread, 1 received read; 2 and 3 are stored outgoing
        // messages, not ours to take (TS 27.005 §3.1).
        if stat > 1 {
            continue;
        }
        match parse_deliver(pdu) {
            Ok(sms) => out.received.push(Stored { index, sms }),
            Err(e) => out.undecodable.push((index, pdu.clone(), e.to_string())),
        }
    }
    out
}

/// Delete one message (TS 27.005 §3.5.4 +CMGD=<index>).
pub async fn delete<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
    index: u32,
) -> Result<Result<(), Refusal>, AtError> {
    let cmd = AtCommand::new(&format!("AT+CMGD={index}"))?;
    Ok(conn
        .command(&cmd, profile.timeouts.sim())
        .await?
        .map(|_| ()))
}

/// What a send did: the message reference of each part sent (TS 27.005 §3.5.1
/// `+CMGS: <mr>`), and the AT lines it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub references: Vec<u8>,
    pub at_lines: u64,
}

/// Why a send did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendFailure {
    #[error(transparent)]
    Input(#[from] crate::sms::PduError),
    /// The modem refused a part; `sent` parts went before it.
    #[error("part {part} of {parts} refused: {why}")]
    Refused {
        part: usize,
        parts: usize,
        sent: usize,
        why: String,
    },
}

/// Send `text` to `number`, in as many parts as it takes (src/sms/pdu.rs `submit`).
pub async fn send<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
    number: &str,
    text: &str,
) -> Result<Result<Sent, SendFailure>, AtError> {
    // A reference per concatenated message (TS 23.040 §9.2.3.24.1): the clock's low
    // bits differ between two messages sent by one gateway in a row.
    let reference = (crate::time::unix_now() & 0xFF) as u8;
    let parts = match crate::sms::pdu::submit(number, text, reference) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e.into())),
    };
    let start = conn.stats().commands;
    let mode = AtCommand::new("AT+CMGF=0")?;
    if let Err(r) = conn.command(&mode, profile.timeouts.default()).await? {
        return Ok(Err(SendFailure::Refused {
            part: 1,
            parts: parts.len(),
            sent: 0,
            why: r.result.to_string(),
        }));
    }
    let mut references = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let cmd = AtCommand::new(&format!("AT+CMGS={}", p.tpdu_len))?;
        match conn
            .command_with_data(&cmd, &p.pdu, profile.timeouts.network())
            .await?
        {
            Ok(r) => references.push(
                r.line("+CMGS:")
                    .and_then(|l| fields(l, "+CMGS:"))
                    .and_then(|f| f.first().and_then(Field::int))
                    .map_or(0, |v| (v & 0xFF) as u8),
            ),
            Err(r) => {
                return Ok(Err(SendFailure::Refused {
                    part: i + 1,
                    parts: parts.len(),
                    sent: i,
                    why: r.result.to_string(),
                }))
            }
        }
    }
    Ok(Ok(Sent {
        references,
        at_lines: conn.stats().commands - start,
    }))
}

/// The storage and index of a `+CMTI: <mem>,<index>` URC.
pub fn cmti(urc: &str) -> Option<(String, u32)> {
    let f = fields(urc, "+CMTI:")?;
    Some((
        f.first().and_then(Field::text)?.to_string(),
        f.get(1)
            .and_then(Field::int)
            .and_then(|v| u32::try_from(v).ok())?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sms::pdu::deliver;

    #[test]
    fn a_listing_reads_received_messages_and_skips_sent_ones() {
        let a = deliver("+31612345678", "hi", 1_700_000_000, None);
        let lines: Vec<String> = vec![
            "+CPMS: \"SM\",3,10,\"SM\",3,10,\"SM\",3,10".into(),
            "+CMGL: 1,1,,20".into(),
            a.clone(),
            "+CMGL: 2,2,,20".into(),
            "0011000B917238880900F10000A70AE8329BFD4697D9EC37".into(),
            "+CMGL: 5,0,,3".into(),
            "00FF".into(),
        ];
        let l = read_listing(&lines);
        assert_eq!(l.received.len(), 1);
        assert_eq!(l.received[0].index, 1);
        assert_eq!(l.received[0].sms.text, "hi");
        assert_eq!(l.undecodable.len(), 1);
        assert_eq!(l.undecodable[0].0, 5);
        assert_eq!((l.used, l.total), (Some(3), Some(10)));
        assert!(!l.full());
    }

    #[test]
    fn cmti_names_storage_and_index() {
        assert_eq!(cmti("+CMTI: \"SM\",3"), Some(("SM".into(), 3)));
        assert_eq!(cmti("+CMTI: \"ME\""), None);
    }
}
