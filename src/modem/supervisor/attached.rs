//! The attached state: what a supervisor does between an attach and a loss — a poll or
//! a URC followed (the SIM inserted, removed, changed, unlocked; received SMS; the
//! operator's balance), a handle's request served, and a standing suspension kept.

use super::handle::{answer, PinResult, Request};
use super::{ModemEvent, Supervisor};
use crate::at::conn::AtIo;
use crate::at::parser::fields;
use crate::at::{AtConnection, AtError};
use crate::modem::actions::{self, Action, ActionResult};
use crate::modem::identify::{self, ModemInfo};
use crate::modem::profile::Profile;
use crate::sim::InSession;
use std::time::Duration;

/// How long a USSD reply is awaited from the network before the session is cancelled
/// (TS 24.090 leaves it to the network; operators answer within seconds).
const USSD_WAIT: Duration = Duration::from_secs(30);

impl Supervisor {
    pub(super) fn is_suspended(&self, info: &ModemInfo) -> bool {
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
    pub(super) async fn enforce_suspend<T: AtIo>(
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

    pub(super) async fn on_poll<T: AtIo>(
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
    pub(super) async fn messages<T: AtIo>(
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
        if setup && !crate::modem::sms::setup(conn, profile).await? {
            tracing::info!(port = %self.port, "the modem refuses SMS settings: no SMS intake");
            return Ok(());
        }
        let operators = self.profiles.operators().clone();
        crate::modem::channels::take_sms(conn, profile, &operators, info, &sink).await?;
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
        if !crate::modem::channels::balance_due(record.as_ref(), last, now) {
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
        let reply =
            match crate::modem::ussd::run(conn, profile, &query.code, &[], USSD_WAIT).await? {
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

    pub(super) async fn on_urc<T: AtIo>(
        &mut self,
        conn: &mut AtConnection<T>,
        profile: &Profile,
        info: &mut ModemInfo,
        urc: &str,
    ) -> Result<(), AtError> {
        tracing::debug!(port = %self.port, %urc, "urc");
        if crate::modem::sms::cmti(urc).is_some() {
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
        if let Some(r) = crate::modem::reply::registration(urc, false) {
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
        let cpin = crate::modem::reply::pin_state(&[urc.to_string()]);
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
        let (result, after) = crate::modem::pin::on_modem(conn, profile, Some(iccid), req).await?;
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
    pub(super) async fn unlock<T: AtIo>(
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
        match crate::modem::pin::configured(conn, profile, &info.sim, &pins, &store).await? {
            crate::modem::pin::Attempt::Skipped(why) => {
                tracing::debug!(port = %self.port, %iccid, why, "configured PIN not entered");
                return Ok(());
            }
            crate::modem::pin::Attempt::Entered => {
                tracing::info!(port = %self.port, %iccid, "configured PIN entered; SIM unlocked");
            }
            crate::modem::pin::Attempt::Refused(result) => {
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
    pub(super) async fn on_request<T: AtIo>(
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
                    Ok(Err(crate::modem::ussd::UssdFailure::Refused(format!(
                        "SIM {iccid} is no longer in this modem"
                    ))))
                } else {
                    crate::modem::ussd::run(conn, profile, &code, &answers, USSD_WAIT).await
                };
                answer(reply, r)
            }
            Request::Sms(iccid, to, text, reply) => {
                let r = if info.sim.iccid.as_deref() != Some(iccid.as_str()) {
                    Ok(Err(crate::modem::sms::SendFailure::Refused {
                        part: 1,
                        parts: 1,
                        sent: 0,
                        why: format!("SIM {iccid} is no longer in this modem"),
                    }))
                } else {
                    crate::modem::sms::send(conn, profile, &to, &text).await
                };
                answer(reply, r)
            }
            Request::OnIsdr(job, reply) => {
                use crate::modem::esim::ModemEsimError;
                let max_apdu = profile.euicc.cgla_max_apdu;
                let r = crate::modem::esim::with_isdr(conn, profile, move |mut isdr| {
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
                use crate::modem::esim::ModemEsimError;
                let r = crate::modem::esim::work(conn, profile, &action).await;
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
