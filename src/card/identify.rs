//! Card identification: who is this card, in as few APDUs as the specs allow.
//!
//! One engine for `read`, `run` and `station`. The order is chosen so every answer is
//! used: the ICCID read also tells UICC from GSM SIM (a GSM SIM refuses CLA 00); the
//! ISD-R probe and the USIM reads run on the basic channel (a failed SELECT changes
//! nothing, TS 102 221 §11.1.1.1), put back on the MF by one SELECT at the end.

use super::apdu::{Apdu, Channel, StatusWord};
use super::euicc::{self, Eid, IsdrAid, Profiles};
use super::iccid::Iccid;
use super::{subscriber, tlv, CardError, CardTransport};

crate::sim::wire_words! {
    /// Which command set the card speaks.
    pub enum CardKind {
        /// A UICC (ETSI TS 102 221), CLA 00.
        Uicc = "uicc",
        /// A legacy GSM SIM (3GPP TS 51.011), CLA A0.
        Gsm = "gsm",
    }
}

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
    /// Every profile with its name, provider, nickname and class, when
    /// [`Options::esim_profiles`] asked for them (the daemon's state row).
    pub profile_list: Option<Vec<crate::card::es10::ProfileInfo>>,
    /// The ISD-R was reached on the basic channel, which was then put back on the MF
    /// (always, since identification stopped opening a logical channel).
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
    /// Read IMSI and SPN too (two to five more APDUs).
    pub subscriber: bool,
    /// On an eUICC, list every profile with the tags `esim list` shows (one
    /// GetProfilesInfo, two APDUs on T=0): what the daemon's state row carries.
    pub esim_profiles: bool,
}

