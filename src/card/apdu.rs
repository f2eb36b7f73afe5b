//! Command APDUs, response status words and the T=0 response procedures
//! (ETSI TS 102 221 §7.3 and §10; 3GPP TS 51.011 §9.4 for GSM's 9Fxx).

use super::{CardError, CardTransport};
use std::fmt;

/// SW1 SW2 of a response (ETSI TS 102 221 §10.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusWord(pub u8, pub u8);

impl StatusWord {
    pub const OK: StatusWord = StatusWord(0x90, 0x00);

    pub fn as_u16(self) -> u16 {
        u16::from(self.0) << 8 | u16::from(self.1)
    }

    /// Normal processing: 9000, or 91xx/92xx (TS 102 221 §10.2.1.1: OK with proactive
    /// command pending / OK after internal retries).
    pub fn is_ok(self) -> bool {
        matches!(self.0, 0x90..=0x92)
    }

    /// 6E00 "class not supported" or 6D00 "instruction not supported": the card does not
    /// speak this CLA — a legacy GSM SIM wants CLA A0 (TS 102 221 §10.2.1.5).
    pub fn is_wrong_class(self) -> bool {
        self.0 == 0x6E || self.0 == 0x6D
    }
}

impl fmt::Display for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02X}{:02X}", self.0, self.1)
    }
}

/// A command APDU (ISO/IEC 7816-4 §5.1): header, optional data, optional Le.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Apdu {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    pub data: Vec<u8>,
    /// Expected response length; `Some(0)` means 256 in a short APDU.
    pub le: Option<u8>,
}

impl Apdu {
    pub fn new(cla: u8, ins: u8, p1: u8, p2: u8) -> Self {
        Apdu {
            cla,
            ins,
            p1,
            p2,
            data: Vec::new(),
            le: None,
        }
    }

    pub fn with_data(mut self, data: &[u8]) -> Self {
        self.data = data.to_vec();
        self
    }

    pub fn with_le(mut self, le: u8) -> Self {
        self.le = Some(le);
        self
    }

    /// Short-APDU encoding (ISO/IEC 7816-4 §5.1, cases 1-4).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.data.len() + 1);
        out.extend_from_slice(&[self.cla, self.ins, self.p1, self.p2]);
        if !self.data.is_empty() {
            // Short APDUs carry at most 255 data bytes; every command we build is far
            // below that, so truncation cannot happen.
            out.push(self.data.len() as u8);
            out.extend_from_slice(&self.data);
        }
        if let Some(le) = self.le {
            out.push(le);
        }
        out
    }
}

/// The CLA of a GET RESPONSE following a command sent with `cla`: GSM keeps A0
/// (TS 51.011 §9.2); otherwise the interindustry class '0X' on the command's logical
/// channel, b1-b2 (TS 102 221 §10.1.1) — also after a proprietary '8X' STORE DATA.
fn get_response_cla(cla: u8) -> u8 {
    if cla == 0xA0 {
        0xA0
    } else {
        cla & 0x03
    }
}

/// A response APDU split into data and status word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub data: Vec<u8>,
    pub sw: StatusWord,
}

impl Response {
    pub fn parse(raw: &[u8], command: &'static str) -> Result<Response, CardError> {
        if raw.len() < 2 {
            return Err(CardError::Malformed {
                command,
                detail: format!("{} byte(s), a response needs at least SW1 SW2", raw.len()),
            });
        }
        let (data, sw) = raw.split_at(raw.len() - 2);
        Ok(Response {
            data: data.to_vec(),
            sw: StatusWord(sw[0], sw[1]),
        })
    }
}

/// A card channel that counts APDUs and runs the T=0 response procedures once for every
/// transport: 61xx and 9Fxx → GET RESPONSE, 6Cxx → repeat with Le=xx. Readers that do
/// this themselves simply never show these status words.
#[derive(Debug)]
pub struct Channel<T> {
    transport: T,
    apdus: u32,
    /// Of `apdus`, those the budget puts "on top": T=0 GET RESPONSE and 6Cxx repeats, and
    /// logical channel management.
    overhead: u32,
    /// Bytes of command APDUs sent, headers included: what a profile download costs the
    /// card link.
    sent: u64,
}

