//! Managing an eUICC's profiles over any [`CardTransport`]: the ISD-R reached, ES10
//! requests sent as STORE DATA (SGP.22 §5.7.2), each operation verified by listing again,
//! the card left as found. Pure like the rest of `card`: PC/SC (src/reader) and a
//! modem's +CGLA (src/modem/esim.rs) are transports.
//!
//! Where the ISD-R lives: on a reader, the basic channel (SELECT by AID, then SELECT MF
//! to put it back: two APDUs, where a logical channel costs three — MANAGE CHANNEL
//! open, SELECT, close); through a modem, the channel +CCHO opened.

use super::apdu::{Apdu, Channel, StatusWord};
use super::es10::{self, EuiccInfo2, NotificationMeta, Operation, PendingNotification};
use super::es10::{ProfileInfo, ProfileState, Refusal};
use super::euicc::{self, Eid, IsdrAid};
use super::iccid::Iccid;
use super::{tlv, CardError, CardTransport};

/// Why an eSIM operation did not happen (or did not verify), in words a person acts on.
#[derive(Debug, thiserror::Error)]
pub enum EsimError {
    #[error(transparent)]
    Card(#[from] CardError),
    #[error("not an eUICC: no ISD-R answered (tried {0})")]
    NoIsdr(String),
    /// The eUICC answered an ES10 request with something that is not its response.
    #[error("malformed answer to {function}: {detail}")]
    Malformed {
        function: &'static str,
        detail: String,
    },
    /// The STORE DATA itself was refused: said in words, with what it most likely means.
    #[error("{function}: {reason}")]
    Rejected {
        function: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("no profile {0} on this eUICC")]
    NoProfile(String),
    #[error(
        "profile {0} is enabled and cannot be deleted: disable it or enable another profile first"
    )]
    DeleteEnabled(String),
    #[error("{0}: nickname longer than 64 bytes (SGP.22 profileNickname)")]
    NicknameTooLong(String),
    /// The eUICC said ok, but listing again shows otherwise.
    #[error("{function} answered ok, but listing again shows {detail}")]
    NotVerified {
        function: &'static str,
        detail: String,
    },
}

impl EsimError {
    /// The eUICC refused an enable or a disable because the profile is in that state
    /// already (SGP.22 Annex H, result 2): the state asked for holds, nothing to do.
    pub fn already_so(&self) -> bool {
        matches!(
            self,
            EsimError::Refused(Refusal {
                op: crate::card::es10::Operation::Enable | crate::card::es10::Operation::Disable,
                code: 2,
            })
        )
    }

    /// The user's mistake (exit 2 in the CLI, a refusal on the platform): unknown
    /// profile, wrong state, too long a nickname.
    pub fn is_request_error(&self) -> bool {
        matches!(
            self,
            EsimError::NoProfile(_)
                | EsimError::DeleteEnabled(_)
                | EsimError::NicknameTooLong(_)
                | EsimError::Refused(Refusal { code: 1..=4, .. })
        )
    }
}

/// What a refused STORE DATA most likely means (SGP.22 §5.7.2; TS 102 221 §10.2.1),
/// in words; the status word itself goes to the debug log only.
fn store_data_reason(sw: StatusWord) -> String {
    let what = match (sw.0, sw.1) {
        // The card no longer has the ISD-R selected on the channel: it was reset or the
        // channel dropped under us.
        (0x6D, _) | (0x6E, _) => {
            "the ISD-R is no longer selected (the card dropped the channel mid-operation)"
        }
        (0x68, 0x81) | (0x68, 0x82) => {
            "the logical channel is closed (the card dropped the channel mid-operation)"
        }
        (0x6A, 0x80) => {
            "the eUICC refused the request's data (incorrect parameters in the data field)"
        }
        (0x69, 0x85) => {
            "the eUICC refused it in its current state (conditions of use not satisfied)"
        }
        (0x69, 0x82) => "security status not satisfied",
        (0x6A, 0x88) => "referenced data not found",
        (0x67, _) => "wrong length",
        (0x6F, _) => "the eUICC failed internally",
        _ => "the eUICC refused the command",
    };
    tracing::debug!(%sw, "STORE DATA refused");
    what.to_string()
}

