//! One task per modem port: attach, identify, follow the SIM (URCs, or a cheap periodic
//! check where the family has none), sample usage, apply actions, and reattach when the
//! port vanishes (USB reset, reboot) or the modem falls silent.
//!
//! Steady state costs one compound status line per poll, plus an ICCID check when the
//! family has no hot-plug URC: ≤ 2 command lines a minute at the default poll.

use super::actions::{self, Action, ActionResult, ModemRefusal};
use super::identify::{self, ModemInfo};
use super::profile::{Profile, Profiles};
use crate::at::conn::AtIo;
use crate::at::parser::fields;
use crate::at::{AtConnection, AtError};
use crate::backoff::Backoff;
use crate::sim::InSession;
use crate::store::usage::Bytes;
use crate::store::Store;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Everything a supervisor reports. A closed set: the daemon handles them in one match.
#[derive(Debug, Clone)]
pub enum ModemEvent {
    /// The modem and its SIM (or its absence) after an attach.
    Identified(Box<ModemInfo>),
    /// A SIM appeared or replaced another; `previous` is the ICCID it replaced.
    SimInserted {
        info: Box<ModemInfo>,
        previous: Option<String>,
    },
    /// The same SIM with new facts: unlocked (its IMSI and operator now readable), or
    /// its lock state changed.
    SimUpdated(Box<ModemInfo>),
    /// The SIM left the modem.
    SimRemoved { port: String, iccid: String },
    /// A counter sample was accounted: the SIM's total this month.
    Usage {
        port: String,
        iccid: String,
        this_month: Bytes,
        in_session: InSession,
    },
    /// The SIM's data session went up or down (whether or not a counter exists).
    Session {
        port: String,
        iccid: String,
        in_session: InSession,
        reason: String,
    },
    /// The port is gone or the modem stopped answering; reattaching.
    Lost { port: String, error: String },
    /// The port was not there at the first attempt to open it (a modem not plugged in,
    /// or still booting); the supervisor waits for it. Told once.
    Absent { port: String, error: String },
    /// The operator answered a balance query: stored (`operator_estimate`), the row is
    /// due again.
    Balance { iccid: String },
}

/// Supervisor settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Steady-state poll (status line, and ICCID where the family has no hot-plug URC).
    pub poll: Duration,
    /// Linux network interface of the bearer (wwan0), for families without a vendor
    /// counter.
    pub netdev: Option<String>,
    /// How often to try reopening a vanished port.
    pub reopen_every: Duration,
    /// The PINs a locked SIM may be given, once per boot (`modems.pins_file`).
    pub pins: Option<Arc<crate::pins::Pins>>,
    /// Where received SMS go as `sms` events, once each (src/modem/channels.rs); none:
    /// messages stay on the modem.
    pub sms: Option<super::channels::EventSink>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            poll: Duration::from_secs(60),
            netdev: None,
            // A USB modem re-enumerates in 1-3 s; trying 4 times a second keeps the
            // reattach well within 5 s at negligible cost.
            reopen_every: Duration::from_millis(250),
            pins: None,
            sms: None,
        }
    }
}

/// What a [`ModemHandle`] can ask of its supervisor.
#[derive(Debug)]
enum Request {
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
pub type UssdResult = Result<super::ussd::Exchange, super::ussd::UssdFailure>;
/// What an SMS send answered.
pub type SmsResult = Result<super::sms::Sent, super::sms::SendFailure>;

/// How long a USSD reply is awaited from the network before the session is cancelled
/// (TS 24.090 leaves it to the network; operators answer within seconds).
const USSD_WAIT: Duration = Duration::from_secs(30);

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
    fn not_attached(self) {
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
    tx: mpsc::Sender<Request>,
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

/// Start supervising `port`.
pub fn spawn(
    port: String,
    profiles: Arc<Profiles>,
    store: Option<Store>,
    settings: Settings,
    cancel: CancellationToken,
    events: mpsc::Sender<ModemEvent>,
) -> (ModemHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(8);
    // Standing suspensions outlive simgate: read them back before attaching.
    let suspended = store
        .as_ref()
        .map(|st| {
            st.suspended_iccids().unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read suspended SIMs from the store");
                Vec::new()
            })
        })
        .unwrap_or_default()
        .into_iter()
        .collect();
    let backoff = Backoff::new(settings.reopen_every, MAX_BACKOFF, STABLE);
    let sup = Supervisor {
        port,
        profiles,
        store,
        settings,
        events,
        actions: rx,
        suspended,
        since_reset: false,
        failures: 0,
        opened: false,
        told_absent: false,
        backoff,
        balance_tried: Default::default(),
    };
    (ModemHandle { tx }, tokio::spawn(sup.run(cancel)))
}

