//! A profile download (GSMA SGP.22 §3.1.3), the LPA relaying between the SM-DP+ (ES9+,
//! [`Es9`]) and the eUICC (ES10b, an [`Isdr`] over any card transport): authenticate
//! both sides, show the profile, bind it, load it segment by segment, deliver the
//! installation result. Synchronous: it runs beside blocking card I/O (a PC/SC
//! transaction, a modem's +CGLA under `block_in_place`).
//!
//! A download is stateful on both sides and can fail anywhere, so a failure is "state
//! unknown" until reconciled: the session is cancelled on the card and on the server, the
//! profiles are listed again, and a profile that did land (the ICCID the SM-DP+ offered)
//! is reported as installed — never a half-done download reported as success, never a
//! landed profile left unsaid.
//!
//! The core is "execute a request, report a result" over two seams (the card transport
//! and [`Es9`]), so an SGP.32 IoT Profile Assistant can reuse it with an eIM's transport.

use super::activation::Secret;
use super::es9::{self, body, Es9, Es9Error, Function};
use crate::card::es10::{DecodeError, ProfileInfo};
use crate::card::es10b::{self, CancelReason, CardRefusal, DeviceInfo, Installed, Preview};
use crate::card::esim::{EsimError, Isdr};
use crate::card::CardTransport;
use serde::Serialize;

/// What to download, and from where.
#[derive(Debug, Clone)]
pub struct Order {
    /// The SM-DP+ address (host or host:port).
    pub smdp: String,
    /// The activation code's matching ID (may be empty: the SM-DP+ looks up the EID).
    pub matching_id: Secret,
    pub confirmation_code: Option<Secret>,
    pub device: DeviceInfo,
    /// Hand the installation result to the SM-DP+ now (ES9+ HandleNotification) and
    /// remove it from the card once delivered; else leave it pending on the card for the
    /// platform's path (MQTT.md `esim_notification`).
    pub deliver_notification: bool,
}

/// One step of a download, as it happens (the CLI prints them; `--json` one line each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// The eUICC's challenge and facts read; the SM-DP+ is asked to authenticate.
    Challenge {
        smdp: String,
    },
    /// The eUICC verified the SM-DP+'s certificate and signature, and signed its answer.
    ServerAuthenticated {
        transaction_id: String,
    },
    /// The profile the SM-DP+ offers, for confirmation.
    Preview {
        profile: Preview,
        confirmation_code_required: bool,
    },
    /// The download goes ahead (confirmed by the user or `--yes`).
    Confirmed,
    /// The bound package arrived: `segments` STORE DATA sequences to load.
    Package {
        segments: usize,
        bytes: usize,
    },
    /// Segment `done` of `of` loaded.
    Installing {
        done: usize,
        of: usize,
    },
    Installed {
        iccid: String,
        aid: String,
    },
    /// The installation result reached the SM-DP+ and left the card.
    NotificationSent {
        seq: u64,
    },
    /// The installation result stays on the card (not delivered: why).
    NotificationPending {
        seq: u64,
        why: String,
    },
}

/// Who follows the download: told each step, asked to confirm the preview.
pub trait Observer {
    fn step(&mut self, step: &Step);
    /// `false` declines: the session is cancelled (endUserRejection).
    fn confirm(&mut self, preview: &Preview) -> bool;
}

/// Why a download did not complete.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(transparent)]
    Card(#[from] EsimError),
    #[error(transparent)]
    CardRefused(#[from] CardRefusal),
    #[error(transparent)]
    Server(#[from] Es9Error),
    #[error("the eUICC answered {function} with something SGP.22 does not define: {detail}")]
    Malformed {
        function: &'static str,
        detail: DecodeError,
    },
    #[error("the SM-DP+ sent an unusable answer: {0}")]
    ServerMalformed(DecodeError),
    #[error("{0}")]
    Install(String),
    #[error("the download was declined at the profile's preview")]
    Declined,
    #[error(
        "this profile needs a confirmation code (--confirmation-code): the SM-DP+ asks for one"
    )]
    ConfirmationCodeMissing,
}