/// An ISD-R reached on a channel: ES10 requests go here.
#[derive(Debug)]
pub struct Isdr<T> {
    ch: Channel<T>,
    chan: u8,
    /// Reached on the basic channel, which must be put back on the MF when done.
    basic: bool,
    aid: String,
    /// The most data one STORE DATA block carries: 255 (a short APDU's Lc, ISO/IEC
    /// 7816-4 §5.1), less where the transport limits the whole APDU (a modem's +CGLA).
    block: usize,
}

/// A short APDU's most data bytes (ISO/IEC 7816-4 §5.1: Lc is one byte).
const MAX_BLOCK: usize = 255;

/// STORE DATA P1 for a block that more blocks follow (GlobalPlatform Card Specification
/// §11.11.2.1: b8 = 0 not the last block, b5-b4 = 01 BER-TLV data; SGP.22 §5.7.2).
const MORE_BLOCKS: u8 = 0x11;

/// The MF (TS 102 221 §8.2).
const FID_MF: [u8; 2] = [0x3F, 0x00];

impl<T: CardTransport> Isdr<T> {
    /// SELECT the first ISD-R of `aids` that answers on the basic channel (GlobalPlatform
    /// Card Spec §11.9, P1=04 P2=00; the FCI not fetched). TS 102 221 §11.1.1.1: an
    /// unsuccessful SELECT leaves the current file and application as they were.
    pub fn select_basic(transport: T, aids: &[IsdrAid]) -> Result<Isdr<T>, EsimError> {
        let mut ch = Channel::new(transport);
        for aid in aids {
            let Ok(bytes) = hex::decode(&aid.aid) else {
                continue;
            };
            let select = Apdu::new(0x00, 0xA4, 0x04, 0x00)
                .with_data(&bytes)
                .with_le(0);
            let sw = ch.send_no_response_data(&select, "SELECT ISD-R")?.sw;
            if sw.is_ok() || sw.0 == 0x61 {
                return Ok(Isdr {
                    ch,
                    chan: 0,
                    basic: true,
                    aid: aid.aid.clone(),
                    block: MAX_BLOCK,
                });
            }
        }
        Err(EsimError::NoIsdr(
            aids.iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        ))
    }

    /// An ISD-R already selected on logical channel `chan` by the transport (a modem's
    /// +CCHO, TS 27.007 §8.45), which also closes it.
    pub fn on_channel(transport: T, chan: u8, aid: &str) -> Isdr<T> {
        Isdr {
            ch: Channel::new(transport),
            chan,
            basic: false,
            aid: aid.to_string(),
            block: MAX_BLOCK,
        }
    }

    pub fn aid(&self) -> &str {
        &self.aid
    }

    /// APDUs on the wire so far.
    pub fn apdus(&self) -> u32 {
        self.ch.apdus()
    }

    /// Bytes of command APDUs sent so far.
    pub fn bytes_sent(&self) -> u64 {
        self.ch.bytes_sent()
    }

    /// Put the basic channel back on the MF, as after reset (SELECT by FID, P2=0C). The
    /// transport comes back, with the APDUs spent.
    pub fn finish(mut self) -> Result<(T, u32), CardError> {
        if self.basic {
            let mf = Apdu::new(0x00, 0xA4, 0x00, 0x0C).with_data(&FID_MF);
            let r = self.ch.send_overhead(&mf, "SELECT MF")?;
            if !r.sw.is_ok() {
                tracing::debug!(sw = %r.sw, "SELECT MF after the ISD-R refused");
            }
        }
        let n = self.ch.apdus();
        Ok((self.ch.into_inner(), n))
    }

