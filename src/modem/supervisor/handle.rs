//! What a caller may ask of a running supervisor ([`ModemHandle`]), each request with
//! its own answer channel; a request the supervisor cannot serve now (not attached) is
//! answered at once, never queued behind a dead port.

use crate::at::AtError;
use crate::modem::actions::{self, Action, ActionResult, ModemRefusal};
use crate::modem::identify::ModemInfo;
use tokio::sync::{mpsc, oneshot};

/// What a [`ModemHandle`] can ask of its supervisor.
#[derive(Debug)]
pub(super) enum Request {
    /// A hardware action, answered once verified.
    Act(Action, oneshot::Sender<ActionResult>),
    /// Read the SIM again now (instead of at the next poll or URC).
    Refresh(oneshot::Sender<Result<Box<ModemInfo>, AtError>>),
    /// Run the status line now (registration, session, slot) and answer the picture.
    Status(oneshot::Sender<Result<Box<ModemInfo>, AtError>>),
    /// An eSIM operation on the modem's eUICC, then (after a profile operation) the
    /// SIM read again: a switch is followed as the SIM change it is (removed, inserted
    /// with `previous`).
    Esim(
        crate::card::esim::Work,
        oneshot::Sender<Result<EsimResult, AtError>>,
    ),
    /// A job of the caller's on the eUICC's ISD-R (a profile download: src/rsp), run
    /// through the same channel as `Esim`; it answers through its own channel.
    OnIsdr(
        IsdrJob,
        oneshot::Sender<Result<Result<(), String>, AtError>>,
    ),
    /// A PIN operation on the SIM whose ICCID is given (src/modem/pin.rs `on_modem`).
    Pin(
        String,
        crate::sim::PinRequest,
        oneshot::Sender<Result<PinResult, AtError>>,
    ),
    /// A USSD exchange (src/modem/ussd.rs) on the SIM whose ICCID is given.
    Ussd(
        String,
        String,
        Vec<String>,
        oneshot::Sender<Result<UssdResult, AtError>>,
    ),
    /// An SMS sent (src/modem/sms.rs) from the SIM whose ICCID is given.
    Sms(
        String,
        String,
        String,
        oneshot::Sender<Result<SmsResult, AtError>>,
    ),
}

/// What a USSD exchange answered (`NotHosted`-like refusals as a failure's words).
pub type UssdResult = Result<crate::modem::ussd::Exchange, crate::modem::ussd::UssdFailure>;

/// What an SMS send answered.
pub type SmsResult = Result<crate::modem::sms::Sent, crate::modem::sms::SendFailure>;

/// A job on the ISD-R of the modem's eUICC, run on a blocking section of the
/// supervisor's task (each APDU one +CGLA or +CSIM line, within the family's APDU limit).
pub struct IsdrJob(pub Box<dyn for<'c> FnOnce(&mut ModemIsdr<'c>) + Send>);

/// The ISD-R of a modem's eUICC, as an [`IsdrJob`] gets it.
pub type ModemIsdr<'c> = crate::card::esim::Isdr<&'c mut dyn crate::card::CardTransport>;

impl std::fmt::Debug for IsdrJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IsdrJob")
    }
}

/// What a PIN operation through a modem answered.
pub type PinResult = Result<(), crate::card::pin::PinFailure>;

/// What an eSIM operation through a modem answered: the profiles and pending
/// notifications after it, or why not.
pub type EsimResult = Result<crate::card::esim::WorkDone, String>;

impl Request {
    /// Answer without doing anything: the modem is not attached.
    pub(super) fn not_attached(self) {
        match self {
            Request::Act(_, reply) => {
                let _ = reply.send(Err(AtError::NotAttached));
            }
            Request::Refresh(reply) | Request::Status(reply) => {
                let _ = reply.send(Err(AtError::NotAttached));
            }
            Request::Esim(_, reply) => {
                let _ = reply.send(Err(AtError::NotAttached));
            }
            Request::OnIsdr(_, reply) => {
                let _ = reply.send(Err(AtError::NotAttached));
            }
            Request::Pin(_, _, reply) => {
                let _ = reply.send(Err(AtError::NotAttached));
            }
            Request::Ussd(_, _, _, reply) => {
                let _ = reply.send(Err(AtError::NotAttached));
            }
            Request::Sms(_, _, _, reply) => {
                let _ = reply.send(Err(AtError::NotAttached));
            }
        }
    }
}

/// Ask a running supervisor to act; the answer comes back once verified.
#[derive(Debug, Clone)]
pub struct ModemHandle {
    pub(super) tx: mpsc::Sender<Request>,
}

