//! An eUICC in a modem: card::esim over +CCHO / +CGLA / +CCHC (TS 27.007 §8.45, §8.43,
//! §8.46), the family's quirks from devices/modems (`[euicc]`: prefixed +CCHO, +CGLA's
//! length limit, the refresh after a switch).
//!
//! card::esim is synchronous over a `CardTransport`; here each APDU is one +CGLA line on
//! the async connection, run with `block_in_place` so the runtime's other tasks go on.

use super::identify::ISD_R_AID;
use super::profile::{EuiccAccess, EuiccTransport, Profile};
use super::reply;
use crate::at::conn::AtIo;
use crate::at::{AtCommand, AtConnection, AtError};
use crate::card::esim::{self, EsimError, Isdr};
use crate::card::{CardError, CardTransport};
use std::time::Duration;

/// +CGLA on one logical channel as a card transport.
struct Cgla<'a, T: AtIo> {
    conn: &'a mut AtConnection<T>,
    channel: u8,
    timeout: Duration,
    max_apdu: usize,
    rt: tokio::runtime::Handle,
}

impl<T: AtIo> CardTransport for Cgla<'_, T> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, CardError> {
        if command.len() > self.max_apdu {
            return Err(CardError::Transport(format!(
                "a {}-byte APDU exceeds this modem family's +CGLA limit of {} (devices/modems [euicc] cgla_max_apdu)",
                command.len(),
                self.max_apdu
            )));
        }
        let channel = format!("{},", self.channel);
        apdu_line(
            self.conn,
            &self.rt,
            self.timeout,
            ("+CGLA", &channel),
            command,
            // The modem refused the line: its channel is gone (the SIM was reset or
            // removed under us) or it does not take this APDU.
            ": its logical channel is gone or the APDU is not accepted (a firmware whose +CGLA \
             fails although its family has it may work over +CSIM: modems.euicc_transport)",
        )
    }
}

/// One command APDU as one AT line — `AT+CGLA=<channel>,<length>,"<hex>"` (TS 27.007
/// §8.43) or `AT+CSIM=<length>,"<hex>"` (§8.17), `<length>` counting hex characters —
/// and the response APDU of its answer, length checked. A refused line is the link
/// failing, said with `refused`.
fn apdu_line<T: AtIo>(
    conn: &mut AtConnection<T>,
    rt: &tokio::runtime::Handle,
    timeout: Duration,
    (command_name, lead): (&'static str, &str),
    apdu: &[u8],
    refused: &str,
) -> Result<Vec<u8>, CardError> {
    let hexed = hex::encode_upper(apdu);
    let cmd = AtCommand::new(&format!(
        "AT{command_name}={lead}{},{}",
        hexed.len(),
        crate::at::quote(&hexed)
    ))
    .map_err(|e| CardError::Transport(e.to_string()))?;
    let answer = rt
        .block_on(conn.command(&cmd, timeout))
        .map_err(|e| CardError::Transport(format!("modem: {e}")))?;
    match answer {
        Ok(r) => {
            reply::apdu_checked(&r.lines, command_name).map_err(|detail| CardError::Malformed {
                command: command_name,
                detail,
            })
        }
        Err(refusal) => Err(CardError::Transport(format!(
            "the modem refused {command_name} ({refusal}){refused}"
        ))),
    }
}

/// +CSIM (TS 27.007 §8.17) as a card transport: each command APDU whole, the logical
/// channel in its CLA (opened with MANAGE CHANNEL through it), the response APDU back
/// with its status word.
struct Csim<'a, T: AtIo> {
    conn: &'a mut AtConnection<T>,
    timeout: Duration,
    rt: tokio::runtime::Handle,
}

impl<T: AtIo> CardTransport for Csim<'_, T> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, CardError> {
        apdu_line(
            self.conn,
            &self.rt,
            self.timeout,
            ("+CSIM", ""),
            command,
            "",
        )
    }
}

