//! The virtual card's APDU behaviour: pure, no I/O. `process` takes a command APDU and
//! returns the response APDU a real card of the image's kind would give; `respond` adds
//! the image's faults (mute, pulled) for the vpcd side to act on.

use super::download::{self, int, CardView, Download, Effect, EuiccPki};
use super::image::{parse_path, CardImage, ImageKind, ProfileImage};
use crate::card::es10::{der, NotificationEvent};
use crate::card::{tlv as ber, CardError, CardTransport};
use crate::emu::pin::{Need, PinError, SimPin};
use std::collections::BTreeMap;
use std::sync::Arc;

type Path = Vec<[u8; 2]>;

const MF: [u8; 2] = [0x3F, 0x00];
/// The current application's ADF (TS 102 221 §8.4.2: '7FFF' names the selected ADF);
/// the image keeps the USIM's files under 3F00/7FFF.
const ADF: [u8; 2] = [0x7F, 0xFF];

/// Short file identifiers known to the virtual card: (parent DF path, SFI, FID).
/// TS 102 221 §13 (EF.ICCID '02', EF.DIR '1E', EF.PL '05'); TS 31.102 §4.2.2 (EF.IMSI
/// '07' in ADF USIM).
type SfiEntry = (&'static [[u8; 2]], u8, [u8; 2]);
const SFIS: &[SfiEntry] = &[
    (&[MF], 0x02, [0x2F, 0xE2]),
    (&[MF], 0x1E, [0x2F, 0x00]),
    (&[MF], 0x05, [0x2F, 0x05]),
    (&[MF, ADF], 0x07, [0x6F, 0x07]),
];

/// The application selected on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum App {
    /// The UICC file system only.
    None,
    Usim,
    Isdr,
}

/// What one logical channel has selected (TS 102 221 §8.4, each channel on its own).
#[derive(Debug, Clone)]
struct ChannelState {
    df: Path,
    ef: Option<Path>,
    app: App,
}

impl ChannelState {
    fn at_mf() -> Self {
        ChannelState {
            df: vec![MF],
            ef: None,
            app: App::None,
        }
    }
}

/// What the vpcd side must do with a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Send this response APDU.
    Answer(Vec<u8>),
    /// Send nothing, ever (a mute card).
    Mute,
    /// Drop the connection now (the card is pulled mid-read).
    Pull,
}

/// A pending notification (SGP.22 §3.5): an install's is its signed
/// ProfileInstallationResult (§5.7.6), the others are signed when they are retrieved.
#[derive(Debug, Clone)]
struct Notification {
    seq: u32,
    event: NotificationEvent,
    iccid: Option<String>,
    /// The SM-DP+ it goes to (NotificationMetadata notificationAddress).
    address: String,
    /// The ProfileInstallationResult (BF37 TLV) of an install.
    pir: Option<Vec<u8>>,
}

/// A card brought to life from an image.
#[derive(Debug)]
pub struct VirtualCard {
    image: CardImage,
    files: BTreeMap<Path, Vec<u8>>,
    records: BTreeMap<Path, Vec<Vec<u8>>>,
    /// Channels 0 (basic, always open) to 3 (TS 102 221 §10.1.1: CLA b1-b2).
    channels: [Option<ChannelState>; 4],
    /// Response data waiting for GET RESPONSE (T=0, TS 102 221 §7.3.1.1.4).
    pending: Vec<u8>,
    /// APDUs processed since power-on, for logs and tests.
    apdus: u64,
    /// Warm resets since power-on (vpcd's reset, not its power-on), for logs and tests:
    /// whether a reader left the card as it found it.
    resets: u64,
    /// The eUICC's profiles as they are now (the image's, changed by ES10c).
    profiles: Vec<ProfileImage>,
    /// Pending notifications (SGP.22 §3.5), oldest first.
    notifications: Vec<Notification>,
    next_seq: u32,
    /// The ES10b download side: keys, session, BPP (download.rs).
    download: Download,
    /// Non-volatile memory each profile installed by download takes, bytes, by ICCID
    /// (given back when it is deleted).
    installed: BTreeMap<String, u32>,
    /// A STORE DATA command being received in blocks (GlobalPlatform Card Specification
    /// §11.11, SGP.22 §5.7.2): the blocks so far and the number the next must have.
    blocks: Vec<u8>,
    next_block: u8,
    /// `fault.drop_channel_after`, or set by a test.
    drop_after: Option<u64>,
    /// PIN1 and PUK1 as they are now: counters outlive resets, verification does not.
    pin: Option<SimPin>,
}

fn sw(data: &[u8], sw1: u8, sw2: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 2);
    out.extend_from_slice(data);
    out.extend_from_slice(&[sw1, sw2]);
    out
}

/// A BER-TLV, through the card engine's encoder (any length: a profile list of many
/// profiles passes 255 bytes).
fn tlv(tag: &[u8], value: &[u8]) -> Vec<u8> {
    let tag = tag.iter().fold(0u32, |t, b| t << 8 | u32::from(*b));
    crate::card::tlv::encode(tag, value)
}

impl VirtualCard {
    pub fn new(image: CardImage) -> VirtualCard {
        // Images are validated by CardImage::parse; an entry that still fails is skipped
        // rather than trusted.
        let files = image
            .files
            .iter()
            .filter_map(|(p, c)| Some((parse_path(p).ok()?, hex::decode(c).ok()?)))
            .collect();
        let records = image
            .records
            .iter()
            .filter_map(|(p, rs)| {
                let recs: Option<Vec<Vec<u8>>> = rs.iter().map(|r| hex::decode(r).ok()).collect();
                Some((parse_path(p).ok()?, recs?))
            })
            .collect();
        let profiles = image
            .euicc
            .as_ref()
            .map(|e| e.profiles.clone())
            .unwrap_or_default();
        let drop_after = image.fault.drop_channel_after;
        let pin = image.pin.clone();
        let mut card = VirtualCard {
            image,
            files,
            records,
            channels: [Some(ChannelState::at_mf()), None, None, None],
            pending: Vec::new(),
            apdus: 0,
            resets: 0,
            profiles,
            notifications: Vec::new(),
            next_seq: 1,
            download: Download::default(),
            installed: BTreeMap::new(),
            blocks: Vec::new(),
            next_block: 0,
            drop_after,
            pin,
        };
        card.show_enabled_profile();
        card
    }