    /// Limit each STORE DATA command to `max_apdu` bytes in all (header, Lc, data, Le):
    /// a transport that cannot carry a full short APDU (devices/modems `[euicc]
    /// cgla_max_apdu`) still gets every request, in more blocks.
    pub fn limit_apdu(&mut self, max_apdu: usize) {
        // CLA INS P1 P2 Lc … Le: six bytes around the data (ISO/IEC 7816-4 §5.1, case 4).
        self.block = max_apdu.saturating_sub(6).clamp(16, MAX_BLOCK);
    }

    /// One ES10 request (SGP.22 §5.7.2: STORE DATA with P2 the block number from 00, P1
    /// 11 for a block that more follow, 91 for the last one; the eUICC answers the blocks
    /// before the last with 9000 and no data). The response, GET RESPONSE chunks joined
    /// by the channel.
    pub fn es10(&mut self, request: &[u8], function: &'static str) -> Result<Vec<u8>, EsimError> {
        let (c, i, last, _) = euicc::store_data_header(self.chan);
        let blocks: Vec<&[u8]> = request.chunks(self.block).collect();
        if blocks.len() > 256 {
            return Err(EsimError::Malformed {
                function,
                detail: format!(
                    "a {}-byte request needs more than 256 STORE DATA blocks",
                    request.len()
                ),
            });
        }
        let n = blocks.len();
        for (k, block) in blocks.into_iter().enumerate() {
            let is_last = k + 1 == n;
            let p1 = if is_last { last } else { MORE_BLOCKS };
            let apdu = Apdu::new(c, i, p1, k as u8).with_data(block);
            let apdu = if is_last { apdu.with_le(0) } else { apdu };
            let resp = self.ch.send(&apdu, function)?;
            if !resp.sw.is_ok() {
                return Err(EsimError::Rejected {
                    function,
                    reason: store_data_reason(resp.sw),
                });
            }
            if is_last {
                return Ok(resp.data);
            }
            if !resp.data.is_empty() {
                // The eUICC answered before the request was whole: an error answer to
                // what it had so far (SGP.22 §5.7.2 has no data on intermediate blocks).
                return Ok(resp.data);
            }
        }
        Ok(Vec::new())
    }

    pub fn eid(&mut self) -> Result<Option<Eid>, EsimError> {
        let d = self.es10(&euicc::GET_EUICC_DATA_EID, "GetEUICCData")?;
        Ok(tlv::find_path(&d, &[0xBF3E, 0x5A])
            .map_err(|e| EsimError::Malformed {
                function: "GetEUICCData",
                detail: e.to_string(),
            })?
            .and_then(Eid::from_bytes))
    }

    pub fn euicc_info2(&mut self) -> Result<EuiccInfo2, EsimError> {
        let d = self.es10(&es10::get_euicc_info2(), "GetEUICCInfo2")?;
        es10::parse_euicc_info2(&d).map_err(|e| malformed("GetEUICCInfo2", e))
    }

    pub fn profiles(&mut self) -> Result<Vec<ProfileInfo>, EsimError> {
        let d = self.es10(&es10::get_profiles_info(), "GetProfilesInfo")?;
        es10::parse_profiles_info(&d).map_err(|e| malformed("GetProfilesInfo", e))
    }

    pub fn notifications(&mut self) -> Result<Vec<NotificationMeta>, EsimError> {
        let d = self.es10(&es10::list_notification(), "ListNotification")?;
        es10::parse_notification_list(&d).map_err(|e| malformed("ListNotification", e))
    }

    /// The signed notification numbered `seq`; `None` when the eUICC has none by that
    /// number.
    pub fn retrieve(&mut self, seq: u32) -> Result<Option<PendingNotification>, EsimError> {
        let d = self.es10(
            &es10::retrieve_notification(seq),
            "RetrieveNotificationsList",
        )?;
        let list =
            es10::parse_retrieved(&d).map_err(|e| malformed("RetrieveNotificationsList", e))?;
        Ok(list.into_iter().find(|n| n.meta.seq == seq))
    }