impl<T: CardTransport> Channel<T> {
    pub fn new(transport: T) -> Self {
        Channel {
            transport,
            apdus: 0,
            overhead: 0,
            sent: 0,
        }
    }

    /// APDUs sent so far, GET RESPONSEs included: the figure the benchmarks report.
    pub fn apdus(&self) -> u32 {
        self.apdus
    }

    /// APDUs the identification budget counts: every command of our own, without GET
    /// RESPONSEs, 6Cxx repeats and channel management.
    pub fn commands(&self) -> u32 {
        self.apdus - self.overhead
    }

    pub fn into_inner(self) -> T {
        self.transport
    }

    /// Bytes of command APDUs sent so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent
    }

    fn raw(&mut self, bytes: &[u8], command: &'static str) -> Result<Response, CardError> {
        self.apdus += 1;
        self.sent += bytes.len() as u64;
        let raw = self.transport.transmit(bytes)?;
        Response::parse(&raw, command)
    }

    /// Send `apdu`, following the T=0 procedures, and return the final response.
    pub fn send(&mut self, apdu: &Apdu, command: &'static str) -> Result<Response, CardError> {
        let mut resp = self.raw(&apdu.to_bytes(), command)?;
        // TS 102 221 §7.3.1.1.4: 6Cxx — wrong Le, resend with Le = SW2. Once only: a card
        // that keeps asking is broken, and we say so rather than loop.
        if resp.sw.0 == 0x6C {
            let again = apdu.clone().with_le(resp.sw.1);
            self.overhead += 1;
            resp = self.raw(&again.to_bytes(), command)?;
        }
        // TS 102 221 §7.3.1.1.4: 61xx — xx bytes are waiting; GSM SIMs say 9Fxx
        // (TS 51.011 §9.4.1). GET RESPONSE goes on the command's channel. Chained 61xx are
        // followed to the end, bounded so a looping card cannot hang us.
        let mut data = Vec::new();
        for _ in 0..16 {
            if resp.sw.0 != 0x61 && resp.sw.0 != 0x9F {
                break;
            }
            data.extend_from_slice(&resp.data);
            let get = Apdu::new(get_response_cla(apdu.cla), 0xC0, 0, 0).with_le(resp.sw.1);
            self.overhead += 1;
            resp = self.raw(&get.to_bytes(), command)?;
        }
        if !data.is_empty() {
            data.extend_from_slice(&resp.data);
            resp.data = data;
        }
        Ok(resp)
    }

    /// Send a channel-management command (MANAGE CHANNEL, the SELECT that restores the
    /// basic channel): counted, but outside the identification budget.
    pub fn send_overhead(
        &mut self,
        apdu: &Apdu,
        command: &'static str,
    ) -> Result<Response, CardError> {
        self.overhead += 1;
        self.raw(&apdu.to_bytes(), command)
    }

    /// Like [`Channel::send`] but without following 61xx/9Fxx: for commands whose
    /// response data we do not need (a SELECT whose FCP we ignore), saving a round trip.
    pub fn send_no_response_data(
        &mut self,
        apdu: &Apdu,
        command: &'static str,
    ) -> Result<Response, CardError> {
        self.raw(&apdu.to_bytes(), command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_apdu_cases_encode_per_iso7816() {
        assert_eq!(
            Apdu::new(0x00, 0xB0, 0x82, 0x00).with_le(10).to_bytes(),
            hex::decode("00B082000A").unwrap()
        );
        assert_eq!(
            Apdu::new(0xA0, 0xA4, 0, 0)
                .with_data(&[0x2F, 0xE2])
                .to_bytes(),
            hex::decode("A0A40000022FE2").unwrap()
        );
    }

    #[test]
    fn response_shorter_than_a_status_word_is_malformed() {
        assert!(matches!(
            Response::parse(&[0x90], "TEST"),
            Err(CardError::Malformed { .. })
        ));
    }
}