    /// Give the eUICC its keys and certificates (a PKI directory, download.rs): the ES10b
    /// download functions work; without, they are refused as by an eUICC without keys.
    pub fn with_pki(mut self, pki: Arc<EuiccPki>) -> VirtualCard {
        self.download = Download::with_pki(Some(pki));
        self
    }

    /// Set the default SM-DP+ address (ES10a GetEuiccConfiguredAddresses), as ES10a
    /// SetDefaultDpAddress would (SGP.22 §5.7.4): e.g. a test SM-DP+ on a port known only
    /// at run time. No effect on a card without an eUICC.
    pub fn set_default_smdp(&mut self, address: &str) {
        if let Some(e) = self.image.euicc.as_mut() {
            e.default_smdp = Some(address.to_string());
        }
    }

    /// After this many APDUs, deselect the ISD-R everywhere and close the logical
    /// channels once (the `drop_channel_after` fault).
    pub fn drop_isdr_after(&mut self, n: u64) {
        self.drop_after = Some(n);
    }

    /// The profiles as they are now.
    pub fn profiles(&self) -> &[ProfileImage] {
        &self.profiles
    }

    /// On an eUICC the MF's EF.ICCID and the USIM's files are the enabled profile's
    /// (SGP.22 §2.4: only the enabled profile's file system is visible): rebuild them
    /// from the profile list.
    fn show_enabled_profile(&mut self) {
        if self.image.euicc.is_none() {
            return;
        }
        let iccid_path = vec![MF, [0x2F, 0xE2]];
        let every: Vec<Path> = self
            .profiles
            .iter()
            .flat_map(|p| p.files.keys())
            .filter_map(|k| parse_path(k).ok())
            .collect();
        for k in every {
            self.files.remove(&k);
        }
        self.files.remove(&iccid_path);
        if let Some(p) = self.profiles.iter().find(|p| p.enabled).cloned() {
            self.files.insert(iccid_path, super::iccid_to_ef(&p.iccid));
            for (k, v) in &p.files {
                if let (Ok(k), Ok(v)) = (parse_path(k), hex::decode(v)) {
                    self.files.insert(k, v);
                }
            }
        }
    }

    /// An eUICC without an enabled profile has no USIM to select.
    fn has_line(&self) -> bool {
        self.image.euicc.is_none() || self.profiles.iter().any(|p| p.enabled)
    }

    pub fn image(&self) -> &CardImage {
        &self.image
    }

    pub fn atr(&self) -> Vec<u8> {
        // Validated at load time.
        hex::decode(&self.image.atr).unwrap_or_default()
    }

    pub fn apdus(&self) -> u64 {
        self.apdus
    }

    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// A warm reset: as [`VirtualCard::reset`], counted.
    pub fn warm_reset(&mut self) {
        self.resets += 1;
        self.reset();
    }

    /// The `mute_after_segments` fault has struck: the card answers nothing any more.
    pub fn is_mute(&self) -> bool {
        self.image
            .fault
            .mute_after_segments
            .is_some_and(|n| self.download.segments() >= n)
    }

    /// Power-on or reset: the MF becomes the current DF and logical channels close
    /// (TS 102 221 §8.2, §11.1.17).
    pub fn reset(&mut self) {
        self.channels = [Some(ChannelState::at_mf()), None, None, None];
        self.pending.clear();
        if let Some(p) = self.pin.as_mut() {
            p.power_cycle();
        }
        self.blocks.clear();
        self.next_block = 0;
        // The download session lives in volatile memory (SGP.22 §3.1.3: a reset ends it).
        self.download.drop_session();
    }

    /// EF.IMSI (TS 31.102 §4.2.2, TS 51.011 §10.3.2: READ access condition PIN1) while
    /// PIN1 is enabled and not verified.
    fn behind_pin(&self, path: &Path) -> bool {
        path.last() == Some(&[0x6F, 0x07])
            && self.pin.as_ref().is_some_and(|p| p.need() != Need::Nothing)
    }

    /// VERIFY, CHANGE, DISABLE, ENABLE and UNBLOCK PIN (TS 102 221 §11.1.9-§11.1.13; TS
    /// 51.011 §9.2.9-§9.2.13 with CLA A0). P1 00, P2 the key: '01' PIN1 ('00' for CHV1
    /// in a GSM UNBLOCK CHV); data: 8-byte blocks of ASCII digits padded with FF.
    fn pin_command(&mut self, ins: u8, p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
        let gsm_unblock = self.image.kind == ImageKind::Gsm && ins == 0x2C && p2 == 0x00;
        if p1 != 0x00 || !(p2 == 0x01 || gsm_unblock) {
            // TS 102 221 §10.2.1.5: incorrect parameters P1-P2 (no PIN2 and others here).
            return sw(&[], 0x6A, 0x86);
        }
        let digits = |b: &[u8]| -> String {
            b.iter()
                .take_while(|c| **c != 0xFF)
                .map(|c| char::from(*c))
                .collect()
        };
        let blocks: Vec<String> = data.chunks(8).map(digits).collect();
        let Some(pin) = self.pin.as_mut() else {
            // No PIN1 on this card: nothing to verify (VERIFY without data: 9000), and
            // nothing to change.
            return match (ins, data.is_empty()) {
                (0x20, true) => sw(&[], 0x90, 0x00),
                _ => sw(&[], 0x69, 0x84),
            };
        };
        // 63CX: X retries left (TS 102 221 §10.2.1.3).
        let retries = |n: u8| sw(&[], 0x63, 0xC0 | n);
        let result = match (ins, blocks.as_slice()) {
            (0x20, []) => {
                return match pin.need() {
                    Need::Nothing => sw(&[], 0x90, 0x00),
                    Need::Pin => retries(pin.attempts),
                    Need::Puk | Need::Dead => sw(&[], 0x69, 0x83),
                }
            }
            (0x2C, []) => {
                return match pin.need() {
                    Need::Dead => sw(&[], 0x69, 0x83),
                    _ => retries(pin.puk_attempts),
                }
            }
            (0x20, [code]) => pin.verify(code),
            (0x24, [old, new]) => pin.change(old, new),
            (0x26, [code]) => pin.set_enabled(false, code),
            (0x28, [code]) => pin.set_enabled(true, code),
            (0x2C, [puk, new]) => pin.unblock(puk, new),
            // Wrong length (TS 102 221 §10.2.1.5).
            _ => return sw(&[], 0x67, 0x00),
        };
        match result {
            Ok(()) => sw(&[], 0x90, 0x00),
            Err(PinError::Wrong(n)) => retries(n),
            Err(PinError::Blocked) => sw(&[], 0x69, 0x83),
            // 6984 reference data not usable (TS 102 221 §10.2.1.5).
            Err(PinError::NotAllowed) => sw(&[], 0x69, 0x84),
        }
    }

