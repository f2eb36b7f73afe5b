//! Card identification: who is this card, in as few APDUs as the specs allow.

use super::apdu::{Apdu, Channel};
use super::iccid::Iccid;
use super::{CardError, CardTransport};

/// Which command set the card speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CardKind {
    /// A UICC (ETSI TS 102 221), CLA 00.
    Uicc,
    /// A legacy GSM SIM (3GPP TS 51.011), CLA A0.
    Gsm,
}

/// What identification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub kind: CardKind,
    pub iccid: Iccid,
    /// APDUs spent, GET RESPONSEs included.
    pub apdus: u32,
}

/// EF.ICCID's file id under the MF (TS 102 221 §13.2).
const FID_ICCID: [u8; 2] = [0x2F, 0xE2];
/// EF.ICCID's short file identifier (TS 102 221 §13.2, SFI '02').
const SFI_ICCID: u8 = 0x02;
/// EF.ICCID is 10 bytes (TS 102 221 §13.2).
const ICCID_LEN: u8 = 10;

/// Identify the card behind `transport`.
///
/// UICC: one READ BINARY addressing EF.ICCID by its SFI (TS 102 221 §11.1.3: P1 b8=1,
/// b5-b1 = SFI), valid because the MF is the current DF after reset. Cards that refuse
/// SFI addressing get SELECT + READ BINARY. A card refusing CLA 00 (6E00/6D00) is a GSM
/// SIM: SELECT 2FE2 and READ BINARY with CLA A0 (TS 51.011 §9.2).
pub fn identify<T: CardTransport>(transport: T) -> Result<Identity, CardError> {
    let mut ch = Channel::new(transport);
    let read_sfi = Apdu::new(0x00, 0xB0, 0x80 | SFI_ICCID, 0x00).with_le(ICCID_LEN);
    let first = ch.send(&read_sfi, "READ BINARY EF.ICCID (SFI)")?;
    let (kind, raw) = if first.sw.is_ok() {
        (CardKind::Uicc, first.data)
    } else if first.sw.is_wrong_class() {
        (CardKind::Gsm, read_by_select(&mut ch, 0xA0)?)
    } else {
        (CardKind::Uicc, read_by_select(&mut ch, 0x00)?)
    };
    let iccid = Iccid::from_ef(&raw).map_err(|e| CardError::Malformed {
        command: "READ BINARY EF.ICCID",
        detail: e.to_string(),
    })?;
    Ok(Identity {
        kind,
        iccid,
        apdus: ch.apdus(),
    })
}

fn read_by_select<T: CardTransport>(ch: &mut Channel<T>, cla: u8) -> Result<Vec<u8>, CardError> {
    // UICC: P1=00 select by FID, P2=0C no data returned (TS 102 221 §11.1.1.2): the
    // current DF is the MF after reset. GSM: P1=P2=00 is the only form (TS 51.011 §9.2.1),
    // answered 9Fxx with the FCP we do not need.
    let p2 = if cla == 0x00 { 0x0C } else { 0x00 };
    let select = Apdu::new(cla, 0xA4, 0x00, p2).with_data(&FID_ICCID);
    let sel = ch.send_no_response_data(&select, "SELECT EF.ICCID")?;
    if !(sel.sw.is_ok() || sel.sw.0 == 0x9F || sel.sw.0 == 0x61) {
        return Err(CardError::Refused {
            command: "SELECT EF.ICCID",
            sw: sel.sw,
        });
    }
    let read = Apdu::new(cla, 0xB0, 0, 0).with_le(ICCID_LEN);
    let resp = ch.send(&read, "READ BINARY EF.ICCID")?;
    if !resp.sw.is_ok() {
        return Err(CardError::Refused {
            command: "READ BINARY EF.ICCID",
            sw: resp.sw,
        });
    }
    Ok(resp.data)
}