    /// Every pending notification, signed, as the SM-DP+ wants it.
    pub fn pending(&mut self) -> Result<Vec<PendingNotification>, EsimError> {
        let d = self.es10(
            &es10::retrieve_all_notifications(),
            "RetrieveNotificationsList",
        )?;
        es10::parse_retrieved(&d).map_err(|e| malformed("RetrieveNotificationsList", e))
    }

    /// RemoveNotificationFromList; `false` when there was nothing by that number.
    pub fn remove(&mut self, seq: u32) -> Result<bool, EsimError> {
        let d = self.es10(
            &es10::remove_notification(seq),
            "RemoveNotificationFromList",
        )?;
        es10::parse_removed(&d).map_err(|e| malformed("RemoveNotificationFromList", e))
    }

    fn operation(&mut self, op: Operation, request: &[u8]) -> Result<(), EsimError> {
        let d = self.es10(request, op.function())?;
        es10::parse_result(op, &d)
            .map_err(|e| malformed(op.function(), e))?
            .map_err(EsimError::from)
    }
}

fn malformed(function: &'static str, e: es10::DecodeError) -> EsimError {
    EsimError::Malformed {
        function,
        detail: e.what,
    }
}

/// What the daemon asks of an eUICC: list, a profile operation, or the removal of a
/// notification the platform delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    List,
    Apply(Action),
    Remove(u32),
}

/// What [`Work`] left: the profiles and the notifications still pending (signed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkDone {
    pub profiles: Vec<ProfileInfo>,
    pub pending: Vec<PendingNotification>,
    /// Pending notifications that could not be retrieved, said in words: the work
    /// itself is done (verified by listing), this is beside it.
    pub notification_problem: Option<String>,
    pub apdus: u32,
}

/// Carry out `work` on a reached ISD-R (which the caller finishes): after a profile
/// operation (verified) or a removal, the pending notifications are retrieved, signed,
/// for the platform.
pub fn work_on<T: CardTransport>(i: &mut Isdr<T>, work: &Work) -> Result<WorkDone, EsimError> {
    let profiles = match work {
        Work::List => i.profiles()?,
        Work::Apply(a) => apply_on(i, a)?.profiles,
        Work::Remove(seq) => {
            if !i.remove(*seq)? {
                tracing::info!(seq, "notification already removed from the eUICC");
            }
            i.profiles()?
        }
    };
    // The work is done and verified: what follows may not undo that in the report.
    let (pending, notification_problem) = pending_after(i)?;
    Ok(WorkDone {
        profiles,
        pending,
        notification_problem,
        apdus: i.apdus(),
    })
}

/// Whether the card is gone (pulled, mute, the reader lost): nothing more can be asked.
fn card_gone(e: &EsimError) -> bool {
    matches!(
        e,
        EsimError::Card(CardError::Removed | CardError::Timeout(_) | CardError::Transport(_))
    )
}

/// The pending notifications, signed: all at once (RetrieveNotificationsList without
/// searchCriteria, SGP.22 §5.7.10). An eUICC refusing that is asked as lpac does: the
/// numbers from ListNotification (§5.7.9), then each by its seqNumber. What still cannot
/// be retrieved is said in words (with the numbers pending on the card), not an error:
/// it stays on the eUICC for a later command. Only a card gone is an error.
fn pending_after<T: CardTransport>(
    i: &mut Isdr<T>,
) -> Result<(Vec<PendingNotification>, Option<String>), EsimError> {
    let all = match i.pending() {
        Ok(p) => return Ok((p, None)),
        Err(e) if card_gone(&e) => return Err(e),
        Err(e) => e,
    };
    tracing::info!(error = %all, "RetrieveNotificationsList refused; retrieving by ListNotification");
    let listed = match i.notifications() {
        Ok(l) => l,
        Err(e) if card_gone(&e) => return Err(e),
        Err(e) => {
            return Ok((
                Vec::new(),
                Some(format!(
                    "pending notifications not retrieved: {all}; ListNotification: {e}"
                )),
            ))
        }
    };
    let (mut got, mut missing) = (Vec::new(), Vec::new());
    for m in listed {
        match i.retrieve(m.seq) {
            Ok(Some(n)) => got.push(n),
            Ok(None) => missing.push(m.seq),
            Err(e) if card_gone(&e) => return Err(e),
            Err(_) => missing.push(m.seq),
        }
    }
    let problem = (!missing.is_empty()).then(|| {
        format!(
            "pending notifications {missing:?} (ListNotification) not retrieved, left on the eUICC: {all}"
        )
    });
    Ok((got, problem))
}