impl DownloadError {
    /// The user's to fix (a wrong code, a refused matching ID, a declined preview): exit
    /// 2 in the CLI.
    pub fn is_request_error(&self) -> bool {
        match self {
            DownloadError::Declined | DownloadError::ConfirmationCodeMissing => true,
            DownloadError::Server(Es9Error::Refused { status, .. }) => {
                matches!(status.subject_code.as_str(), "8.2.6" | "8.2.7" | "8.8.1")
            }
            DownloadError::Install(_) => false,
            _ => false,
        }
    }
}

impl DownloadError {
    /// An SM-DP+'s free text may quote what it was sent (a refused matching ID, echoed):
    /// the order's secrets (SGP.22 §4.1) are masked in it before anything shows, logs or
    /// stores the error.
    fn mask(&mut self, order: &Order) {
        let DownloadError::Server(Es9Error::Refused { status, .. }) = self else {
            return;
        };
        let Some(text) = status.message.as_mut() else {
            return;
        };
        let secrets = [Some(&order.matching_id), order.confirmation_code.as_ref()];
        for s in secrets.into_iter().flatten().filter(|s| !s.is_empty()) {
            *text = text.replace(s.expose(), "…");
        }
    }
}

/// What became of the session after a failure (SGP.22 §3.1.3: CancelSession on both
/// sides), and what the card holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reconciled {
    /// The eUICC's CancelSession: `None` not needed (no session open), else its outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card_cancel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cancel: Option<String>,
    /// The profiles listed after the failure; `None`: the card could not be listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profiles: Option<Vec<ProfileInfo>>,
}

/// A download that did not complete, reconciled.
#[derive(Debug)]
pub struct Failure {
    pub error: DownloadError,
    /// The function it stopped in (SGP.22's name).
    pub at: &'static str,
    pub transaction_id: Option<String>,
    pub preview: Option<Preview>,
    pub reconciled: Reconciled,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "download failed at {}: {}", self.at, self.error)
    }
}

/// A download that completed: the profile is on the card (verified by listing).
#[derive(Debug, Clone, Serialize)]
pub struct Downloaded {
    pub iccid: String,
    pub profile: Preview,
    pub transaction_id: String,
    /// The ISD-P's AID, when the eUICC's result was received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aid: Option<String>,
    /// Set when the profile was found by listing after the exchange failed at the end
    /// (the result was lost, the profile landed): what went wrong, for the record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconciled_after: Option<String>,
    pub notification_sent: bool,
    /// The profiles after the download.
    pub profiles: Vec<ProfileInfo>,
    /// Segments loaded, bytes of the bound package.
    pub segments: usize,
    pub bpp_bytes: usize,
}

/// Where a download stands: what a failure must undo.
#[derive(Default)]
struct Session {
    tid: Option<Vec<u8>>,
    /// The eUICC holds a session (AuthenticateServer ok, no result yet).
    card_open: bool,
    preview: Option<Preview>,
    /// The eUICC's installation result, when received.
    result: Option<es10b::InstallationResult>,
    /// Segments of the bound package sent so far, of how many, and its size: a profile
    /// can land only once loading started.
    sent: usize,
    segments: usize,
    bpp_bytes: usize,
}

fn card<T>(r: Result<T, EsimError>) -> Result<T, DownloadError> {
    r.map_err(DownloadError::Card)
}

fn decoded<T>(function: &'static str, r: Result<T, DecodeError>) -> Result<T, DownloadError> {
    r.map_err(|detail| DownloadError::Malformed { function, detail })
}