/// Why an eSIM operation through a modem did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ModemEsimError {
    #[error("this modem family cannot reach an eUICC (devices/modems [euicc] access = \"none\")")]
    NoAccess,
    #[error("the SIM is not an eUICC: the modem could not open a channel to the ISD-R ({0})")]
    NoIsdr(String),
    #[error(transparent)]
    Esim(#[from] EsimError),
    #[error(transparent)]
    At(#[from] AtError),
    #[error("{0}")]
    Command(String),
}

/// APDUs and AT lines an operation cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Cost {
    pub apdus: u32,
    pub at_lines: u64,
}

/// Run `f` on the ISD-R through a logical channel the modem opens, and close it again
/// whatever happened (a modem keeps a forgotten channel until reset: some families have
/// only a few).
pub async fn with_isdr<T: AtIo, R>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
    f: impl for<'c> FnOnce(Isdr<&'c mut dyn CardTransport>) -> Result<R, EsimError>,
) -> Result<(R, Cost), ModemEsimError> {
    if profile.euicc.access == EuiccAccess::None {
        return Err(ModemEsimError::NoAccess);
    }
    if profile.euicc.transport == EuiccTransport::Csim {
        return with_isdr_csim(conn, profile, f).await;
    }
    let before = conn.stats().commands;
    let t = profile.timeouts.sim();
    let open = AtCommand::new(&format!("AT+CCHO={}", crate::at::quote(ISD_R_AID)))
        .map_err(|e| ModemEsimError::Command(e.to_string()))?;
    let channel = match conn.command(&open, t).await? {
        Ok(r) => reply::channel(&r.lines)
            .filter(|c| (1..=3).contains(c))
            .ok_or_else(|| ModemEsimError::NoIsdr(format!("+CCHO answered {:?}", r.lines)))?,
        Err(refusal) => return Err(ModemEsimError::NoIsdr(refusal.to_string())),
    };
    let rt = tokio::runtime::Handle::current();
    let max_apdu = profile.euicc.cgla_max_apdu;
    let result = tokio::task::block_in_place(|| {
        let mut t = Cgla {
            conn: &mut *conn,
            channel,
            timeout: t,
            max_apdu,
            rt,
        };
        let isdr = Isdr::on_channel(&mut t as &mut dyn CardTransport, channel, ISD_R_AID);
        f(isdr)
    });
    // TS 27.007 §8.46: close the channel, also after a failure.
    if let Ok(close) = AtCommand::new(&format!("AT+CCHC={channel}")) {
        if let Ok(Err(r)) = conn.command(&close, t).await {
            tracing::debug!(%r, channel, "+CCHC refused");
        }
    }
    let value = result?;
    Ok((
        value,
        Cost {
            apdus: 0,
            at_lines: conn.stats().commands - before,
        },
    ))
}

/// The ISD-R through +CSIM (devices/modems `[euicc] transport = "csim"`): a logical
/// channel opened with MANAGE CHANNEL (TS 102 221 §11.1.17), the ISD-R selected on it —
/// never the basic channel, which the modem's own stack uses for the USIM — and the
/// channel closed again whatever happened.
async fn with_isdr_csim<T: AtIo, R>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
    f: impl for<'c> FnOnce(Isdr<&'c mut dyn CardTransport>) -> Result<R, EsimError>,
) -> Result<(R, Cost), ModemEsimError> {
    let before = conn.stats().commands;
    let rt = tokio::runtime::Handle::current();
    let timeout = profile.timeouts.sim();
    let result = tokio::task::block_in_place(|| {
        let mut t = Csim {
            conn: &mut *conn,
            timeout,
            rt,
        };
        let ch = open_channel(&mut t)?;
        let r = (|| {
            let aid = hex::decode(ISD_R_AID).unwrap_or_default();
            let select = [&[ch, 0xA4, 0x04, 0x00, aid.len() as u8][..], &aid[..]].concat();
            let sw = t.transmit(&select).map_err(EsimError::from)?;
            if !(sw.ends_with(&[0x90, 0x00]) || sw.len() >= 2 && sw[sw.len() - 2] == 0x61) {
                return Err(ModemEsimError::NoIsdr(format!(
                    "SELECT of the ISD-R answered {}",
                    hex::encode_upper(&sw[sw.len().saturating_sub(2)..])
                )));
            }
            let isdr = Isdr::on_channel(&mut t as &mut dyn CardTransport, ch, ISD_R_AID);
            f(isdr).map_err(ModemEsimError::from)
        })();
        // MANAGE CHANNEL close (P1 80, P2 the channel).
        if let Err(e) = t.transmit(&[0x00, 0x70, 0x80, ch, 0x00]) {
            tracing::debug!(error = %e, channel = ch, "MANAGE CHANNEL close through +CSIM");
        }
        r
    });
    let value = result?;
    Ok((
        value,
        Cost {
            apdus: 0,
            at_lines: conn.stats().commands - before,
        },
    ))
}

