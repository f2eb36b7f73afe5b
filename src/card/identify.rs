//! Card identification: who is this card, in as few APDUs as the specs allow.
//!
//! One plan for `read`, `run` and `station` (they all read through
//! `reader::read_card` with the same options), every answer used once:
//!
//! - SELECT ISD-R on the basic channel (its FCI not fetched). A GSM SIM refuses CLA 00
//!   (6E00/6D00); a plain UICC answers 6A82, which changes nothing (TS 102 221
//!   §11.1.1.1), so the MF is still current for what follows.
//! - eUICC: GetEUICCData (the EID) and GetProfilesInfo. The enabled profile's entry
//!   carries its ICCID (the EF.ICCID of its file system, SGP.22 §5.7.15) and its
//!   service provider name: no EF.ICCID or EF.SPN read. No enabled profile: a Blank
//!   eSIM, with no USIM to read.
//! - Plain UICC: EF.ICCID by SFI '02' (TS 102 221 §13.2).
//! - Subscriber: SELECT ADF USIM without response data, EF.IMSI by SFI '07'
//!   (TS 31.102 §4.2.2), and on a plain UICC EF.SPN (no SFI: SELECT + READ).
//!
//! That is 6 APDUs on the wire for a USIM with an EF.SPN and 7 for an eUICC with an
//! enabled profile on T=0 (GET RESPONSE after each ES10 answer), tests/it/card_engine.rs.
//! The basic channel is left where the reads ended (the ISD-R or ADF USIM selected):
//! the reader layer resets the card as it lets it go (`reader::read_card`), which puts
//! it back in the state it was found in at insertion — no APDU on the wire, against
//! one SELECT MF that would restore the MF but leave the USIM session open.

use super::apdu::{Apdu, Channel, StatusWord};
use super::es10::{self, ProfileInfo, ProfileState};
use super::euicc::{self, Eid, IsdrAid, Profiles};
use super::iccid::Iccid;
use super::{subscriber, tlv, CardError, CardKind, CardTransport};

/// What the eUICC side of a card told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Euicc {
    /// The ISD-R AID the card answered (hex), and its name in devices/isdr_aids.toml.
    pub isdr_aid: String,
    pub isdr_name: String,
    /// `None` when GetEUICCData was refused or unreadable.
    pub eid: Option<Eid>,
    /// `None` when GetProfilesInfo was refused or unreadable.
    pub profiles: Option<Profiles>,
    /// Every profile with its name, provider, nickname and class (the state row's
    /// `esim_profiles`); `None` when GetProfilesInfo was refused or unreadable.
    pub profile_list: Option<Vec<ProfileInfo>>,
    /// The ISD-R was reached on the basic channel (always, since identification
    /// stopped opening a logical channel).
    pub basic_channel: bool,
}

/// What identification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub kind: CardKind,
    /// `None` only on an eUICC without an enabled profile, whose MF has no EF.ICCID.
    pub iccid: Option<Iccid>,
    /// `Some` when the card answered an ISD-R AID: an eSIM.
    pub euicc: Option<Euicc>,
    pub imsi: Option<String>,
    /// Service provider name (EF.SPN).
    pub spn: Option<String>,
    /// PIN1's lock state (src/card/pin.rs), when subscriber data was read.
    pub lock: Option<crate::sim::Lock>,
    /// APDUs the identification budget counts: our own commands for ICCID, card kind,
    /// ISD-R, EID and profiles (no GET RESPONSE, no channel management).
    pub apdus: u32,
    /// Our own commands for IMSI and SPN, on top of `apdus`.
    pub apdus_subscriber: u32,
    /// Every APDU on the wire: T=0 GET RESPONSEs and channel management included.
    pub apdus_total: u32,
}

impl Identity {
    /// A Blank eSIM: an eUICC with no enabled profile (README.md, "The SIM record").
    pub fn is_blank_esim(&self) -> bool {
        self.euicc
            .as_ref()
            .is_some_and(|e| e.profiles == Some(Profiles::NoneEnabled))
    }
}

/// What to read beyond the ICCID.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// ISD-R AIDs to probe, in order, the standard one first; empty: do not look for an
    /// eUICC.
    pub isdr_aids: &'a [IsdrAid],
    /// Probe the AIDs after the first (vendors') too. Each costs one SELECT on every
    /// card that is not an eUICC, so the reader layer sets this from its policy
    /// (`readers.vendor_isdr_aids`: always, or when the ATR declares an eUICC).
    pub vendor_aids: bool,
    /// Read IMSI and SPN too (two to four more APDUs).
    pub subscriber: bool,
}