/// Why an action could not even be tried.
#[derive(Debug, thiserror::Error)]
pub enum ModemError {
    #[error("the modem supervisor is not running")]
    Gone,
    #[error(transparent)]
    At(#[from] AtError),
}

impl ModemHandle {
    pub async fn act(
        &self,
        action: Action,
    ) -> Result<Result<actions::Outcome, ModemRefusal>, ModemError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Act(action, tx))
            .await
            .map_err(|_| ModemError::Gone)?;
        Ok(rx.await.map_err(|_| ModemError::Gone)??)
    }

    /// Read the modem's SIM again now; the fresh picture comes back (and the usual
    /// events follow if the SIM changed).
    pub async fn refresh(&self) -> Result<Box<ModemInfo>, ModemError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Refresh(tx))
            .await
            .map_err(|_| ModemError::Gone)?;
        Ok(rx.await.map_err(|_| ModemError::Gone)??)
    }
}

impl ModemHandle {
    /// A PIN operation on the SIM `iccid` (refused untouched if another SIM sits
    /// there); the SIM's row is reported again after.
    pub async fn pin(
        &self,
        iccid: &str,
        req: crate::sim::PinRequest,
    ) -> Result<PinResult, ModemError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Pin(iccid.to_string(), req, tx))
            .await
            .map_err(|_| ModemError::Gone)?;
        Ok(rx.await.map_err(|_| ModemError::Gone)??)
    }

    /// An eSIM operation on the modem's eUICC, verified by listing again, the family's
    /// refresh after a switch and the SIM read again; the profiles after it.
    pub async fn esim(&self, action: crate::card::esim::Work) -> Result<EsimResult, ModemError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Esim(action, tx))
            .await
            .map_err(|_| ModemError::Gone)?;
        Ok(rx.await.map_err(|_| ModemError::Gone)??)
    }

    /// A USSD exchange on the SIM `iccid` (refused if another SIM sits there).
    pub async fn ussd(
        &self,
        iccid: &str,
        code: String,
        answers: Vec<String>,
    ) -> Result<UssdResult, ModemError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Ussd(iccid.to_string(), code, answers, tx))
            .await
            .map_err(|_| ModemError::Gone)?;
        Ok(rx.await.map_err(|_| ModemError::Gone)??)
    }

    /// Send an SMS from the SIM `iccid` (refused if another SIM sits there).
    pub async fn sms_send(
        &self,
        iccid: &str,
        to: String,
        text: String,
    ) -> Result<SmsResult, ModemError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Sms(iccid.to_string(), to, text, tx))
            .await
            .map_err(|_| ModemError::Gone)?;
        Ok(rx.await.map_err(|_| ModemError::Gone)??)
    }

    /// Run `job` on the modem's eUICC (its ISD-R on a logical channel, closed after);
    /// `Ok(Err(why))` when the ISD-R could not be reached.
    pub async fn on_isdr(&self, job: IsdrJob) -> Result<Result<(), String>, ModemError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::OnIsdr(job, tx))
            .await
            .map_err(|_| ModemError::Gone)?;
        Ok(rx.await.map_err(|_| ModemError::Gone)??)
    }

    /// Run the status line now (one compound line: registration, data context, counter,
    /// slot) and answer the fresh picture; used to wait for a SIM to register.
    pub async fn status(&self) -> Result<Box<ModemInfo>, ModemError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Status(tx))
            .await
            .map_err(|_| ModemError::Gone)?;
        Ok(rx.await.map_err(|_| ModemError::Gone)??)
    }
}

/// Answer a handle's request with its result; a link error is both answered and
/// returned, since it also drives recovery.
pub(super) fn answer<T>(
    reply: oneshot::Sender<Result<T, AtError>>,
    r: Result<T, AtError>,
) -> Result<(), AtError> {
    match r {
        Ok(v) => {
            let _ = reply.send(Ok(v));
            Ok(())
        }
        Err(e) => {
            let _ = reply.send(Err(duplicate(&e)));
            Err(e)
        }
    }
}

/// A copy of a link error for the action's caller; the original drives recovery.
fn duplicate(e: &AtError) -> AtError {
    match e {
        AtError::Timeout { command, after } => AtError::Timeout {
            command: command.clone(),
            after: *after,
        },
        AtError::Unclear { command, answer } => AtError::Unclear {
            command: command.clone(),
            answer: answer.clone(),
        },
        AtError::Closed => AtError::Closed,
        AtError::NotAttached => AtError::NotAttached,
        AtError::Command(c) => AtError::Command(c.clone()),
        AtError::Open { port, source } => AtError::Open {
            port: port.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        AtError::Held { port, holder } => AtError::Held {
            port: port.clone(),
            holder: holder.clone(),
        },
        AtError::Link(source) => {
            AtError::Link(std::io::Error::new(source.kind(), source.to_string()))
        }
    }
}