/// MANAGE CHANNEL open (TS 102 221 §11.1.17: P1 00, P2 00, the card picks the channel,
/// answered in one byte); channels 1-3 only, whose number fits the CLA's b2-b1.
fn open_channel(t: &mut dyn CardTransport) -> Result<u8, ModemEsimError> {
    let r = t
        .transmit(&[0x00, 0x70, 0x00, 0x00, 0x01])
        .map_err(EsimError::from)?;
    match r[..] {
        [ch @ 1..=3, 0x90, 0x00] => Ok(ch),
        _ => Err(ModemEsimError::NoIsdr(format!(
            "MANAGE CHANNEL through +CSIM answered {}",
            hex::encode_upper(&r)
        ))),
    }
}

/// After a verified switch: the family's refresh (devices/modems `[euicc] refresh`),
/// each line checked.
pub async fn refresh<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
) -> Result<(), ModemEsimError> {
    for line in &profile.euicc.refresh {
        let cmd = AtCommand::new(line).map_err(|e| ModemEsimError::Command(e.to_string()))?;
        if let Err(r) = conn.command(&cmd, profile.timeouts.radio()).await? {
            return Err(ModemEsimError::Command(format!(
                "{line} (the family's refresh after a profile switch) refused: {r}"
            )));
        }
    }
    Ok(())
}

/// `esim list` through a modem.
pub async fn list<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
) -> Result<(esim::Listing, Cost), ModemEsimError> {
    let (l, mut cost) = with_isdr(conn, profile, |i| {
        let (l, _) = esim::list(i)?;
        Ok(l)
    })
    .await?;
    cost.apdus = l.apdus;
    Ok((l, cost))
}

/// An operation through a modem, verified by listing again; after a switch the
/// family's refresh.
pub async fn apply<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
    action: &esim::Action,
) -> Result<(esim::Outcome, Cost), ModemEsimError> {
    let a = action.clone();
    let (o, mut cost) =
        with_isdr(conn, profile, move |i| esim::apply(i, &a).map(|(o, _)| o)).await?;
    cost.apdus = o.apdus;
    if matches!(
        action,
        esim::Action::Enable { .. } | esim::Action::Disable { .. }
    ) {
        let before = conn.stats().commands;
        refresh(conn, profile).await?;
        cost.at_lines += conn.stats().commands - before;
    }
    Ok((o, cost))
}

/// The daemon's [`esim::Work`] through a modem; after a switch, the family's refresh.
pub async fn work<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
    work: &esim::Work,
) -> Result<esim::WorkDone, ModemEsimError> {
    let w = work.clone();
    let (done, _) = with_isdr(conn, profile, move |mut i| esim::work_on(&mut i, &w)).await?;
    if let esim::Work::Apply(esim::Action::Enable { .. } | esim::Action::Disable { .. }) = work {
        refresh(conn, profile).await?;
    }
    Ok(done)
}

/// The pending notifications through a modem.
pub async fn notifications<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
) -> Result<(Vec<crate::card::es10::NotificationMeta>, Cost), ModemEsimError> {
    with_isdr(conn, profile, |i| esim::notifications(i).map(|(l, _)| l)).await
}