impl Default for Options<'static> {
    /// Everything: every ISD-R AID, subscriber data.
    fn default() -> Self {
        Options {
            isdr_aids: euicc::shipped_aids(),
            vendor_aids: true,
            subscriber: true,
        }
    }
}

/// EF.ICCID's file id under the MF (TS 102 221 §13.2).
const FID_ICCID: [u8; 2] = [0x2F, 0xE2];
/// EF.ICCID's short file identifier (TS 102 221 §13.2, SFI '02').
const SFI_ICCID: u8 = 0x02;
/// EF.ICCID is 10 bytes (TS 102 221 §13.2).
const ICCID_LEN: u8 = 10;
/// EF.DIR's SFI (TS 102 221 §13.1, SFI '1E').
const SFI_DIR: u8 = 0x1E;
/// The USIM application's RID + application code (TS 101 220 Annex E: 'A000000087'
/// 3GPP, '1002' USIM); a right-truncated AID selects it (ISO/IEC 7816-4 §7.1.1).
const USIM_AID_PREFIX: [u8; 7] = [0xA0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x02];
/// EF.IMSI: SFI '07' in ADF USIM (TS 31.102 §4.2.2), 9 bytes.
const SFI_IMSI: u8 = 0x07;
const IMSI_LEN: u8 = 9;
/// EF.IMSI in DF.GSM (TS 51.011 §10.3.2) and DF.GSM itself (TS 51.011 §10.7).
const DF_GSM: [u8; 2] = [0x7F, 0x20];
const FID_IMSI: [u8; 2] = [0x6F, 0x07];
/// EF.SPN (TS 31.102 §4.2.12, TS 51.011 §10.3.11): no SFI, 17 bytes.
const FID_SPN: [u8; 2] = [0x6F, 0x46];
const SPN_LEN: u8 = 17;
/// The MF (TS 102 221 §8.2).
const FID_MF: [u8; 2] = [0x3F, 0x00];

/// 6A82 "file or application not found" (TS 102 221 §10.2.1.5).
fn not_found(sw: StatusWord) -> bool {
    sw == StatusWord(0x6A, 0x82)
}

/// A SELECT we sent without fetching its response data succeeded: 9000, or data
/// waiting (61xx; 9Fxx on a GSM SIM, TS 51.011 §9.4.1).
fn selected(sw: StatusWord) -> bool {
    sw.is_ok() || sw.0 == 0x61 || sw.0 == 0x9F
}

/// Identify the card behind `transport` (the plan in this module's header).
///
/// The basic channel is left where the reads ended: the caller resets the card when it
/// lets it go (`reader::read_card`), as a terminal would.
pub fn identify<T: CardTransport>(transport: T, opts: &Options<'_>) -> Result<Identity, CardError> {
    let mut ch = Channel::new(transport);
    let aids = if opts.vendor_aids {
        opts.isdr_aids
    } else {
        &opts.isdr_aids[..opts.isdr_aids.len().min(1)]
    };
    let mut id = Identity {
        kind: CardKind::Uicc,
        iccid: None,
        euicc: None,
        imsi: None,
        spn: None,
        lock: None,
        apdus: 0,
        apdus_subscriber: 0,
        apdus_total: 0,
    };
    match probe_isdr(&mut ch, aids)? {
        Probe::WrongClass => gsm(&mut ch, opts, &mut id)?,
        Probe::Isdr(aid) => euicc_rest(&mut ch, opts, aid, &mut id)?,
        Probe::NotFound => match read_iccid_sfi(&mut ch)? {
            None => gsm(&mut ch, opts, &mut id)?,
            Some(raw) => {
                id.iccid = iccid_from_ef(raw)?;
                if opts.subscriber {
                    let before = ch.commands();
                    (id.imsi, id.spn) = usim_subscriber(&mut ch, true)?;
                    id.apdus_subscriber = ch.commands() - before;
                }
            }
        },
    }
    if opts.subscriber && !id.is_blank_esim() {
        // A readable IMSI means PIN1 lets us in: ready, no APDU spent. Otherwise ask
        // the card why, spending no attempt (src/card/pin.rs): a locked SIM's row says so.
        let before = ch.commands();
        id.lock = match id.imsi {
            Some(_) => Some(crate::sim::Lock::ready()),
            None => super::pin::lock_state(&mut ch, id.kind)?,
        };
        id.apdus_subscriber += ch.commands() - before;
    }
    if id.iccid.is_none() && id.euicc.as_ref().is_none_or(|e| e.eid.is_none()) {
        // Neither identifier: nothing to show the person at the station.
        return Err(CardError::Refused {
            command: "SELECT EF.ICCID",
            sw: StatusWord(0x6A, 0x82),
        });
    }
    id.apdus = ch.commands() - id.apdus_subscriber;
    id.apdus_total = ch.apdus();
    Ok(id)
}