/// A profile operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Enable (the enabled one is disabled by the eUICC); `refresh`: SGP.22 refreshFlag,
    /// asking the eUICC to REFRESH the device (a modem), not a reader.
    Enable {
        iccid: Iccid,
        refresh: bool,
    },
    Disable {
        iccid: Iccid,
        refresh: bool,
    },
    Delete {
        iccid: Iccid,
    },
    Nickname {
        iccid: Iccid,
        nickname: String,
    },
}

impl Action {
    pub fn iccid(&self) -> &Iccid {
        match self {
            Action::Enable { iccid, .. }
            | Action::Disable { iccid, .. }
            | Action::Delete { iccid }
            | Action::Nickname { iccid, .. } => iccid,
        }
    }

    pub fn op(&self) -> Operation {
        match self {
            Action::Enable { .. } => Operation::Enable,
            Action::Disable { .. } => Operation::Disable,
            Action::Delete { .. } => Operation::Delete,
            Action::Nickname { .. } => Operation::Nickname,
        }
    }
}

/// An eUICC as `esim list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listing {
    pub isdr_aid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eid_check_ok: Option<bool>,
    pub info: EuiccInfo2,
    pub profiles: Vec<ProfileInfo>,
    /// APDUs on the wire for the whole listing.
    pub apdus: u32,
}

/// What an operation left on the eUICC, verified.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    /// The profiles listed after the operation.
    pub profiles: Vec<ProfileInfo>,
    /// The notifications pending after it (SGP.22 §3.5: each operation adds one).
    pub notifications: Vec<NotificationMeta>,
    /// The enabled profile before and after (its ICCID is the SIM's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled_after: Option<String>,
    pub apdus: u32,
}

fn enabled(list: &[ProfileInfo]) -> Option<String> {
    list.iter()
        .find(|p| p.state == ProfileState::Enabled)
        .map(|p| p.iccid.clone())
}

/// Run `f` on the ISD-R, then put the card back as found — also when `f` failed, unless
/// the card is gone.
pub fn with_isdr<T: CardTransport, R>(
    isdr: Isdr<T>,
    f: impl FnOnce(&mut Isdr<T>) -> Result<R, EsimError>,
) -> Result<(R, T, u32), EsimError> {
    let mut isdr = isdr;
    let result = f(&mut isdr);
    if result.as_ref().is_err_and(card_gone) {
        return Err(result.err().unwrap_or(EsimError::Card(CardError::Removed)));
    }
    let finished = isdr.finish();
    let value = result?;
    let (t, n) = finished?;
    Ok((value, t, n))
}

/// `esim list`: EID, EUICCInfo2 and the profiles.
pub fn list<T: CardTransport>(isdr: Isdr<T>) -> Result<(Listing, T), EsimError> {
    let aid = isdr.aid().to_string();
    let ((eid, info, profiles), t, apdus) = with_isdr(isdr, |i| {
        let eid = i.eid()?;
        let info = i.euicc_info2()?;
        let profiles = i.profiles()?;
        Ok((eid, info, profiles))
    })?;
    Ok((
        Listing {
            isdr_aid: aid,
            eid_check_ok: eid.as_ref().map(Eid::check_ok),
            eid: eid.map(|e| e.as_str().to_string()),
            info,
            profiles,
            apdus,
        },
        t,
    ))
}