struct Supervisor {
    port: String,
    profiles: Arc<Profiles>,
    store: Option<Store>,
    settings: Settings,
    events: mpsc::Sender<ModemEvent>,
    actions: mpsc::Receiver<Request>,
    /// SIMs whose data session is suspended: a standing order per ICCID, kept in the
    /// store, re-applied after a reattach, a restart of simgate, or the context coming
    /// back up on its own — and not carried over to another SIM put in the modem.
    suspended: HashSet<String>,
    /// The port vanished since the last counter sample: the counter restarted.
    since_reset: bool,
    /// Attach attempts that failed since the last identification.
    failures: u32,
    /// The port was opened at least once (an absence after that is a loss).
    opened: bool,
    /// [`ModemEvent::Absent`] was sent.
    told_absent: bool,
    /// Waits between reattach attempts.
    backoff: Backoff,
    /// When a balance query was last tried, per ICCID (failed ones included).
    balance_tried: std::collections::HashMap<String, u64>,
}

/// Longest wait between attempts to reattach a port that opens but does not identify.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// An attachment that lasted this long resets the backoff (src/backoff.rs).
const STABLE: Duration = Duration::from_secs(30);

/// How the attached phase ended.
enum End {
    Cancelled,
    Lost(AtError),
}

impl Supervisor {
    async fn emit(&self, e: ModemEvent) {
        // The daemon dropping its receiver means it is shutting down.
        let _ = self.events.send(e).await;
    }