fn iccid_from_ef(raw: Option<Vec<u8>>) -> Result<Option<Iccid>, CardError> {
    raw.map(|raw| Iccid::from_ef(&raw))
        .transpose()
        .map_err(|e| CardError::Malformed {
            command: "READ BINARY EF.ICCID",
            detail: e.to_string(),
        })
}

/// READ BINARY of EF.ICCID by its SFI (TS 102 221 §11.1.3: P1 b8=1, b5-b1 = SFI; the MF
/// is the current DF after reset). `None`: the card refused CLA 00, a GSM SIM; a card
/// refusing the SFI read is asked by SELECT (`Some(None)`: its MF has no EF.ICCID).
#[allow(clippy::option_option)]
fn read_iccid_sfi<T: CardTransport>(
    ch: &mut Channel<T>,
) -> Result<Option<Option<Vec<u8>>>, CardError> {
    let read_sfi = Apdu::new(0x00, 0xB0, 0x80 | SFI_ICCID, 0x00).with_le(ICCID_LEN);
    let first = ch.send(&read_sfi, "READ BINARY EF.ICCID (SFI)")?;
    if first.sw.is_ok() {
        Ok(Some(Some(first.data)))
    } else if first.sw.is_wrong_class() {
        Ok(None)
    } else {
        Ok(Some(read_by_select(ch, 0x00)?))
    }
}

/// A legacy GSM SIM (CLA A0, TS 51.011 §9.2): EF.ICCID by SELECT, then DF.GSM.
fn gsm<T: CardTransport>(
    ch: &mut Channel<T>,
    opts: &Options<'_>,
    id: &mut Identity,
) -> Result<(), CardError> {
    id.kind = CardKind::Gsm;
    let raw = read_by_select(ch, 0xA0)?.ok_or(CardError::Refused {
        command: "SELECT EF.ICCID",
        sw: StatusWord(0x6A, 0x82),
    })?;
    id.iccid = iccid_from_ef(Some(raw))?;
    if opts.subscriber {
        let before = ch.commands();
        (id.imsi, id.spn) = gsm_subscriber(ch)?;
        id.apdus_subscriber = ch.commands() - before;
    }
    Ok(())
}

/// The eUICC part: EID, the profile list (the enabled profile's ICCID and service
/// provider name), then the IMSI through the enabled profile's USIM.
fn euicc_rest<T: CardTransport>(
    ch: &mut Channel<T>,
    opts: &Options<'_>,
    aid: &IsdrAid,
    id: &mut Identity,
) -> Result<(), CardError> {
    let eid = es10(ch, &euicc::GET_EUICC_DATA_EID, "GetEUICCData")?.and_then(|d| {
        tlv::find_path(&d, &[0xBF3E, 0x5A])
            .ok()
            .flatten()
            .and_then(Eid::from_bytes)
    });
    let list = match es10(ch, &es10::get_profiles_info(), "GetProfilesInfo")?
        .map(|d| es10::parse_profiles_info(&d))
    {
        Some(Ok(list)) => Some(list),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "GetProfilesInfo answer not understood");
            None
        }
        None => None,
    };
    let enabled = list
        .as_ref()
        .and_then(|l| l.iter().find(|p| p.state == ProfileState::Enabled));
    let profiles = list.as_ref().map(|_| {
        if enabled.is_some() {
            Profiles::Enabled
        } else {
            Profiles::NoneEnabled
        }
    });
    match (&list, enabled) {
        (_, Some(p)) => {
            id.iccid = Some(
                Iccid::from_digits(&p.iccid).map_err(|e| CardError::Malformed {
                    command: "GetProfilesInfo",
                    detail: e.to_string(),
                })?,
            );
            id.spn = p.provider.clone();
        }
        (Some(_), None) => {}
        // No list: the enabled profile's EF.ICCID under the MF (SGP.22 §2.4.1: only
        // the enabled profile's file system is visible), the MF selected again first
        // (the ISD-R is the basic channel's current application now).
        (None, None) => {
            let mf = Apdu::new(0x00, 0xA4, 0x00, 0x0C).with_data(&FID_MF);
            if selected(ch.send_no_response_data(&mf, "SELECT MF")?.sw) {
                id.iccid = iccid_from_ef(read_iccid_sfi(ch)?.flatten())?;
            }
        }
    }
    id.euicc = Some(Euicc {
        isdr_aid: aid.aid.clone(),
        isdr_name: aid.name.clone(),
        eid,
        profiles,
        profile_list: list,
        basic_channel: true,
    });
    // A Blank eSIM has no profile, hence no USIM to read. The service provider name
    // came with the profile list (serviceProviderName, SGP.22 §5.7.15) when there was
    // one.
    if opts.subscriber && !id.is_blank_esim() {
        let before = ch.commands();
        let (imsi, spn) = usim_subscriber(ch, id.spn.is_none() && profiles.is_none())?;
        id.apdus_subscriber = ch.commands() - before;
        id.imsi = imsi;
        id.spn = id.spn.take().or(spn);
    }
    Ok(())
}