/// Carry out `action` and verify it by listing again; the pending notifications after.
pub fn apply<T: CardTransport>(isdr: Isdr<T>, action: &Action) -> Result<(Outcome, T), EsimError> {
    let ((outcome, _), t, apdus) = with_isdr(isdr, |i| apply_on(i, action).map(|o| (o, ())))?;
    Ok((Outcome { apdus, ..outcome }, t))
}

/// [`apply`] on an ISD-R the caller holds (and finishes).
pub fn apply_on<T: CardTransport>(i: &mut Isdr<T>, action: &Action) -> Result<Outcome, EsimError> {
    let iccid = action.iccid().as_str().to_string();
    let op = action.op();
    // Deleting needs the profile's state first: an enabled profile is refused here, with
    // the reason, before anything is sent. An enable lists first too: the profile it
    // replaces is named by no answer of EnableProfile (SGP.22 §5.7.16), and a
    // notification of its disabling is sent only if its profile asks for one.
    let mut before: Option<Vec<ProfileInfo>> = None;
    match action {
        Action::Enable { iccid, refresh } => {
            before = Some(i.profiles()?);
            i.operation(op, &es10::enable_profile(iccid, *refresh))?
        }
        Action::Disable { iccid, refresh } => {
            i.operation(op, &es10::disable_profile(iccid, *refresh))?
        }
        Action::Delete { iccid: id } => {
            let list = i.profiles()?;
            match list.iter().find(|p| p.iccid == iccid) {
                None => return Err(EsimError::NoProfile(iccid)),
                Some(p) if p.state == ProfileState::Enabled => {
                    return Err(EsimError::DeleteEnabled(iccid))
                }
                Some(_) => {}
            }
            before = Some(list);
            i.operation(op, &es10::delete_profile(id))?
        }
        Action::Nickname {
            iccid: id,
            nickname,
        } => {
            let req = es10::set_nickname(id, nickname)
                .ok_or_else(|| EsimError::NicknameTooLong(nickname.clone()))?;
            i.operation(op, &req)?
        }
    }
    let after = i.profiles()?;
    let found = after.iter().find(|p| p.iccid == iccid);
    let problem = match (action, found) {
        (Action::Delete { .. }, Some(_)) => Some("the profile still there".to_string()),
        (Action::Delete { .. }, None) => None,
        (_, None) => Some("no such profile".to_string()),
        (Action::Enable { .. }, Some(p)) if p.state != ProfileState::Enabled => {
            Some(format!("it {}", p.state))
        }
        (Action::Disable { .. }, Some(p)) if p.state != ProfileState::Disabled => {
            Some(format!("it {}", p.state))
        }
        (Action::Nickname { nickname, .. }, Some(p))
            if p.nickname.as_deref().unwrap_or("") != nickname =>
        {
            Some(format!(
                "the nickname \"{}\"",
                p.nickname.as_deref().unwrap_or("")
            ))
        }
        _ => None,
    };
    if let Some(detail) = problem {
        return Err(EsimError::NotVerified {
            function: op.function(),
            detail,
        });
    }
    let notifications = i.notifications()?;
    let enabled_after = enabled(&after);
    let enabled_before = match (action, before) {
        (_, Some(b)) => enabled(&b),
        (Action::Disable { .. }, None) => Some(iccid.clone()),
        (_, None) => enabled_after.clone(),
    };
    Ok(Outcome {
        profiles: after,
        notifications,
        enabled_before,
        enabled_after,
        apdus: i.apdus(),
    })
}

/// `esim notifications`: the pending list.
pub fn notifications<T: CardTransport>(
    isdr: Isdr<T>,
) -> Result<(Vec<NotificationMeta>, T), EsimError> {
    let (list, t, _) = with_isdr(isdr, |i| i.notifications())?;
    Ok((list, t))
}

// Over the virtual eUICC, which a gateway build (no `emulators`) leaves out.
#[cfg(all(test, feature = "emulators"))]
mod tests {
    use super::*;
    use crate::emu::vcard::{CardImage, VirtualCard};

    fn card(name: &str) -> VirtualCard {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("devices/cards")
            .join(name);
        VirtualCard::new(CardImage::load(&path).unwrap())
    }