/// Download the profile of `order` onto the eUICC behind `isdr`, through `server`.
pub fn download<T: CardTransport>(
    isdr: &mut Isdr<T>,
    server: &mut dyn Es9,
    order: &Order,
    obs: &mut dyn Observer,
) -> Result<Downloaded, Box<Failure>> {
    let mut s = Session::default();
    let mut at = "GetEUICCChallenge";
    match run(isdr, server, order, obs, &mut s, &mut at) {
        Ok(d) => Ok(d),
        Err(mut error) => {
            error.mask(order);
            let (sent, segments, bpp_bytes, no_result) =
                (s.sent, s.segments, s.bpp_bytes, s.result.is_none());
            let failure = fail(isdr, server, order, obs, s, at, error);
            // Loading had started and the eUICC's result never came, yet the offered
            // profile is listed: it landed (the result was lost on the way). A profile
            // listed after an error *result* was there before (e.g. its ICCID exists).
            match failure.landed().cloned() {
                Some(p) if sent > 0 && no_result => Ok(Downloaded {
                    iccid: p.iccid.clone(),
                    profile: failure.preview.clone().expect("landed implies a preview"),
                    transaction_id: failure.transaction_id.clone().unwrap_or_default(),
                    aid: None,
                    reconciled_after: Some(failure.to_string()),
                    notification_sent: false,
                    profiles: failure.reconciled.profiles.clone().unwrap_or_default(),
                    segments,
                    bpp_bytes,
                }),
                _ => Err(Box::new(failure)),
            }
        }
    }
}

/// The exchange, function by function; `s` and `at` say where it stands for `fail`.
fn run<T: CardTransport>(
    isdr: &mut Isdr<T>,
    server: &mut dyn Es9,
    order: &Order,
    obs: &mut dyn Observer,
    s: &mut Session,
    at: &mut &'static str,
) -> Result<Downloaded, DownloadError> {
    let auth = authenticate(isdr, server, order, obs, s, at)?;
    let hash = confirm(order, obs, &auth)?;
    let bpp = bound_package(isdr, server, at, &auth, hash)?;
    let segments = es10b::bpp_segments(&bpp).map_err(DownloadError::ServerMalformed)?;
    obs.step(&Step::Package {
        segments: segments.len(),
        bytes: bpp.len(),
    });
    s.segments = segments.len();
    s.bpp_bytes = bpp.len();
    let oversize = es10b::oversize_86(&segments);
    if !oversize.is_empty() {
        tracing::warn!(
            segments = oversize.len(),
            largest = oversize.iter().max().copied().unwrap_or_default(),
            "the SM-DP+'s package has 86 segments over SGP.22 §2.5.5's 1020 bytes: relayed, the eUICC decides"
        );
    }
    let pir = load(isdr, obs, s, at, &segments)?;
    let Installed::Success { aid } = pir.result.clone() else {
        unreachable_result()?
    };
    let iccid = pir
        .iccid
        .clone()
        .unwrap_or_else(|| auth.preview.iccid.clone());
    obs.step(&Step::Installed {
        iccid: iccid.clone(),
        aid: aid.clone(),
    });

    let sent = notify(isdr, server, order, obs, &pir);
    *at = "GetProfilesInfo";
    let profiles = card(isdr.profiles())?;
    if es10b::find_profile(&profiles, &iccid).is_none() {
        return Err(DownloadError::Install(format!(
            "the eUICC reported profile {iccid} installed, but listing again does not show it"
        )));
    }
    Ok(Downloaded {
        iccid,
        profile: auth.preview,
        transaction_id: hex::encode_upper(&auth.tid),
        aid: Some(aid),
        reconciled_after: None,
        notification_sent: sent,
        profiles,
        segments: segments.len(),
        bpp_bytes: bpp.len(),
    })
}

/// What mutual authentication leaves: the transaction, and the SM-DP+'s offer.
struct Authenticated {
    tid: Vec<u8>,
    client: es10b::AuthenticateClient,
    cc_required: bool,
    preview: Preview,
}