    fn is_df(&self, path: &Path) -> bool {
        path.as_slice() == [MF]
            || self
                .files
                .keys()
                .chain(self.records.keys())
                .any(|k| k.len() > path.len() && k.starts_with(path))
    }

    fn exists(&self, path: &Path) -> bool {
        self.files.contains_key(path) || self.records.contains_key(path) || self.is_df(path)
    }

    /// Process one command APDU, with the image's faults: what vpcd should see.
    pub fn respond(&mut self, apdu: &[u8]) -> Reply {
        let fault = &self.image.fault;
        if fault.mute_after.is_some_and(|n| self.apdus >= n) {
            self.apdus += 1;
            return Reply::Mute;
        }
        if fault.pull_after.is_some_and(|n| self.apdus >= n) {
            self.apdus += 1;
            return Reply::Pull;
        }
        if self.is_mute() {
            self.apdus += 1;
            return Reply::Mute;
        }
        Reply::Answer(self.process(apdu))
    }

    /// Process one command APDU. With `t0_procedures = false` the T=0 procedures are run
    /// here, as a reader that does them itself: the answer carries the data at once.
    pub fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        let mut resp = self.process_t0(apdu);
        if self.image.t0_procedures {
            return resp;
        }
        // 6Cxx: the reader repeats the command with Le = xx (TS 102 221 §7.3.1.1.4).
        if let [.., 0x6C, le] = resp[..] {
            // Only case-2 commands (READ BINARY/RECORD) get 6Cxx: their last byte is Le.
            let mut again = apdu.to_vec();
            if let Some(last) = again.last_mut() {
                *last = le;
                resp = self.execute(&again);
            }
        }
        // 61xx / 9Fxx: the reader fetches the data with GET RESPONSE.
        let mut data = Vec::new();
        while let [.., 0x61 | 0x9F, n] = resp[..] {
            data.extend_from_slice(&resp[..resp.len() - 2]);
            resp = self.get_response(Some(n));
        }
        if !data.is_empty() {
            data.extend_from_slice(&resp);
            resp = data;
        }
        resp
    }

    /// Process one command APDU as the card itself answers it, whatever the image's
    /// `t0_procedures`: 61xx and 6Cxx left to the caller (a modem's +CSIM, TS 27.007
    /// §8.17, passes them to the TE).
    pub fn process_t0(&mut self, apdu: &[u8]) -> Vec<u8> {
        if self.drop_after.is_some_and(|n| self.apdus >= n) {
            self.drop_after = None;
            for (i, c) in self.channels.iter_mut().enumerate() {
                match c {
                    Some(state) if i == 0 => state.app = App::None,
                    _ => *c = None,
                }
            }
        }
        self.apdus += 1;
        self.execute(apdu)
    }

    fn execute(&mut self, apdu: &[u8]) -> Vec<u8> {
        if apdu.len() < 4 {
            // ISO/IEC 7816-4: wrong length.
            return sw(&[], 0x67, 0x00);
        }
        let (cla, ins, p1, p2) = (apdu[0], apdu[1], apdu[2], apdu[3]);
        let body = &apdu[4..];
        let (data, le) = match body.len() {
            0 => (&[][..], None),
            1 => (&[][..], Some(body[0])),
            n => {
                let lc = usize::from(body[0]);
                if n == 1 + lc {
                    (&body[1..], None)
                } else if n == 2 + lc {
                    (&body[1..1 + lc], Some(body[1 + lc]))
                } else {
                    return sw(&[], 0x67, 0x00);
                }
            }
        };
        let class_ok = match self.image.kind {
            // UICC: '0X' interindustry, '8X' proprietary (STORE DATA), channels 0-3 in
            // b1-b2 (TS 102 221 §10.1.1).
            ImageKind::Uicc => cla & 0x7C == 0x00,
            ImageKind::Gsm => cla == 0xA0,
        };
        if !class_ok {
            return sw(&[], 0x6E, 0x00);
        }
        let chan = if self.image.kind == ImageKind::Uicc {
            usize::from(cla & 0x03)
        } else {
            0
        };
        if self.channels[chan].is_none() {
            // TS 102 221 §10.2.1.5: 6881 logical channel not supported (not open).
            return sw(&[], 0x68, 0x81);
        }
        // GSM's A0 is its one class; on a UICC b8 tells '8X' proprietary from '0X'.
        let proprietary = self.image.kind == ImageKind::Uicc && cla & 0x80 != 0;
        match (if proprietary { 0x80 } else { 0x00 }, ins) {
            (0x00, 0x70) if self.image.kind == ImageKind::Uicc => self.manage_channel(p1, p2),
            (0x00, 0xA4) => self.select(chan, p1, p2, data),
            (0x00, 0xB0) => self.read_binary(chan, p1, p2, le),
            (0x00, 0xB2) => self.read_record(chan, p1, p2, le),
            // GET RESPONSE is '0X' in TS 102 221 Table 10.5, but LPAs following the
            // proprietary class of the STORE DATA they continue send '8X' (lpac: 81 C0
            // after 81 E2 on channel 1), and eUICCs answer it: so does this one.
            (_, 0xC0) => self.get_response(le),
            (0x00, 0x20 | 0x24 | 0x26 | 0x28 | 0x2C) => self.pin_command(ins, p1, p2, data),
            (0x80, 0xE2) if self.app(chan) == App::Isdr => self.store_data(p1, p2, data),
            _ => sw(&[], 0x6D, 0x00),
        }
    }

    fn app(&self, chan: usize) -> App {
        self.channels[chan].as_ref().map_or(App::None, |c| c.app)
    }

    fn chan(&mut self, chan: usize) -> &mut ChannelState {
        // Callers checked the channel is open (execute); a closed one is reopened at the
        // MF rather than panicking.
        self.channels[chan].get_or_insert_with(ChannelState::at_mf)
    }

    /// MANAGE CHANNEL (TS 102 221 §11.1.17).
    fn manage_channel(&mut self, p1: u8, p2: u8) -> Vec<u8> {
        if !self.image.logical_channels {
            return sw(&[], 0x68, 0x81);
        }
        match (p1, p2) {
            (0x00, 0x00) => match (1..4).find(|n| self.channels[*n].is_none()) {
                Some(n) => {
                    self.channels[n] = Some(ChannelState::at_mf());
                    sw(&[n as u8], 0x90, 0x00)
                }
                // No channel left: 6A81 function not supported.
                None => sw(&[], 0x6A, 0x81),
            },
            (0x80, n @ 1..=3) if self.channels[usize::from(n)].is_some() => {
                self.channels[usize::from(n)] = None;
                sw(&[], 0x90, 0x00)
            }
            _ => sw(&[], 0x6A, 0x86),
        }
    }

    /// Data for a case-4 command: waiting behind 61xx (TS 102 221 §7.3.1.1.4), or at
    /// once when P2 asked for none.
    fn with_data(&mut self, out: Vec<u8>) -> Vec<u8> {
        if out.is_empty() {
            return sw(&[], 0x90, 0x00);
        }
        let n = out.len().min(0xFF) as u8;
        self.pending = out;
        match self.image.kind {
            ImageKind::Uicc => sw(&[], 0x61, n),
            // GSM SIMs say 9Fxx (TS 51.011 §9.4.1).
            ImageKind::Gsm => sw(&[], 0x9F, n),
        }
    }

    fn select(&mut self, chan: usize, p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
        if p1 == 0x04 && self.image.kind == ImageKind::Uicc {
            return self.select_aid(chan, p2, data);
        }
        let ids: Vec<[u8; 2]> = data
            .chunks(2)
            .filter_map(|c| <[u8; 2]>::try_from(c).ok())
            .collect();
        if ids.is_empty() || !data.len().is_multiple_of(2) {
            return sw(&[], 0x67, 0x00);
        }
        let current_df = self.chan(chan).df.clone();
        let target: Option<Path> = match (self.image.kind, p1) {
            (_, 0x00) => {
                let fid = ids[0];
                if ids.len() != 1 {
                    return sw(&[], 0x67, 0x00);
                }
                let mut child = current_df.clone();
                child.push(fid);
                if fid == MF {
                    Some(vec![MF])
                } else if self.exists(&child) {
                    Some(child)
                } else {
                    // A sibling of the current DF, or its parent (TS 102 221 §8.4.1).
                    let parent: Path = current_df[..current_df.len().saturating_sub(1)].to_vec();
                    let mut sibling = parent.clone();
                    sibling.push(fid);
                    if parent.last() == Some(&fid) {
                        Some(parent)
                    } else if !parent.is_empty() && self.exists(&sibling) {
                        Some(sibling)
                    } else {
                        None
                    }
                }
            }
            // Select by path from the MF (TS 102 221 §11.1.1.2, P1 = 08), UICC only.
            (ImageKind::Uicc, 0x08) => {
                let mut path = vec![MF];
                path.extend(ids);
                self.exists(&path).then_some(path)
            }
            // TS 102 221 §10.2.1.5: incorrect parameters P1-P2.
            _ => return sw(&[], 0x6A, 0x86),
        };
        let Some(path) = target else {
            // File not found (TS 102 221 §10.2.1.5).
            return sw(&[], 0x6A, 0x82);
        };
        let size = self.files.get(&path).map(Vec::len).or_else(|| {
            self.records
                .get(&path)
                .map(|r| r.iter().map(Vec::len).sum())
        });
        let is_df = self.is_df(&path) && size.is_none();
        let state = self.chan(chan);
        if is_df {
            state.df = path.clone();
            state.ef = None;
            if path.as_slice() == [MF] {
                state.app = App::None;
            }
        } else {
            state.df = path[..path.len() - 1].to_vec();
            state.ef = Some(path.clone());
        }
        // A minimal FCP template (TS 102 221 §11.1.1.3): file id and, for an EF, its size.
        let fid = path[path.len() - 1];
        let mut fcp = vec![0x83, 0x02, fid[0], fid[1]];
        if let Some(n) = size {
            fcp.extend_from_slice(&[0x80, 0x02, (n >> 8) as u8, n as u8]);
        }
        if self.image.kind == ImageKind::Uicc && p2 & 0x0C == 0x0C {
            return sw(&[], 0x90, 0x00);
        }
        self.with_data(tlv(&[0x62], &fcp))
    }

    /// SELECT by DF name (P1=04): the ISD-R by its exact AID (GlobalPlatform §11.9),
    /// the USIM by its AID or a right-truncated one (ISO/IEC 7816-4 §7.1.1).
    fn select_aid(&mut self, chan: usize, p2: u8, aid: &[u8]) -> Vec<u8> {
        let isdr = self
            .image
            .euicc
            .as_ref()
            .and_then(|e| hex::decode(&e.isdr_aid).ok());
        let usim = self
            .image
            .usim
            .as_ref()
            .filter(|_| self.has_line())
            .and_then(|u| hex::decode(&u.aid).ok());
        let (app, full) = if isdr.as_deref() == Some(aid) {
            (App::Isdr, aid.to_vec())
        } else if let Some(full) = usim.filter(|u| aid.len() >= 5 && u.starts_with(aid)) {
            (App::Usim, full)
        } else {
            return sw(&[], 0x6A, 0x82);
        };
        let state = self.chan(chan);
        state.app = app;
        state.ef = None;
        state.df = match app {
            App::Usim => vec![MF, ADF],
            _ => vec![MF],
        };
        if p2 & 0x0C == 0x0C {
            return sw(&[], 0x90, 0x00);
        }
        // FCI with the DF name (ISO/IEC 7816-4 §5.3.3, tag 84).
        self.with_data(tlv(&[0x6F], &tlv(&[0x84], &full)))
    }

    /// The file an SFI names in the channel's current DF, which it then selects
    /// (TS 102 221 §11.1.3.2).
    fn by_sfi(&mut self, chan: usize, sfi: u8) -> Option<Path> {
        let df = self.chan(chan).df.clone();
        let path = SFIS
            .iter()
            .find(|(parent, s, _)| *s == sfi && *parent == df.as_slice())
            .map(|(parent, _, fid)| {
                let mut p = parent.to_vec();
                p.push(*fid);
                p
            })
            .filter(|p| self.files.contains_key(p) || self.records.contains_key(p))?;
        self.chan(chan).ef = Some(path.clone());
        Some(path)
    }

    fn read_binary(&mut self, chan: usize, p1: u8, p2: u8, le: Option<u8>) -> Vec<u8> {
        let (path, offset) = if p1 & 0x80 != 0 {
            if self.image.kind == ImageKind::Gsm {
                return sw(&[], 0x6B, 0x00);
            }
            match self.by_sfi(chan, p1 & 0x1F) {
                Some(p) => (p, usize::from(p2)),
                None => return sw(&[], 0x6A, 0x82),
            }
        } else {
            match &self.chan(chan).ef {
                Some(p) => (p.clone(), usize::from(p1) << 8 | usize::from(p2)),
                // No EF selected (TS 102 221 §10.2.1.5: 6986 command not allowed).
                None => return sw(&[], 0x69, 0x86),
            }
        };
        if self.behind_pin(&path) {
            // 6982 security status not satisfied (TS 102 221 §10.2.1.5); a GSM SIM says
            // 9804 access condition not fulfilled (TS 51.011 §9.4.5).
            return match self.image.kind {
                ImageKind::Uicc => sw(&[], 0x69, 0x82),
                ImageKind::Gsm => sw(&[], 0x98, 0x04),
            };
        }
        let Some(contents) = self.files.get(&path).cloned() else {
            // A record file: 6981 command incompatible with file structure.
            return sw(&[], 0x69, 0x81);
        };
        if offset > contents.len() {
            return sw(&[], 0x6B, 0x00);
        }
        let available = contents.len() - offset;
        answer_le(&contents[offset..], available, le)
    }

    /// READ RECORD, absolute mode (TS 102 221 §11.1.5: P2 b3-b1 = 100, b8-b4 the SFI or
    /// 0 for the current EF).
    fn read_record(&mut self, chan: usize, p1: u8, p2: u8, le: Option<u8>) -> Vec<u8> {
        if p2 & 0x07 != 0x04 || p1 == 0 {
            return sw(&[], 0x6A, 0x86);
        }
        let sfi = p2 >> 3;
        let path = if sfi != 0 {
            self.by_sfi(chan, sfi)
        } else {
            self.chan(chan).ef.clone()
        };
        let Some(recs) = path.and_then(|p| self.records.get(&p)) else {
            return sw(&[], 0x6A, 0x82);
        };
        match recs.get(usize::from(p1) - 1) {
            Some(r) => answer_le(r, r.len(), le),
            // Record not found (TS 102 221 §10.2.1.5).
            None => sw(&[], 0x6A, 0x83),
        }
    }

    /// STORE DATA to the ISD-R: the ES10 requests of SGP.22 §5.7, received in blocks
    /// (§5.7.2, GlobalPlatform Card Specification §11.11.2: P1 b8 set on the last block,
    /// P2 the block number from 00). A block out of sequence is refused with 6A86 and the
    /// command dropped. Anything not an ES10 request: 6A80 wrong data.
    fn store_data(&mut self, p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
        if self.image.euicc.is_none() {
            return sw(&[], 0x6D, 0x00);
        }
        if p2 == 0 {
            self.blocks.clear();
        } else if p2 != self.next_block {
            self.blocks.clear();
            self.next_block = 0;
            return sw(&[], 0x6A, 0x86);
        }
        self.blocks.extend_from_slice(data);
        if p1 & 0x80 == 0 {
            self.next_block = p2.wrapping_add(1);
            return sw(&[], 0x90, 0x00);
        }
        self.next_block = 0;
        let command = std::mem::take(&mut self.blocks);
        let out = match self.es10b_segment(&command) {
            Some(out) => out,
            None => {
                let Ok(top) = ber::parse(&command) else {
                    return sw(&[], 0x6A, 0x80);
                };
                let Some(req) = top.first().copied() else {
                    return sw(&[], 0x6A, 0x80);
                };
                let Some(out) = self.es10(req.tag, req.value) else {
                    return sw(&[], 0x6A, 0x80);
                };
                out
            }
        };
        let mut out = out;
        if self.image.fault.truncate_es10 {
            out.truncate(out.len().saturating_sub(3));
        }
        self.with_data(out)
    }

    /// What the download side needs to know of the card.
    fn view(&self) -> CardView {
        let eid = self
            .image
            .euicc
            .as_ref()
            .and_then(|e| hex::decode(&e.eid).ok())
            .unwrap_or_default();
        CardView {
            eid,
            info2: self.euicc_info2(),
            iccids: self.profiles.iter().map(|p| p.iccid.clone()).collect(),
            free_nvm: self.free_nvm(),
            next_seq: self.next_seq,
        }
    }

    fn free_nvm(&self) -> u32 {
        let total = self.image.euicc.as_ref().map_or(0, |e| e.free_nvm);
        total.saturating_sub(self.installed.values().sum())
    }

    /// A LoadBoundProfilePackage segment (SGP.22 §2.5.5): the BF36 that opens a BPP, or
    /// while one is loaded its A0-A3 and 86-88 segments. None: not a segment.
    fn es10b_segment(&mut self, command: &[u8]) -> Option<Vec<u8>> {
        let first = *command.first()?;
        let opens = command.starts_with(&[0xBF, 0x36]);
        let continues = self.download.in_bpp() && matches!(first, 0xA0..=0xA3 | 0x86..=0x88);
        if !opens && !continues {
            return None;
        }
        let view = self.view();
        let (out, effects) = self.download.load_segment(command, &view);
        self.apply(effects);
        Some(out)
    }

    /// Install a downloaded profile, keep a ProfileInstallationResult.
    fn apply(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Install(profile, size) => {
                    self.installed.insert(profile.iccid.clone(), size);
                    self.profiles.push(profile);
                }
                Effect::Pir {
                    seq,
                    iccid,
                    address,
                    pir,
                } => {
                    self.notifications.push(Notification {
                        seq,
                        event: NotificationEvent::Install,
                        iccid,
                        address,
                        pir: Some(pir),
                    });
                    self.next_seq = seq + 1;
                }
            }
        }
    }

    /// EUICCInfo2 (SGP.22 §5.7.8), with the free memory as it is now and the CI of the
    /// eUICC's PKI when it has one.
    fn euicc_info2(&self) -> Vec<u8> {
        let Some(e) = self.image.euicc.as_ref() else {
            return Vec::new();
        };
        let svn: Vec<u8> = e.svn.split('.').filter_map(|n| n.parse().ok()).collect();
        let keys: Vec<u8> = self.ci_pkids().iter().flat_map(|k| der(0x04, k)).collect();
        let mut b = der(0x81, &[2, 3, 1]);
        b.extend(der(0x82, &svn));
        b.extend(der(0x83, &[1, 0, 0]));
        // extCardResource (ETSI TS 102 226 §8.2.1.3.2): installed applications, free
        // non-volatile memory, free volatile memory.
        let mut res = der(0x81, &[self.profiles.len() as u8]);
        res.extend(der(0x82, &int(self.free_nvm())));
        res.extend(der(0x83, &int(16_384)));
        b.extend(der(0x84, &res));
        b.extend(der(0x85, &[0x07, 0x00]));
        b.extend(der(0x88, &[0x07, 0x00]));
        b.extend(der(0xA9, &keys));
        b.extend(der(0xAA, &keys));
        // ppVersion and sasAcreditationNumber: mandatory in the RSP module's EUICCInfo2.
        b.extend(der(0x04, &[0, 0, 1]));
        b.extend(der(0x0C, b"SIMGATE-VIRTUAL"));
        der(0xBF22, &b)
    }

    /// The CI key ids the eUICC trusts: its PKI's CI, else the image's list.
    fn ci_pkids(&self) -> Vec<Vec<u8>> {
        if let Some(pki) = self.download.pki() {
            return vec![pki.ci_pkid().to_vec()];
        }
        self.image
            .euicc
            .as_ref()
            .map(|e| {
                e.ci_pkids
                    .iter()
                    .filter_map(|k| hex::decode(k).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn profile_index(&self, iccid_tlv: Option<&[u8]>) -> Option<usize> {
        let want = iccid_tlv?;
        self.profiles
            .iter()
            .position(|p| super::iccid_to_ef(&p.iccid) == want)
    }

    fn notify(&mut self, event: NotificationEvent, i: usize) {
        let p = &self.profiles[i];
        self.notifications.push(Notification {
            seq: self.next_seq,
            event,
            iccid: Some(p.iccid.clone()),
            address: p.smdp.clone(),
            pir: None,
        });
        self.next_seq += 1;
    }

    fn metadata(n: &Notification) -> Vec<u8> {
        download::notification_metadata(n.seq, n.event, &n.address, n.iccid.as_deref())
    }

    /// A PendingNotification (SGP.22 §5.7.10): an install's ProfileInstallationResult as
    /// kept, or an otherSignedNotification, signed with the eUICC's key and carrying its
    /// certificates when it has a PKI (else a made-up signature and no certificates:
    /// nothing verifies them without keys).
    fn pending(&self, n: &Notification) -> Vec<u8> {
        if let Some(pir) = &n.pir {
            return pir.clone();
        }
        let tbs = Self::metadata(n);
        match self.download.pki() {
            Some(pki) => der(0x30, &pki.sign_notification(&tbs)),
            None => {
                let mut signed = tbs;
                signed.extend(der(0x5F37, &[0x5A; 64]));
                der(0x30, &signed)
            }
        }
    }

    fn es10(&mut self, tag: u32, value: &[u8]) -> Option<Vec<u8>> {
        let e = self.image.euicc.clone()?;
        let find = |t: u32| ber::find(value, t).ok().flatten();
        let result = |tag: u32, code: u8| der(tag, &der(0x80, &[code]));
        Some(match tag {
            // GetEUICCData (SGP.22 §5.7.20): the EID, validated at load time.
            0xBF3E => der(0xBF3E, &der(0x5A, &hex::decode(&e.eid).unwrap_or_default())),
            // GetEUICCInfo2 (§5.7.8).
            0xBF22 => self.euicc_info2(),
            // GetEUICCInfo1 (§5.7.8): the SGP.22 version and the CI key ids.
            0xBF20 => {
                let svn: Vec<u8> = e.svn.split('.').filter_map(|n| n.parse().ok()).collect();
                let keys: Vec<u8> = self.ci_pkids().iter().flat_map(|k| der(0x04, k)).collect();
                let mut b = der(0x82, &svn);
                b.extend(der(0xA9, &keys));
                b.extend(der(0xAA, &keys));
                der(0xBF20, &b)
            }
            // GetEuiccConfiguredAddresses (§5.7.3, ES10a): default SM-DP+, root SM-DS.
            0xBF3C => {
                let mut b = Vec::new();
                if let Some(a) = &e.default_smdp {
                    b.extend(der(0x80, a.as_bytes()));
                }
                b.extend(der(0x81, e.root_smds.as_bytes()));
                der(0xBF3C, &b)
            }
            // GetEUICCChallenge (§5.7.7).
            0xBF2E => self.download.challenge(),
            // AuthenticateServer (§5.7.13).
            0xBF38 => {
                let view = self.view();
                self.download.authenticate_server(value, &view)
            }
            // PrepareDownload (§5.7.5).
            0xBF21 => self.download.prepare_download(value),
            // CancelSession (§5.7.14).
            0xBF41 => self.download.cancel_session(value),
            // GetProfilesInfo (§5.7.15): the tags of the tag list, or every one we keep.
            0xBF2D => {
                let wanted: Option<Vec<u32>> = find(0x5C).map(tag_list);
                let asks = |t: u32| wanted.as_ref().is_none_or(|w| w.contains(&t));
                let infos: Vec<u8> = self
                    .profiles
                    .iter()
                    .flat_map(|p| {
                        let mut i = Vec::new();
                        if asks(0x5A) {
                            i.extend(der(0x5A, &super::iccid_to_ef(&p.iccid)));
                        }
                        if asks(0x9F70) {
                            i.extend(der(0x9F70, &[u8::from(p.enabled)]));
                        }
                        for (t, v) in [(0x90, &p.nickname), (0x91, &p.provider), (0x92, &p.name)] {
                            if let (true, Some(v)) = (asks(t), v) {
                                i.extend(der(t, v.as_bytes()));
                            }
                        }
                        if asks(0x95) {
                            let class = match p.class.as_str() {
                                "test" => 0,
                                "provisioning" => 1,
                                _ => 2,
                            };
                            i.extend(der(0x95, &[class]));
                        }
                        der(0xE3, &i)
                    })
                    .collect();
                der(0xBF2D, &der(0xA0, &infos))
            }
            // EnableProfile (§5.7.16): the enabled one is disabled first; a notification
            // for each (§3.5).
            0xBF31 | 0xBF32 => {
                let id = find(0xA0).and_then(|c| ber::find(c, 0x5A).ok().flatten());
                let code = match (self.profile_index(id), tag) {
                    (None, _) => 1,
                    (Some(i), 0xBF31) if self.profiles[i].enabled => 2,
                    (Some(i), 0xBF31) => {
                        if let Some(old) = self.profiles.iter().position(|p| p.enabled) {
                            self.profiles[old].enabled = false;
                            self.notify(NotificationEvent::Disable, old);
                        }
                        self.profiles[i].enabled = true;
                        self.notify(NotificationEvent::Enable, i);
                        0
                    }
                    (Some(i), _) if !self.profiles[i].enabled => 2,
                    (Some(i), _) => {
                        self.profiles[i].enabled = false;
                        self.notify(NotificationEvent::Disable, i);
                        0
                    }
                };
                if code == 0 {
                    self.show_enabled_profile();
                }
                result(tag, code)
            }
            // DeleteProfile (§5.7.18): only a disabled one.
            0xBF33 => {
                let code = match self.profile_index(find(0x5A)) {
                    None => 1,
                    Some(i) if self.profiles[i].enabled => 2,
                    Some(i) => {
                        self.notify(NotificationEvent::Delete, i);
                        let gone = self.profiles.remove(i);
                        self.installed.remove(&gone.iccid);
                        0
                    }
                };
                result(tag, code)
            }
            // SetNickname (§5.7.21).
            0xBF29 => {
                let code = match (self.profile_index(find(0x5A)), find(0x90)) {
                    (Some(i), Some(name)) => {
                        let name = String::from_utf8_lossy(name).into_owned();
                        self.profiles[i].nickname = (!name.is_empty()).then_some(name);
                        0
                    }
                    (None, _) => 1,
                    (Some(_), None) => 127,
                };
                result(tag, code)
            }
            // ListNotification (§5.7.9).
            0xBF28 => {
                let list: Vec<u8> = self.notifications.iter().flat_map(Self::metadata).collect();
                der(0xBF28, &der(0xA0, &list))
            }
            // The `refuse_retrieve_notifications` fault: notificationsListResultError
            // [1] undefinedError(127).
            0xBF2B if self.image.fault.refuse_retrieve_notifications => {
                der(0xBF2B, &der(0x81, &[0x7F]))
            }
            // RetrieveNotificationsList (§5.7.10): every pending notification, or the one
            // with the sequence number asked for.
            0xBF2B => {
                let seq = find(0xA0)
                    .and_then(|c| ber::find(c, 0x80).ok().flatten())
                    .map(|v| v.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)));
                let list: Vec<u8> = self
                    .notifications
                    .iter()
                    .filter(|n| seq.is_none_or(|s| s == n.seq))
                    .flat_map(|n| self.pending(n))
                    .collect();
                der(0xBF2B, &der(0xA0, &list))
            }
            // NotificationSentRequest (§5.7.11): ok(0) or nothingToDelete(1).
            0xBF30 => {
                let seq = find(0x80).map(|v| v.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)));
                let before = self.notifications.len();
                self.notifications.retain(|n| Some(n.seq) != seq);
                result(0xBF30, u8::from(self.notifications.len() == before))
            }
            _ => return None,
        })
    }

    fn get_response(&mut self, le: Option<u8>) -> Vec<u8> {
        if self.pending.is_empty() {
            return sw(&[], 0x69, 0x85);
        }
        // A short Le: 00 (or none) asks for up to 256 bytes (ISO/IEC 7816-4 §5.1); a
        // longer answer (a download's are) comes in pieces, each announced by 61xx.
        let n = match le {
            Some(0) | None => 256,
            Some(n) => usize::from(n),
        }
        .min(self.pending.len());
        let out: Vec<u8> = self.pending.drain(..n).collect();
        if self.pending.is_empty() {
            sw(&out, 0x90, 0x00)
        } else {
            let rest = self.pending.len().min(255) as u8;
            sw(&out, 0x61, rest)
        }
    }
}