impl Default for Options<'static> {
    /// Everything: every ISD-R AID, subscriber data.
    fn default() -> Self {
        Options {
            isdr_aids: euicc::shipped_aids(),
            vendor_aids: true,
            subscriber: true,
            esim_profiles: false,
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

/// ISO/IEC 7816-4 §5.1.1 / TS 102 221 §10.1.1: the logical channel (0-3) in b1-b2 of
/// the interindustry CLA.
fn cla(channel: u8) -> u8 {
    channel & 0x03
}

/// 6A82 "file or application not found" (TS 102 221 §10.2.1.5).
fn not_found(sw: StatusWord) -> bool {
    sw == StatusWord(0x6A, 0x82)
}

/// A SELECT we sent without fetching its response data succeeded: 9000, or data
/// waiting (61xx; 9Fxx on a GSM SIM, TS 51.011 §9.4.1).
fn selected(sw: StatusWord) -> bool {
    sw.is_ok() || sw.0 == 0x61 || sw.0 == 0x9F
}

/// Identify the card behind `transport`.
///
/// UICC: READ BINARY of EF.ICCID by its SFI (TS 102 221 §11.1.3: P1 b8=1, b5-b1 = SFI;
/// the MF is the current DF after reset). A card refusing CLA 00 (6E00/6D00) is a GSM SIM:
/// SELECT 2FE2 and READ BINARY with CLA A0 (TS 51.011 §9.2). Then, on a UICC, the ISD-R
/// probe and the USIM reads on one logical channel; on a GSM SIM, DF.GSM.
pub fn identify<T: CardTransport>(transport: T, opts: &Options<'_>) -> Result<Identity, CardError> {
    let mut ch = Channel::new(transport);
    let read_sfi = Apdu::new(0x00, 0xB0, 0x80 | SFI_ICCID, 0x00).with_le(ICCID_LEN);
    let first = ch.send(&read_sfi, "READ BINARY EF.ICCID (SFI)")?;
    let (kind, raw) = if first.sw.is_ok() {
        (CardKind::Uicc, Some(first.data))
    } else if first.sw.is_wrong_class() {
        let raw = read_by_select(&mut ch, 0xA0)?.ok_or(CardError::Refused {
            command: "SELECT EF.ICCID",
            sw: StatusWord(0x6A, 0x82),
        })?;
        (CardKind::Gsm, Some(raw))
    } else {
        (CardKind::Uicc, read_by_select(&mut ch, 0x00)?)
    };
    let iccid = raw
        .map(|raw| Iccid::from_ef(&raw))
        .transpose()
        .map_err(|e| CardError::Malformed {
            command: "READ BINARY EF.ICCID",
            detail: e.to_string(),
        })?;

    let mut id = Identity {
        kind,
        iccid,
        euicc: None,
        imsi: None,
        spn: None,
        lock: None,
        apdus: 0,
        apdus_subscriber: 0,
        apdus_total: 0,
    };
    match kind {
        CardKind::Gsm => {
            if opts.subscriber {
                let before = ch.commands();
                (id.imsi, id.spn) = gsm_subscriber(&mut ch)?;
                id.apdus_subscriber = ch.commands() - before;
            }
        }
        CardKind::Uicc => uicc_rest(&mut ch, opts, &mut id)?,
    }
    if opts.subscriber && !id.is_blank_esim() {
        // A readable IMSI means PIN1 lets us in: ready, no APDU spent. Otherwise ask
        // the card why, spending no attempt (src/card/pin.rs): a locked SIM's row says so.
        let before = ch.commands();
        id.lock = match id.imsi {
            Some(_) => Some(crate::sim::Lock::ready()),
            None => super::pin::lock_state(&mut ch, kind)?,
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

/// The UICC part after the ICCID: ISD-R probe, EID and profiles, then IMSI and SPN, all
/// on the basic channel, which is put back on the MF at the end if anything moved it.
///
/// No logical channel: TS 102 221 §11.1.1.1 — an unsuccessful SELECT leaves the current
/// directory, file and application as they were, so on a plain card the probe's 6A82
/// costs nothing to undo. A logical channel would cost two APDUs (MANAGE CHANNEL open
/// and close) on every card; the one SELECT MF that restores the basic channel after the
/// reads costs one.
fn uicc_rest<T: CardTransport>(
    ch: &mut Channel<T>,
    opts: &Options<'_>,
    id: &mut Identity,
) -> Result<(), CardError> {
    if opts.isdr_aids.is_empty() && !opts.subscriber {
        return Ok(());
    }
    let chan = 0;
    // Whether the basic channel's selection moved and must be put back.
    let mut moved_basic = false;

    let aids = if opts.vendor_aids {
        opts.isdr_aids
    } else {
        &opts.isdr_aids[..opts.isdr_aids.len().min(1)]
    };
    if let Some(aid) = probe_isdr(ch, chan, aids)? {
        moved_basic = true;
        let eid = es10(ch, chan, &euicc::GET_EUICC_DATA_EID, "GetEUICCData")?.and_then(|d| {
            tlv::find_path(&d, &[0xBF3E, 0x5A])
                .ok()
                .flatten()
                .and_then(Eid::from_bytes)
        });
        // An EF.ICCID under the MF is the enabled profile's (SGP.22 §2.4.1: only the
        // enabled profile's file system is visible to the device): a profile is enabled
        // and GetProfilesInfo is not needed. Without one, it tells a Blank eSIM.
        let mut profile_list = None;
        let profiles = if opts.esim_profiles {
            let d = es10(
                ch,
                chan,
                &crate::card::es10::get_profiles_info(),
                "GetProfilesInfo",
            )?;
            match d.map(|d| crate::card::es10::parse_profiles_info(&d)) {
                Some(Ok(list)) => {
                    let enabled = list
                        .iter()
                        .any(|p| p.state == crate::card::es10::ProfileState::Enabled);
                    profile_list = Some(list);
                    Some(if enabled {
                        Profiles::Enabled
                    } else {
                        Profiles::NoneEnabled
                    })
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "GetProfilesInfo answer not understood");
                    None
                }
                None => None,
            }
        } else if id.iccid.is_some() {
            Some(Profiles::Enabled)
        } else {
            es10(ch, chan, &euicc::GET_PROFILES_STATE, "GetProfilesInfo")?
                .and_then(|d| euicc::parse_profiles(&d).ok().flatten())
        };
        id.euicc = Some(Euicc {
            isdr_aid: aid.aid.clone(),
            isdr_name: aid.name.clone(),
            eid,
            profiles,
            profile_list,
            basic_channel: true,
        });
    }

    // A Blank eSIM has no profile, hence no USIM to read.
    if opts.subscriber && !id.is_blank_esim() {
        let before = ch.commands();
        let (imsi, spn, moved) = usim_subscriber(ch, chan)?;
        id.apdus_subscriber = ch.commands() - before;
        (id.imsi, id.spn) = (imsi, spn);
        moved_basic |= moved;
    }

    if moved_basic {
        // Put the basic channel back on the MF, as after reset (TS 102 221 §8.2,
        // SELECT by FID with P2=0C: no data).
        let mf = Apdu::new(0x00, 0xA4, 0x00, 0x0C).with_data(&FID_MF);
        ch.send_overhead(&mf, "SELECT MF")?;
    }
    Ok(())
}

/// SELECT each ISD-R AID on `chan` until one answers (GlobalPlatform Card Spec §11.9:
/// SELECT by AID, P1=04, P2=00 first occurrence; the FCI is not fetched).
fn probe_isdr<'a, T: CardTransport>(
    ch: &mut Channel<T>,
    chan: u8,
    aids: &'a [IsdrAid],
) -> Result<Option<&'a IsdrAid>, CardError> {
    for aid in aids {
        // Validated when the list was loaded; an undecodable entry is skipped.
        let Ok(bytes) = hex::decode(&aid.aid) else {
            continue;
        };
        let select = Apdu::new(cla(chan), 0xA4, 0x04, 0x00)
            .with_data(&bytes)
            .with_le(0);
        let resp = ch.send_no_response_data(&select, "SELECT ISD-R")?;
        if selected(resp.sw) {
            return Ok(Some(aid));
        }
    }
    Ok(None)
}

/// One ES10 request in one STORE DATA (SGP.22 §5.7.2); `None` if the card refused it.
fn es10<T: CardTransport>(
    ch: &mut Channel<T>,
    chan: u8,
    request: &[u8],
    command: &'static str,
) -> Result<Option<Vec<u8>>, CardError> {
    let (c, i, p1, p2) = euicc::store_data_header(chan);
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

/// IMSI and SPN through the USIM: a truncated-AID SELECT of ADF USIM, then EF.DIR's
/// full AID if the card wants it, then DF.GSM. Returns whether `chan`'s selection moved.
fn usim_subscriber<T: CardTransport>(
    ch: &mut Channel<T>,
    chan: u8,
) -> Result<(Option<String>, Option<String>, bool), CardError> {
    let select_adf = |aid: &[u8]| {
        // TS 102 221 §11.1.1: SELECT by DF name (P1=04), P2=0C no data returned.
        Apdu::new(cla(chan), 0xA4, 0x04, 0x0C).with_data(aid)
    };
    let mut in_adf = selected(
        ch.send_no_response_data(&select_adf(&USIM_AID_PREFIX), "SELECT ADF USIM")?
            .sw,
    );
    if !in_adf {
        // The card wants the full AID: EF.DIR's first record (TS 102 221 §13.1; READ
        // RECORD by SFI, P2 = SFI<<3 | 4 absolute record, §11.1.5).
        let read_dir = Apdu::new(cla(chan), 0xB2, 0x01, SFI_DIR << 3 | 0x04).with_le(0);
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
            &Apdu::new(cla(chan), 0xB0, 0x80 | SFI_IMSI, 0).with_le(IMSI_LEN),
            "READ BINARY EF.IMSI (SFI)",
        )?;
        let imsi = imsi
            .sw
            .is_ok()
            .then(|| subscriber::decode_imsi(&imsi.data))
            .flatten();
        let spn = read_ef(ch, cla(chan), 0x00, &FID_SPN, SPN_LEN, "EF.SPN")?
            .and_then(|d| subscriber::decode_spn(&d));
        return Ok((imsi, spn, true));
    }
    // DF.GSM under the MF, by path (TS 102 221 §11.1.1.2: P1=08 path from the MF).
    let path = |fid: [u8; 2]| [DF_GSM[0], DF_GSM[1], fid[0], fid[1]];
    let imsi = read_ef(ch, cla(chan), 0x08, &path(FID_IMSI), IMSI_LEN, "EF.IMSI")?
        .and_then(|d| subscriber::decode_imsi(&d));
    let spn = read_ef(ch, cla(chan), 0x08, &path(FID_SPN), SPN_LEN, "EF.SPN")?
        .and_then(|d| subscriber::decode_spn(&d));
    Ok((imsi, spn, true))
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