/// SGP.22 §3.1.3.1, common mutual authentication: the eUICC's challenge and facts to the
/// SM-DP+, its signed answer checked by the eUICC, the eUICC's by the SM-DP+, which
/// answers with the profile's metadata.
fn authenticate<T: CardTransport>(
    isdr: &mut Isdr<T>,
    server: &mut dyn Es9,
    order: &Order,
    obs: &mut dyn Observer,
    s: &mut Session,
    at: &mut &'static str,
) -> Result<Authenticated, DownloadError> {
    *at = "GetEUICCChallenge";
    let challenge = card(isdr.es10(&es10b::get_euicc_challenge(), "GetEUICCChallenge"))?;
    let challenge = decoded("GetEUICCChallenge", es10b::parse_challenge(&challenge))?;
    *at = "GetEUICCInfo1";
    let info1 = card(isdr.es10(&es10b::get_euicc_info1(), "GetEUICCInfo1"))?;
    decoded("GetEUICCInfo1", es10b::check_euicc_info1(&info1))?;
    obs.step(&Step::Challenge {
        smdp: server.address().to_string(),
    });

    *at = "initiateAuthentication";
    let f = Function::InitiateAuthentication;
    let v = server
        .call(
            f,
            body::initiate_authentication(&challenge, &info1, server.address()),
        )?
        .ok_or_else(|| empty(f))?;
    let tid_text = es9::text(&v, f, "transactionId")?;
    let tid = hex::decode(tid_text).map_err(|_| Es9Error::Malformed {
        function: f.name(),
        detail: format!("transactionId \"{tid_text}\" is not hex"),
    })?;
    if tid.is_empty() || tid.len() > 16 {
        return Err(Es9Error::Malformed {
            function: f.name(),
            detail: format!("a transactionId of {} bytes (SGP.22: 1-16)", tid.len()),
        }
        .into());
    }
    s.tid = Some(tid.clone());
    let ia = es10b::InitiateAuthentication {
        transaction_id: tid.clone(),
        server_signed1: es9::field(&v, f, "serverSigned1")?,
        server_signature1: es9::field(&v, f, "serverSignature1")?,
        ci_pkid: es9::field(&v, f, "euiccCiPKIdToBeUsed")?,
        server_certificate: es9::field(&v, f, "serverCertificate")?,
    };
    ia.check(&challenge, server.address())
        .map_err(DownloadError::ServerMalformed)?;

    // SGP.22 §5.7.13: the eUICC checks the server's certificate chain and signature.
    *at = "AuthenticateServer";
    let req = es10b::authenticate_server(&ia, Some(order.matching_id.expose()), &order.device);
    s.card_open = true;
    let r = card(isdr.es10(&req, "AuthenticateServer"))?;
    let auth = decoded("AuthenticateServer", es10b::parse_authenticate_server(&r))??;
    obs.step(&Step::ServerAuthenticated {
        transaction_id: hex::encode_upper(&tid),
    });

    *at = "authenticateClient";
    let f = Function::AuthenticateClient;
    let v = server
        .call(
            f,
            body::with_transaction(&tid, "authenticateServerResponse", &auth),
        )?
        .ok_or_else(|| empty(f))?;
    let client = es10b::AuthenticateClient {
        transaction_id: tid.clone(),
        profile_metadata: es9::field(&v, f, "profileMetadata")?,
        smdp_signed2: es9::field(&v, f, "smdpSigned2")?,
        smdp_signature2: es9::field(&v, f, "smdpSignature2")?,
        smdp_certificate: es9::field(&v, f, "smdpCertificate")?,
    };
    let cc_required = client.check().map_err(DownloadError::ServerMalformed)?;
    let preview =
        es10b::parse_metadata(&client.profile_metadata).map_err(DownloadError::ServerMalformed)?;
    s.preview = Some(preview.clone());
    Ok(Authenticated {
        tid,
        client,
        cc_required,
        preview,
    })
}