/// A tagList (SGP.22 §5.7.15): concatenated BER tags.
fn tag_list(v: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut t = u32::from(v[i]);
        if v[i] & 0x1F == 0x1F {
            while i + 1 < v.len() {
                i += 1;
                t = t << 8 | u32::from(v[i]);
                if v[i] & 0x80 == 0 {
                    break;
                }
            }
        }
        out.push(t);
        i += 1;
    }
    out
}

/// Answer `contents` honouring Le: a wrong Le gets 6Cxx with the right one (TS 102 221
/// §7.3.1.1.4); Le 00 or absent means "all, up to 256".
fn answer_le(contents: &[u8], available: usize, le: Option<u8>) -> Vec<u8> {
    let wanted = match le {
        Some(0) | None => 256,
        Some(n) => usize::from(n),
    };
    if wanted > available && le.is_some() && le != Some(0) {
        return sw(&[], 0x6C, available.min(255) as u8);
    }
    let n = wanted.min(available);
    sw(&contents[..n], 0x90, 0x00)
}

/// The virtual card in memory, for unit tests and the benchmark: a mute card times out
/// at once and a pulled card is removed, as through the rig.
impl CardTransport for VirtualCard {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, CardError> {
        match self.respond(command) {
            Reply::Answer(r) => Ok(r),
            Reply::Mute => Err(CardError::Timeout(std::time::Duration::ZERO)),
            Reply::Pull => Err(CardError::Removed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::{identify, CardKind, Options};

    fn card(kind: &str) -> VirtualCard {
        let text = format!(
            "name = \"t\"\nkind = \"{kind}\"\natr = \"3B00\"\n[files]\n\"3F00/2FE2\" = \"988812010000400310F0\"\n"
        );
        VirtualCard::new(CardImage::parse(&text).unwrap())
    }

    fn iccid_only() -> Options<'static> {
        Options {
            isdr_aids: &[],
            vendor_aids: false,
            subscriber: false,
        }
    }

    #[test]
    fn uicc_iccid_takes_one_apdu_by_sfi() {
        let mut c = card("uicc");
        let id = identify(&mut c, &iccid_only()).unwrap();
        assert_eq!(
            (id.kind, id.iccid.unwrap().as_str(), id.apdus),
            (CardKind::Uicc, "8988211000000430010", 1)
        );
    }

    #[test]
    fn gsm_sim_is_read_with_cla_a0_after_class_refusal() {
        let mut c = card("gsm");
        let id = identify(&mut c, &iccid_only()).unwrap();
        assert_eq!(
            (id.kind, id.iccid.unwrap().as_str(), id.apdus),
            (CardKind::Gsm, "8988211000000430010", 3)
        );
    }

    #[test]
    fn mute_and_pull_faults_answer_then_stop() {
        let text = "name = \"t\"\nkind = \"uicc\"\natr = \"3B00\"\n[fault]\nmute_after = 1\n";
        let mut c = VirtualCard::new(CardImage::parse(text).unwrap());
        assert!(matches!(
            c.respond(&[0, 0xB0, 0x82, 0, 10]),
            Reply::Answer(_)
        ));
        assert_eq!(c.respond(&[0, 0xB0, 0x82, 0, 10]), Reply::Mute);
        let text = "name = \"t\"\nkind = \"uicc\"\natr = \"3B00\"\n[fault]\npull_after = 0\n";
        let mut c = VirtualCard::new(CardImage::parse(text).unwrap());
        assert_eq!(c.respond(&[0, 0xB0, 0x82, 0, 10]), Reply::Pull);
    }

    #[test]
    fn logical_channels_keep_their_own_selection_and_close() {
        let text = "name = \"t\"\nkind = \"uicc\"\natr = \"3B00\"\n[usim]\naid = \"A0000000871002FF\"\n[files]\n\"3F00/2FE2\" = \"988812010000400310F0\"\n\"3F00/7FFF/6F07\" = \"082982608200002080\"\n";
        let mut c = VirtualCard::new(CardImage::parse(text).unwrap());
        assert_eq!(c.process(&hex::decode("0070000001").unwrap()), [1, 0x90, 0]);
        // USIM by truncated AID on channel 1, IMSI by SFI there.
        assert_eq!(
            c.process(&hex::decode("01A4040C07A0000000871002").unwrap()),
            [0x90, 0]
        );
        assert_eq!(
            c.process(&hex::decode("01B0870009").unwrap())[..2],
            [0x08, 0x29]
        );
        // The basic channel still reads EF.ICCID by SFI: it never moved.
        assert_eq!(c.process(&hex::decode("00B082000A").unwrap())[0], 0x98);
        assert_eq!(c.process(&hex::decode("00708001").unwrap()), [0x90, 0]);
        assert_eq!(c.process(&hex::decode("01B0870009").unwrap()), [0x68, 0x81]);
    }
}