/// What the ISD-R probe found.
enum Probe<'a> {
    Isdr(&'a IsdrAid),
    NotFound,
    /// The card refused CLA 00: a GSM SIM.
    WrongClass,
}

/// SELECT each ISD-R AID on the basic channel until one answers (GlobalPlatform Card
/// Spec §11.9: SELECT by AID, P1=04, P2=00 first occurrence; the FCI is not fetched).
fn probe_isdr<'a, T: CardTransport>(
    ch: &mut Channel<T>,
    aids: &'a [IsdrAid],
) -> Result<Probe<'a>, CardError> {
    for aid in aids {
        // Validated when the list was loaded; an undecodable entry is skipped.
        let Ok(bytes) = hex::decode(&aid.aid) else {
            continue;
        };
        let select = Apdu::new(0x00, 0xA4, 0x04, 0x00)
            .with_data(&bytes)
            .with_le(0);
        let resp = ch.send_no_response_data(&select, "SELECT ISD-R")?;
        if selected(resp.sw) {
            return Ok(Probe::Isdr(aid));
        }
        if resp.sw.is_wrong_class() {
            return Ok(Probe::WrongClass);
        }
    }
    Ok(Probe::NotFound)
}

/// One ES10 request in one STORE DATA (SGP.22 §5.7.2); `None` if the card refused it.
fn es10<T: CardTransport>(
    ch: &mut Channel<T>,
    request: &[u8],
    command: &'static str,
) -> Result<Option<Vec<u8>>, CardError> {
    let (c, i, p1, p2) = euicc::store_data_header(0);
    let resp = ch.send(
        &Apdu::new(c, i, p1, p2).with_data(request).with_le(0),
        command,
    )?;
    if resp.sw.is_ok() {
        Ok(Some(resp.data))
    } else {
        tracing::debug!(sw = %resp.sw, command, "ES10 request refused");
        Ok(None)
    }
}

/// IMSI (and SPN when `read_spn`) through the USIM on the basic channel: a
/// truncated-AID SELECT of ADF USIM, then EF.DIR's full AID if the card wants it, then
/// DF.GSM.
fn usim_subscriber<T: CardTransport>(
    ch: &mut Channel<T>,
    read_spn: bool,
) -> Result<(Option<String>, Option<String>), CardError> {
    let spn = |ch: &mut Channel<T>, p1: u8, target: &[u8]| -> Result<_, CardError> {
        if !read_spn {
            return Ok(None);
        }
        Ok(read_ef(ch, 0x00, p1, target, SPN_LEN, "EF.SPN")?
            .and_then(|d| subscriber::decode_spn(&d)))
    };
    let select_adf = |aid: &[u8]| {
        // TS 102 221 §11.1.1: SELECT by DF name (P1=04), P2=0C no data returned.
        Apdu::new(0x00, 0xA4, 0x04, 0x0C).with_data(aid)
    };
    let mut in_adf = selected(
        ch.send_no_response_data(&select_adf(&USIM_AID_PREFIX), "SELECT ADF USIM")?
            .sw,
    );
    if !in_adf {
        // The card wants the full AID: EF.DIR's first record (TS 102 221 §13.1; READ
        // RECORD by SFI, P2 = SFI<<3 | 4 absolute record, §11.1.5).
        let read_dir = Apdu::new(0x00, 0xB2, 0x01, SFI_DIR << 3 | 0x04).with_le(0);
        let dir = ch.send(&read_dir, "READ RECORD EF.DIR")?;
        if let Some(aid) = dir
            .sw
            .is_ok()
            .then(|| tlv::find_path(&dir.data, &[0x61, 0x4F]).ok().flatten())
            .flatten()
            .filter(|aid| aid.starts_with(&USIM_AID_PREFIX))
        {
            let aid = aid.to_vec();
            in_adf = selected(
                ch.send_no_response_data(&select_adf(&aid), "SELECT ADF USIM")?
                    .sw,
            );
        }
    }
    if in_adf {
        let imsi = ch.send(
            &Apdu::new(0x00, 0xB0, 0x80 | SFI_IMSI, 0).with_le(IMSI_LEN),
            "READ BINARY EF.IMSI (SFI)",
        )?;
        let imsi = imsi
            .sw
            .is_ok()
            .then(|| subscriber::decode_imsi(&imsi.data))
            .flatten();
        return Ok((imsi, spn(ch, 0x00, &FID_SPN)?));
    }
    // DF.GSM under the MF, by path (TS 102 221 §11.1.1.2: P1=08 path from the MF).
    let path = |fid: [u8; 2]| [DF_GSM[0], DF_GSM[1], fid[0], fid[1]];
    let imsi = read_ef(ch, 0x00, 0x08, &path(FID_IMSI), IMSI_LEN, "EF.IMSI")?
        .and_then(|d| subscriber::decode_imsi(&d));
    Ok((imsi, spn(ch, 0x08, &path(FID_SPN))?))
}