/// The offer shown and confirmed (or declined); the confirmation code's hash when the
/// SM-DP+ asks for one. SGP.22 §3.1.3.3: the code is hashed with the transaction; it
/// never leaves here.
fn confirm(
    order: &Order,
    obs: &mut dyn Observer,
    auth: &Authenticated,
) -> Result<Option<[u8; 32]>, DownloadError> {
    obs.step(&Step::Preview {
        profile: auth.preview.clone(),
        confirmation_code_required: auth.cc_required,
    });
    if !obs.confirm(&auth.preview) {
        return Err(DownloadError::Declined);
    }
    obs.step(&Step::Confirmed);
    match (auth.cc_required, &order.confirmation_code) {
        (true, None) => Err(DownloadError::ConfirmationCodeMissing),
        (true, Some(cc)) => Ok(Some(es10b::hash_cc(cc.expose(), &auth.tid))),
        (false, _) => Ok(None),
    }
}

/// SGP.22 §3.1.3.2: the eUICC prepares (its one-time key, signed), and the SM-DP+ binds
/// the profile package to it.
fn bound_package<T: CardTransport>(
    isdr: &mut Isdr<T>,
    server: &mut dyn Es9,
    at: &mut &'static str,
    auth: &Authenticated,
    hash: Option<[u8; 32]>,
) -> Result<Vec<u8>, DownloadError> {
    *at = "PrepareDownload";
    let r = card(isdr.es10(
        &es10b::prepare_download(&auth.client, hash.as_ref()),
        "PrepareDownload",
    ))?;
    let prepared = decoded("PrepareDownload", es10b::parse_prepare_download(&r))??;

    *at = "getBoundProfilePackage";
    let f = Function::GetBoundProfilePackage;
    let v = server
        .call(
            f,
            body::with_transaction(&auth.tid, "prepareDownloadResponse", &prepared),
        )?
        .ok_or_else(|| empty(f))?;
    Ok(es9::field(&v, f, "boundProfilePackage")?)
}