    async fn run(mut self, cancel: CancellationToken) {
        loop {
            let port = tokio::select! {
                _ = cancel.cancelled() => return,
                p = self.open() => p,
            };
            let since = std::time::Instant::now();
            let end = self.attached(port, &cancel).await;
            self.backoff.ended_after(since.elapsed());
            match end {
                End::Cancelled => return,
                End::Lost(e) => {
                    self.since_reset = true;
                    if self.failures == 0 {
                        // Reported once per loss, not once per failed reattach.
                        tracing::warn!(port = %self.port, error = %e, "modem lost; reattaching");
                        self.emit(ModemEvent::Lost {
                            port: self.port.clone(),
                            error: e.to_string(),
                        })
                        .await;
                    } else {
                        tracing::debug!(port = %self.port, error = %e, "reattach failed");
                    }
                    self.failures += 1;
                    // A port that opens but never identifies (a silent modem, a non-AT
                    // port) is retried with backoff, not in a tight loop.
                    let backoff = self.backoff.next_wait();
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = self.idle(backoff) => {}
                    }
                }
            }
        }
    }

    /// Wait, answering actions with "not attached" rather than queueing them behind a
    /// dead port.
    async fn idle(&mut self, d: Duration) {
        let wait = tokio::time::sleep(d);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => return,
                Some(request) = self.actions.recv() => request.not_attached(),
            }
        }
    }

    /// Open the port, retrying until it exists again.
    async fn open(&mut self) -> crate::at::Port {
        loop {
            match crate::at::open(&self.port).await {
                Ok(p) => {
                    self.opened = true;
                    return p;
                }
                Err(e) => {
                    tracing::debug!(port = %self.port, error = %e, "port not there yet");
                    if !self.opened && !self.told_absent {
                        self.told_absent = true;
                        self.emit(ModemEvent::Absent {
                            port: self.port.clone(),
                            error: e.to_string(),
                        })
                        .await;
                    }
                    self.idle(self.settings.reopen_every).await;
                }
            }
        }
    }

    async fn attached(&mut self, port: crate::at::Port, cancel: &CancellationToken) -> End {
        let mut conn = AtConnection::new(port, vec![], vec![]);
        let profiles = self.profiles.clone();
        let port_name = self.port.clone();
        let mut info = {
            // In step first: a killed run's late answers must not become ours.
            let sync = profiles.recognise("", "").timeouts.default();
            let ident = async {
                conn.synchronise(sync).await?;
                identify::identify(&mut conn, &profiles, &port_name).await
            };
            tokio::pin!(ident);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return End::Cancelled,
                    r = &mut ident => match r {
                        Ok(i) => break i,
                        Err(e) => return End::Lost(e),
                    },
                    // Not queued behind an identification that may never finish.
                    Some(request) = self.actions.recv() => request.not_attached(),
                }
            }
        };
        let profile = profiles.recognise(
            info.manufacturer.as_deref().unwrap_or_default(),
            info.model.as_deref().unwrap_or_default(),
        );
        self.failures = 0;
        self.fill_month(&mut info);
        self.emit(ModemEvent::Identified(Box::new(info.clone())))
            .await;
        if let Err(e) = self.unlock(&mut conn, profile, &mut info).await {
            return End::Lost(e);
        }
        if self.is_suspended(&info) {
            if let Err(e) = self.enforce_suspend(&mut conn, profile).await {
                return End::Lost(e);
            }
        }
        if let Err(e) = self.sample(&mut conn, profile, &mut info).await {
            return End::Lost(e);
        }
        if let Err(e) = self.messages(&mut conn, profile, &info, true).await {
            return End::Lost(e);
        }
        let mut poll = tokio::time::interval(self.settings.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await; // the first tick is immediate; identification just ran
        loop {
            let step = tokio::select! {
                _ = cancel.cancelled() => return End::Cancelled,
                urc = conn.next_urc() => match urc {
                    Ok(u) => self.on_urc(&mut conn, profile, &mut info, &u).await,
                    Err(e) => Err(e),
                },
                _ = poll.tick() => self.on_poll(&mut conn, profile, &mut info).await,
                Some(request) = self.actions.recv() => {
                    self.on_request(&mut conn, profile, &mut info, request).await
                }
            };
            if let Err(e) = step {
                if let AtError::Timeout { .. } = e {
                    // A silent modem: probe it; if it answers, carry on with this port.
                    let p = profile.timeouts.default();
                    if conn.synchronise(p).await.is_ok() {
                        continue;
                    }
                }
                return End::Lost(e);
            }
        }
    }

    fn fill_month(&self, info: &mut ModemInfo) {
        if let (Some(store), Some(iccid)) = (&self.store, &info.sim.iccid) {
            let month = crate::time::month_key(crate::time::unix_now());
            if let Ok(b) = store.month_usage(iccid, &month) {
                info.sim.this_month_mb = Some(b.megabytes());
            }
        }
    }

    fn is_suspended(&self, info: &ModemInfo) -> bool {
        info.sim
            .iccid
            .as_ref()
            .is_some_and(|i| self.suspended.contains(i))
    }

    /// Record (or lift) the standing suspension of the SIM in the modem, durably.
    fn hold(&mut self, info: &ModemInfo, on: bool) {
        let Some(iccid) = info.sim.iccid.clone() else {
            return;
        };
        if let Some(store) = &self.store {
            if let Err(e) = store.set_suspended(&iccid, on) {
                // The hardware did it; only its survival across a restart is at risk.
                tracing::error!(port = %self.port, %iccid, error = %e, "cannot store the suspension");
            }
        }
        if on {
            self.suspended.insert(iccid);
        } else {
            self.suspended.remove(&iccid);
        }
    }

    /// Bring the data context down again; true once verified down.
    async fn enforce_suspend<T: AtIo>(
        &mut self,
        conn: &mut AtConnection<T>,
        profile: &Profile,
    ) -> Result<bool, AtError> {
        match actions::perform(conn, profile, Action::SuspendData).await? {
            Ok(_) => Ok(true),
            Err(r) => {
                tracing::warn!(port = %self.port, refusal = %r, "could not keep data suspended");
                Ok(false)
            }
        }
    }

    /// The status line: keeps `info` current, keeps a suspend in force, and accounts
    /// one counter sample.
    async fn sample<T: AtIo>(
        &mut self,
        conn: &mut AtConnection<T>,
        profile: &Profile,
        info: &mut ModemInfo,
    ) -> Result<(), AtError> {
        let mut st = identify::status(conn, profile).await?;
        if self.is_suspended(info)
            && st.in_session == InSession::Yes
            && self.enforce_suspend(conn, profile).await?
        {
            st.in_session = InSession::No;
            st.session_reason = "data suspended by simgate (context brought down again)".into();
        }
        if info.sim.present {
            let changed = info.sim.in_session != st.in_session;
            info.sim.in_session = st.in_session;
            info.sim.session_reason = st.session_reason;
            if let (true, Some(iccid)) = (changed, &info.sim.iccid) {
                self.emit(ModemEvent::Session {
                    port: self.port.clone(),
                    iccid: iccid.clone(),
                    in_session: info.sim.in_session,
                    reason: info.sim.session_reason.clone(),
                })
                .await;
            }
        }
        info.sim.registration = st.registration;
        info.sim.signal = st.signal;
        info.sim.usage = st.usage;
        info.sim.slot = st.slot;
        let counter = st.usage.map(|u| Bytes {
            sent: u.sent,
            received: u.received,
        });
        self.account(info, counter, st.in_session).await;
        Ok(())
    }

    async fn account(&mut self, info: &ModemInfo, counter: Option<Bytes>, in_session: InSession) {
        let counter = counter.or_else(|| self.netdev_counter());
        let (Some(iccid), Some(counter)) = (info.sim.iccid.clone(), counter) else {
            return;
        };
        let Some(store) = &self.store else {
            return;
        };
        let modem_id = info.imei.clone().unwrap_or_else(|| self.port.clone());
        match store.record_usage(
            &modem_id,
            &iccid,
            counter,
            self.since_reset,
            crate::time::unix_now(),
        ) {
            Ok(this_month) => {
                self.since_reset = false;
                self.emit(ModemEvent::Usage {
                    port: self.port.clone(),
                    iccid,
                    this_month,
                    in_session,
                })
                .await;
            }
            Err(e) => tracing::error!(port = %self.port, error = %e, "usage not recorded"),
        }
    }

    /// Bytes of the bearer's interface (Linux: /sys/class/net/IF/statistics).
    fn netdev_counter(&self) -> Option<Bytes> {
        let dev = self.settings.netdev.as_ref()?;
        let read = |f: &str| {
            std::fs::read_to_string(format!("/sys/class/net/{dev}/statistics/{f}"))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        Some(Bytes {
            sent: read("tx_bytes")?,
            received: read("rx_bytes")?,
        })
    }

    async fn on_poll<T: AtIo>(
        &mut self,
        conn: &mut AtConnection<T>,
        profile: &Profile,
        info: &mut ModemInfo,
    ) -> Result<(), AtError> {
        if info.sim.present && info.sim.state != "READY" {
            // A SIM waiting for its PIN (or still initialising: some firmwares say
            // SIM PIN meanwhile) is read again until it is ready.
            return self.sim_changed(conn, profile, info).await;
        }
        if profile.hotplug.is_none() {
            // No hot-plug URC: the ICCID itself is the cheap check (one line).
            let now = if info.sim.present || info.sim.iccid.is_none() {
                identify::iccid(conn, profile).await?.map(|i| i.to_string())
            } else {
                None
            };
            if now != info.sim.iccid {
                return self.sim_changed(conn, profile, info).await;
            }
        }
        self.sample(conn, profile, info).await?;
        self.balance(conn, profile, info).await
    }

    /// Received SMS taken from the modem (src/modem/channels.rs), when there is
    /// somewhere to put them; `setup` on attach: PDU mode and +CMTI indications first.
    async fn messages<T: AtIo>(
        &mut self,
        conn: &mut AtConnection<T>,
        profile: &Profile,
        info: &ModemInfo,
        setup: bool,
    ) -> Result<(), AtError> {
        let Some(sink) = self.settings.sms.clone() else {
            return Ok(());
        };
        if !info.sim.present || info.sim.state != "READY" {
            return Ok(());
        }
        if setup && !super::sms::setup(conn, profile).await? {
            tracing::info!(port = %self.port, "the modem refuses SMS settings: no SMS intake");
            return Ok(());
        }
        let operators = self.profiles.operators().clone();
        super::channels::take_sms(conn, profile, &operators, info, &sink).await?;
        Ok(())
    }

    /// The prepaid balance asked of the operator when the SIM's record allows it
    /// (src/modem/channels.rs `balance_due`), stored, the row reported again. A failed
    /// query waits as long as a successful one before the next.
    async fn balance<T: AtIo>(
        &mut self,
        conn: &mut AtConnection<T>,
        profile: &Profile,
        info: &ModemInfo,
    ) -> Result<(), AtError> {
        let (Some(store), Some(iccid), Some(imsi)) =
            (&self.store, info.sim.iccid.clone(), info.sim.imsi.clone())
        else {
            return Ok(());
        };
        let now = crate::time::unix_now();
        let record = store.get_platform(&iccid).ok().flatten();
        let last = store
            .operator_estimate(&iccid)
            .ok()
            .flatten()
            .map(|e| e.at)
            .max(self.balance_tried.get(&iccid).copied());
        if !super::channels::balance_due(record.as_ref(), last, now) {
            return Ok(());
        }
        let query = {
            let operators = self.profiles.operators();
            operators.for_imsi(&imsi).and_then(|o| o.balance.clone())
        };
        let Some(query) = query else {
            return Ok(());
        };
        self.balance_tried.insert(iccid.clone(), now);
        let start = conn.stats().commands;
        let reply = match super::ussd::run(conn, profile, &query.code, &[], USSD_WAIT).await? {
            Ok(ex) => ex.replies.last().cloned(),
            Err(f) => {
                tracing::warn!(port = %self.port, %iccid, failure = %f, "balance query failed");
                None
            }
        };
        let Some(facts) = reply.as_deref().and_then(|r| query.read(r)) else {
            tracing::warn!(port = %self.port, %iccid, reply = reply.as_deref(), "the operator's balance reply matched none of its patterns");
            return Ok(());
        };
        let est = crate::store::messaging::OperatorEstimate {
            data_left_mb: facts.data_left_mb,
            days_left: facts.days_left,
            source: "operator".into(),
            at: now,
        };
        if let Err(e) = store.set_operator_estimate(&iccid, &est) {
            tracing::error!(%iccid, error = %e, "cannot store the operator's balance");
            return Ok(());
        }
        tracing::info!(port = %self.port, %iccid, data_left_mb = facts.data_left_mb, days_left = facts.days_left, at_lines = conn.stats().commands - start, "operator balance read");
        self.emit(ModemEvent::Balance { iccid }).await;
        Ok(())
    }

    async fn on_urc<T: AtIo>(
        &mut self,
        conn: &mut AtConnection<T>,
        profile: &Profile,
        info: &mut ModemInfo,
        urc: &str,
    ) -> Result<(), AtError> {
        tracing::debug!(port = %self.port, %urc, "urc");
        if super::sms::cmti(urc).is_some() {
            return self.messages(conn, profile, info, false).await;
        }
        if profile.boot_urcs.iter().any(|b| b == urc) {
            // The modem restarted behind an open port (a UART modem): its counter and
            // settings are gone. Identify it again.
            tracing::info!(port = %self.port, %urc, "modem restarted");
            self.since_reset = true;
            let profiles = self.profiles.clone();
            let mut fresh = identify::identify(conn, &profiles, &self.port).await?;
            self.fill_month(&mut fresh);
            *info = fresh;
            self.emit(ModemEvent::Identified(Box::new(info.clone())))
                .await;
            return self.sample(conn, profile, info).await;
        }
        if let Some(h) = &profile.hotplug {
            if let Some(f) = fields(urc, &h.urc) {
                let value = f.get(h.field).and_then(|v| v.text()).unwrap_or_default();
                if h.removed.iter().any(|r| r == value) {
                    return self.sim_gone(info).await;
                }
                return self.sim_changed(conn, profile, info).await;
            }
        }
        if let Some(r) = super::reply::registration(urc, false) {
            // Registration URCs (+CEREG=2 set at init) keep the picture current
            // without a poll. An LTE modem's circuit domain stays "searching": it does
            // not override a registration in another domain.
            let keep = info.sim.registration.as_ref().is_some_and(|cur| {
                cur.state.registered() && cur.domain != r.domain && !r.state.registered()
            });
            if !keep {
                info.sim.registration = Some(r);
            }
            return Ok(());
        }
        // The SIM's state changed on its own (initialised, or unlocked by another program
        // on the modem's other port): read it again.
        let cpin = super::reply::pin_state(&[urc.to_string()]);
        if cpin
            .is_some_and(|c| c != "READY" || info.sim.state != "READY" || info.sim.iccid.is_none())
        {
            return self.sim_changed(conn, profile, info).await;
        }
        Ok(())
    }

    async fn sim_gone(&mut self, info: &mut ModemInfo) -> Result<(), AtError> {
        if let Some(iccid) = info.sim.iccid.take() {
            self.emit(ModemEvent::SimRemoved {
                port: self.port.clone(),
                iccid,
            })
            .await;
        }
        info.sim = identify::SimInfo {
            state: "SIM not inserted".into(),
            in_session: InSession::No,
            session_reason: "no SIM".into(),
            ..Default::default()
        };
        Ok(())
    }

    /// Read the SIM again and report what changed.
    async fn sim_changed<T: AtIo>(
        &mut self,
        conn: &mut AtConnection<T>,
        profile: &Profile,
        info: &mut ModemInfo,
    ) -> Result<(), AtError> {
        let sim = identify::sim_info(conn, profile).await?;
        let previous = info.sim.iccid.clone();
        if sim.iccid == previous {
            let news = sim.lock != info.sim.lock || sim.imsi != info.sim.imsi;
            info.sim = sim;
            if news && previous.is_some() {
                self.fill_month(info);
                self.emit(ModemEvent::SimUpdated(Box::new(info.clone())))
                    .await;
            }
            return self.unlock(conn, profile, info).await;
        }
        if sim.iccid.is_none() {
            return self.sim_gone(info).await;
        }
        if let Some(old) = previous.clone() {
            self.emit(ModemEvent::SimRemoved {
                port: self.port.clone(),
                iccid: old,
            })
            .await;
        }
        info.sim = sim;
        self.fill_month(info);
        self.emit(ModemEvent::SimInserted {
            info: Box::new(info.clone()),
            previous,
        })
        .await;
        self.unlock(conn, profile, info).await?;
        self.sample(conn, profile, info).await
    }

    /// A PIN operation asked by the platform or a person: the SIM read fresh (its ICCID
    /// must be `iccid`, its lock decides what [`guard`](crate::card::pin::guard)
    /// allows), the line sent, the SIM read again and its row reported. A successful
    /// verify or unblock clears the configured PIN's refusal record.
    async fn on_pin<T: AtIo>(
        &mut self,
        conn: &mut AtConnection<T>,
        profile: &Profile,
        info: &mut ModemInfo,
        iccid: &str,
        req: &crate::sim::PinRequest,
    ) -> Result<PinResult, AtError> {
        let (result, after) = super::pin::on_modem(conn, profile, Some(iccid), req).await?;
        if let (Ok(()), Some(store), crate::sim::PinOp::Verify | crate::sim::PinOp::Unblock) =
            (&result, &self.store, req.op)
        {
            // Unlocked by hand: the configured PIN may be tried again (at a next lock).
            if let Err(e) = store.clear_pin_try(iccid) {
                tracing::error!(%iccid, error = %e, "cannot clear the PIN attempt record");
            }
        }
        let news = after.lock != info.sim.lock || after.imsi != info.sim.imsi;
        info.sim = after;
        if news {
            self.fill_month(info);
            self.emit(ModemEvent::SimUpdated(Box::new(info.clone())))
                .await;
        }
        Ok(result)
    }

    /// A locked SIM with a configured PIN: the one attempt (src/modem/pin.rs), then the
    /// SIM read again and its new facts (unlocked, or attempts left) reported.
    async fn unlock<T: AtIo>(
        &mut self,
        conn: &mut AtConnection<T>,
        profile: &Profile,
        info: &mut ModemInfo,
    ) -> Result<(), AtError> {
        let (Some(pins), Some(store)) = (self.settings.pins.clone(), self.store.clone()) else {
            return Ok(());
        };
        if info
            .sim
            .lock
            .is_none_or(|l| l.state != crate::sim::LockState::PinRequired)
        {
            return Ok(());
        }
        let iccid = info.sim.iccid.clone().unwrap_or_default();
        match super::pin::configured(conn, profile, &info.sim, &pins, &store).await? {
            super::pin::Attempt::Skipped(why) => {
                tracing::debug!(port = %self.port, %iccid, why, "configured PIN not entered");
                return Ok(());
            }
            super::pin::Attempt::Entered => {
                tracing::info!(port = %self.port, %iccid, "configured PIN entered; SIM unlocked");
            }
            super::pin::Attempt::Refused(result) => {
                tracing::warn!(port = %self.port, %iccid, %result, "configured PIN refused; never tried again on this SIM (pin_verify unlocks it)");
            }
        }
        let sim = identify::sim_info(conn, profile).await?;
        if sim.iccid == info.sim.iccid {
            info.sim = sim;
            self.fill_month(info);
            self.emit(ModemEvent::SimUpdated(Box::new(info.clone())))
                .await;
        }
        Ok(())
    }

    /// Serve a handle's request; a link error is both answered and returned, since it
    /// also drives recovery.
    async fn on_request<T: AtIo>(
        &mut self,
        conn: &mut AtConnection<T>,
        profile: &Profile,
        info: &mut ModemInfo,
        request: Request,
    ) -> Result<(), AtError> {
        match request {
            Request::Act(action, reply) => {
                let r = self.on_action(conn, profile, info, action).await;
                answer(reply, r)
            }
            Request::Refresh(reply) => {
                let r = self.sim_changed(conn, profile, info).await;
                answer(reply, r.map(|()| Box::new(info.clone())))
            }
            Request::Status(reply) => {
                let r = self.sample(conn, profile, info).await;
                answer(reply, r.map(|()| Box::new(info.clone())))
            }
            Request::Pin(iccid, req, reply) => {
                let r = self.on_pin(conn, profile, info, &iccid, &req).await;
                answer(reply, r)
            }
            Request::Ussd(iccid, code, answers, reply) => {
                let r = if info.sim.iccid.as_deref() != Some(iccid.as_str()) {
                    Ok(Err(super::ussd::UssdFailure::Refused(format!(
                        "SIM {iccid} is no longer in this modem"
                    ))))
                } else {
                    super::ussd::run(conn, profile, &code, &answers, USSD_WAIT).await
                };
                answer(reply, r)
            }
            Request::Sms(iccid, to, text, reply) => {
                let r = if info.sim.iccid.as_deref() != Some(iccid.as_str()) {
                    Ok(Err(super::sms::SendFailure::Refused {
                        part: 1,
                        parts: 1,
                        sent: 0,
                        why: format!("SIM {iccid} is no longer in this modem"),
                    }))
                } else {
                    super::sms::send(conn, profile, &to, &text).await
                };
                answer(reply, r)
            }
            Request::OnIsdr(job, reply) => {
                use super::esim::ModemEsimError;
                let max_apdu = profile.euicc.cgla_max_apdu;
                let r = super::esim::with_isdr(conn, profile, move |mut isdr| {
                    isdr.limit_apdu(max_apdu);
                    (job.0)(&mut isdr);
                    Ok(())
                })
                .await;
                let r = match r {
                    Ok(_) => Ok(Ok(())),
                    Err(ModemEsimError::At(e)) => Err(e),
                    Err(e) => Ok(Err(e.to_string())),
                };
                answer(reply, r)
            }
            Request::Esim(action, reply) => {
                use super::esim::ModemEsimError;
                let r = super::esim::work(conn, profile, &action).await;
                let r = match r {
                    Ok(list) => Ok(Ok(list)),
                    Err(ModemEsimError::At(e)) => Err(e),
                    Err(e) => Ok(Err(e.to_string())),
                };
                // After a switch the SIM is another: followed like a hot-swap.
                let r = match r {
                    Ok(Ok(list)) if matches!(action, crate::card::esim::Work::Apply(_)) => self
                        .sim_changed(conn, profile, info)
                        .await
                        .map(|()| Ok(list)),
                    other => other,
                };
                answer(reply, r)
            }
        }
    }

    async fn on_action<T: AtIo>(
        &mut self,
        conn: &mut AtConnection<T>,
        profile: &Profile,
        info: &mut ModemInfo,
        action: Action,
    ) -> ActionResult {
        let r = actions::perform(conn, profile, action).await?;
        if r.is_ok() {
            match action {
                Action::SuspendData => self.hold(info, true),
                Action::ResumeData => self.hold(info, false),
                Action::SwitchSlot(_) => self.sim_changed(conn, profile, info).await?,
                Action::RadioOff | Action::RadioOn => {}
            }
        }
        Ok(r)
    }
}

/// A copy of a link error for the action's caller; the original drives recovery.
/// Answer a handle's request with its result; a link error is both answered and
/// returned, since it also drives recovery.
fn answer<T>(
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