/// IMSI and SPN on a GSM SIM: DF.GSM, then each EF by FID (TS 51.011 §9.2.1: SELECT
/// by FID only, answered 9Fxx; the FCP is not fetched).
fn gsm_subscriber<T: CardTransport>(
    ch: &mut Channel<T>,
    // A SIM refuses CLA 00; everything goes with A0.
) -> Result<(Option<String>, Option<String>), CardError> {
    let df = Apdu::new(0xA0, 0xA4, 0x00, 0x00).with_data(&DF_GSM);
    if !selected(ch.send_no_response_data(&df, "SELECT DF.GSM")?.sw) {
        return Ok((None, None));
    }
    let imsi = read_ef(ch, 0xA0, 0x00, &FID_IMSI, IMSI_LEN, "EF.IMSI")?
        .and_then(|d| subscriber::decode_imsi(&d));
    let spn = read_ef(ch, 0xA0, 0x00, &FID_SPN, SPN_LEN, "EF.SPN")?
        .and_then(|d| subscriber::decode_spn(&d));
    Ok((imsi, spn))
}

/// SELECT (by FID, P1=00, or by path, P1=08) and READ BINARY; `None` when the file is
/// not there or not readable — subscriber data is shown where readable, never required.
fn read_ef<T: CardTransport>(
    ch: &mut Channel<T>,
    cla: u8,
    p1: u8,
    target: &[u8],
    len: u8,
    command: &'static str,
) -> Result<Option<Vec<u8>>, CardError> {
    // UICC: P2=0C no data (TS 102 221 §11.1.1.2); GSM: P2=00 only (TS 51.011 §9.2.1).
    let p2 = if cla == 0xA0 { 0x00 } else { 0x0C };
    let select = Apdu::new(cla, 0xA4, p1, p2).with_data(target);
    if !selected(ch.send_no_response_data(&select, command)?.sw) {
        return Ok(None);
    }
    let read = ch.send(&Apdu::new(cla, 0xB0, 0, 0).with_le(len), command)?;
    Ok(read.sw.is_ok().then_some(read.data))
}

/// SELECT EF.ICCID by FID and read it; `None` when the MF has no EF.ICCID (6A82).
fn read_by_select<T: CardTransport>(
    ch: &mut Channel<T>,
    cla: u8,
) -> Result<Option<Vec<u8>>, CardError> {
    // UICC: P1=00 select by FID, P2=0C no data returned (TS 102 221 §11.1.1.2): the
    // current DF is the MF after reset. GSM: P1=P2=00 is the only form (TS 51.011 §9.2.1),
    // answered 9Fxx with the FCP we do not need.
    let p2 = if cla == 0x00 { 0x0C } else { 0x00 };
    let select = Apdu::new(cla, 0xA4, 0x00, p2).with_data(&FID_ICCID);
    let sel = ch.send_no_response_data(&select, "SELECT EF.ICCID")?;
    if not_found(sel.sw) {
        return Ok(None);
    }
    if !selected(sel.sw) {
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
    Ok(Some(resp.data))
}