/// SGP.22 §2.5.5 / §5.7.6: segment by segment; the eUICC answers the last one (or the
/// first that fails) with its ProfileInstallationResult, a success here.
fn load<T: CardTransport>(
    isdr: &mut Isdr<T>,
    obs: &mut dyn Observer,
    s: &mut Session,
    at: &mut &'static str,
    segments: &[es10b::Segment<'_>],
) -> Result<es10b::InstallationResult, DownloadError> {
    *at = "LoadBoundProfilePackage";
    let n = segments.len();
    for (k, seg) in segments.iter().enumerate() {
        s.sent = k + 1;
        let answer = card(isdr.es10(&seg.bytes, "LoadBoundProfilePackage"))?;
        obs.step(&Step::Installing { done: k + 1, of: n });
        if answer.is_empty() {
            continue;
        }
        let pir = decoded(
            "LoadBoundProfilePackage",
            es10b::parse_installation_result(&answer),
        )?;
        s.card_open = false;
        let failed = matches!(pir.result, Installed::Error { .. });
        let said = pir.describe();
        s.result = Some(pir);
        if failed || k + 1 < n {
            return Err(DownloadError::Install(if failed {
                said
            } else {
                format!(
                    "the eUICC ended the installation after segment {} of {n}",
                    k + 1
                )
            }));
        }
    }
    let Some(pir) = s.result.clone() else {
        s.card_open = false;
        return Err(DownloadError::Install(
            "the eUICC gave no installation result after the last segment".into(),
        ));
    };
    Ok(pir)
}

/// A result that is neither a success nor handled above cannot occur (the loop returns
/// on every error result); said as an error rather than a panic.
fn unreachable_result<T>() -> Result<T, DownloadError> {
    Err(DownloadError::Install(
        "the eUICC's installation result is not a success".into(),
    ))
}

fn empty(f: Function) -> DownloadError {
    Es9Error::Malformed {
        function: f.name(),
        detail: "an empty answer".into(),
    }
    .into()
}

/// Deliver an installation result to the SM-DP+ (ES9+ HandleNotification, SGP.22
/// §3.5) and, once delivered, remove it from the card (ES10b RemoveNotificationFromList):
/// the card keeps it until then. `true` when delivered and removed.
fn notify<T: CardTransport>(
    isdr: &mut Isdr<T>,
    server: &mut dyn Es9,
    order: &Order,
    obs: &mut dyn Observer,
    pir: &es10b::InstallationResult,
) -> bool {
    if !order.deliver_notification {
        obs.step(&Step::NotificationPending {
            seq: pir.seq,
            why: "left for the platform (MQTT esim_notification)".into(),
        });
        return false;
    }
    let why = match server.call(
        Function::HandleNotification,
        body::handle_notification(&pir.raw),
    ) {
        Ok(_) => match isdr.remove(pir.seq as u32) {
            Ok(_) => {
                obs.step(&Step::NotificationSent { seq: pir.seq });
                return true;
            }
            Err(e) => format!("delivered, but the card did not remove it: {e}"),
        },
        Err(e) => e.to_string(),
    };
    obs.step(&Step::NotificationPending { seq: pir.seq, why });
    false
}

/// After a failure: cancel on both sides, deliver a result the card gave, list again.
fn fail<T: CardTransport>(
    isdr: &mut Isdr<T>,
    server: &mut dyn Es9,
    order: &Order,
    obs: &mut dyn Observer,
    s: Session,
    at: &'static str,
    error: DownloadError,
) -> Failure {
    let mut rec = Reconciled::default();
    let reason = match &error {
        DownloadError::Declined => CancelReason::EndUserRejection,
        DownloadError::Card(_) | DownloadError::Server(Es9Error::Broken { .. }) => {
            CancelReason::Timeout
        }
        _ => CancelReason::Postponed,
    };
    if let Some(tid) = &s.tid {
        if s.card_open {
            cancel_both(isdr, Some(server), tid, reason, &mut rec);
        }
    }
    // A result the card gave (an error at some segment) is the SM-DP+'s to know: it is
    // the session's end on the server side too (SGP.22 §3.1.3.4).
    if let Some(pir) = &s.result {
        let _ = notify(isdr, server, order, obs, pir);
    }
    rec.profiles = isdr.profiles().ok();
    if rec.server_cancel.is_none() && s.tid.is_some() && s.result.is_none() && !s.card_open {
        rec.server_cancel = Some("not cancelled: the eUICC had no session to sign its end".into());
    }
    let landed = match (&s.preview, &rec.profiles) {
        (Some(p), Some(list)) => es10b::find_profile(list, &p.iccid).is_some(),
        _ => false,
    };
    if landed {
        tracing::warn!(at, error = %error, "download failed, but the profile is on the eUICC");
    }
    Failure {
        error,
        at,
        transaction_id: s.tid.map(hex::encode_upper),
        preview: s.preview,
        reconciled: rec,
    }
}

/// SGP.22 §5.7.14: the eUICC ends its session and signs the cancellation, which the
/// SM-DP+ needs to end its own (§6.5.2.10). Each side's outcome goes into `rec`.
fn cancel_both<T: CardTransport>(
    isdr: &mut Isdr<T>,
    server: Option<&mut dyn Es9>,
    tid: &[u8],
    reason: CancelReason,
    rec: &mut Reconciled,
) {
    match isdr.es10(&es10b::cancel_session(tid, reason), "CancelSession") {
        Ok(answer) => match es10b::parse_cancel_session(&answer) {
            Ok(Ok(signed)) => {
                rec.card_cancel = Some("cancelled".into());
                rec.server_cancel = Some(match server {
                    Some(server) => match server.call(
                        Function::CancelSession,
                        body::with_transaction(tid, "cancelSessionResponse", &signed),
                    ) {
                        Ok(_) => "cancelled".into(),
                        Err(e) => format!("not cancelled: {e}"),
                    },
                    None => "not cancelled: no SM-DP+ to reach".into(),
                });
            }
            Ok(Err(refusal)) => rec.card_cancel = Some(refusal.to_string()),
            Err(e) => rec.card_cancel = Some(format!("malformed answer: {e}")),
        },
        Err(e) => rec.card_cancel = Some(format!("not cancelled: {e}")),
    }
}

/// A download that was interrupted (the LPA killed mid-package, the power cut): its
/// session cancelled on the card and, when the eUICC signs that, on the SM-DP+; the
/// profiles listed; whether the offered profile landed.
#[derive(Debug, Clone, Serialize)]
pub struct Interrupted {
    pub transaction_id: String,
    pub iccid: String,
    pub landed: bool,
    #[serde(flatten)]
    pub reconciled: Reconciled,
}

/// Reconcile an interrupted download (transaction `tid`, offering `iccid`) before doing
/// anything else with the eUICC: nothing is decided from memory, only from the card.
pub fn reconcile_interrupted<T: CardTransport>(
    isdr: &mut Isdr<T>,
    server: Option<&mut dyn Es9>,
    tid: &[u8],
    iccid: &str,
) -> Interrupted {
    let mut rec = Reconciled::default();
    cancel_both(isdr, server, tid, CancelReason::Timeout, &mut rec);
    if rec.server_cancel.is_none() {
        rec.server_cancel = Some(
            "not cancelled: the eUICC no longer holds the session to sign its end; the SM-DP+'s expires".into(),
        );
    }
    rec.profiles = isdr.profiles().ok();
    let landed = rec
        .profiles
        .as_deref()
        .is_some_and(|l| es10b::find_profile(l, iccid).is_some());
    Interrupted {
        transaction_id: hex::encode_upper(tid),
        iccid: iccid.to_string(),
        landed,
        reconciled: rec,
    }
}

impl Failure {
    /// The profile the SM-DP+ offered, if it is on the card after all (it landed; the
    /// result was lost on the way).
    pub fn landed(&self) -> Option<&ProfileInfo> {
        let p = self.preview.as_ref()?;
        es10b::find_profile(self.reconciled.profiles.as_deref()?, &p.iccid)
    }
}

/// The default SM-DP+ of the eUICC (ES10a GetEuiccConfiguredAddresses), for a download
/// without an activation code.
pub fn default_smdp<T: CardTransport>(isdr: &mut Isdr<T>) -> Result<Option<String>, DownloadError> {
    let a = card(isdr.es10(
        &es10b::get_configured_addresses(),
        "GetEuiccConfiguredAddresses",
    ))?;
    decoded("GetEuiccConfiguredAddresses", es10b::parse_default_dp(&a))
}

/// An SM-DP+ reached for an address, or why not.
pub type Connected = Result<Box<dyn Es9>, String>;

/// What became of one pending notification handed to its SM-DP+.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub seq: u32,
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iccid: Option<String>,
    pub address: String,
    /// `delivered` (and removed from the card), or why not.
    pub outcome: String,
}