    fn iccid(s: &str) -> Iccid {
        Iccid::from_digits(s).unwrap()
    }

    fn isdr(c: &mut VirtualCard) -> Isdr<&mut VirtualCard> {
        Isdr::select_basic(c, euicc::shipped_aids()).unwrap()
    }

    #[test]
    fn list_enable_and_back_leave_the_basic_channel_on_the_mf() {
        let mut c = card("euicc.toml");
        let (l, _) = list(isdr(&mut c)).unwrap();
        assert_eq!(l.eid.as_deref(), Some("89049032123451234512345678901235"));
        assert_eq!(l.profiles.len(), 2);
        assert_eq!(l.info.sgp22_version.as_deref(), Some("2.2.2"));
        // SELECT, GetEUICCData + GET RESPONSE, GetEUICCInfo2 + GR, GetProfilesInfo + GR,
        // SELECT MF.
        assert_eq!(l.apdus, 8);
        let action = Action::Enable {
            iccid: iccid("8949440000000000024"),
            refresh: false,
        };
        let (o, _) = apply(isdr(&mut c), &action).unwrap();
        assert_eq!(o.enabled_after.as_deref(), Some("8949440000000000024"));
        // Regression (issue 24): an enable reported `enabled_before: null`.
        assert_eq!(o.enabled_before.as_deref(), Some("8949440000000000016"));
        assert_eq!(o.notifications.len(), 2, "a disable and an enable");
        // SELECT, GetProfilesInfo + GR, EnableProfile + GR, GetProfilesInfo + GR,
        // ListNotification + GR, MF.
        assert_eq!(o.apdus, 10);
        // The basic channel is on the MF: EF.ICCID by SFI is the new profile's.
        let r = c.process(&hex::decode("00B082000A").unwrap());
        assert_eq!(
            Iccid::from_ef(&r[..10]).unwrap().as_str(),
            "8949440000000000024"
        );
    }

    #[test]
    fn deleting_the_enabled_profile_is_refused_before_anything_is_sent() {
        let mut c = card("euicc.toml");
        let action = Action::Delete {
            iccid: iccid("8949440000000000016"),
        };
        let err = apply(isdr(&mut c), &action).unwrap_err();
        assert!(matches!(err, EsimError::DeleteEnabled(_)), "{err}");
        assert!(err.to_string().contains("disable it"), "{err}");
        let (l, _) = list(isdr(&mut c)).unwrap();
        assert_eq!(l.profiles.len(), 2);
    }

    #[test]
    fn result_codes_are_reasons_and_unknown_iccids_are_named() {
        let mut c = card("euicc.toml");
        let err = apply(
            isdr(&mut c),
            &Action::Enable {
                iccid: iccid("8949440000000000016"),
                refresh: false,
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "EnableProfile refused: the profile is already enabled (profileNotInDisabledState)"
        );
        let err = apply(
            isdr(&mut c),
            &Action::Disable {
                iccid: iccid("8949440000000000099"),
                refresh: false,
            },
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("no profile with this ICCID"),
            "{err}"
        );
        assert!(err.is_request_error());
    }

    #[test]
    fn a_plain_usim_has_no_isdr() {
        let mut c = card("usim.toml");
        let err = Isdr::select_basic(&mut c, euicc::shipped_aids())
            .err()
            .unwrap();
        assert!(err.to_string().starts_with("not an eUICC"), "{err}");
    }

    #[test]
    fn a_dropped_channel_is_an_error_and_the_card_is_put_back() {
        let mut c = card("euicc.toml");
        // The ISD-R deselected after 3 APDUs (the fault of euicc-drops-channel.toml).
        c.drop_isdr_after(3);
        let err = list(isdr(&mut c)).err().unwrap();
        assert!(err.to_string().contains("dropped the channel"), "{err}");
        let r = c.process(&hex::decode("00B082000A").unwrap());
        assert_eq!(&r[10..], [0x90, 0x00], "basic channel back on the MF");
    }
}