/// Hand every pending notification to the SM-DP+ it names (ES9+ HandleNotification,
/// SGP.22 §3.5, §6.5.2.9) and remove each delivered one from the card
/// (RemoveNotificationFromList): a notification leaves the card only once delivered.
/// `connect` gives a client for an address (`None`: it cannot be reached, said so).
pub fn deliver_pending<T: CardTransport>(
    isdr: &mut Isdr<T>,
    connect: &mut dyn FnMut(&str) -> Connected,
) -> Result<Vec<Delivery>, EsimError> {
    let mut out = Vec::new();
    let mut servers: std::collections::BTreeMap<String, Connected> = Default::default();
    for n in isdr.pending()? {
        let address = n.meta.address.clone();
        let server = servers
            .entry(address.clone())
            .or_insert_with(|| connect(&address));
        let outcome = match server {
            Err(e) => format!("not delivered: {e}"),
            Ok(s) => match s.call(
                Function::HandleNotification,
                body::handle_notification(&n.der),
            ) {
                Ok(_) => match isdr.remove(n.meta.seq) {
                    Ok(_) => "delivered".to_string(),
                    Err(e) => format!("delivered, but not removed from the card: {e}"),
                },
                Err(e) => format!("not delivered: {e}"),
            },
        };
        out.push(Delivery {
            seq: n.meta.seq,
            event: n.meta.event.word().to_string(),
            iccid: n.meta.iccid.clone(),
            address,
            outcome,
        });
    }
    Ok(out)
}
