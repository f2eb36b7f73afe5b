//! The daemon's modem side: one supervisor task per configured port (src/modem), whose
//! events become SIM observations; their handles stay here so platform commands can act
//! on a modem (suspend, resume, slot switch).

use super::{Ctx, DaemonError};
use crate::modem::supervisor::{self, ModemEvent, ModemHandle};
use crate::modem::Profiles;
use crate::sim::Observed;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The modems the daemon supervises, by port.
#[derive(Debug, Default)]
pub(crate) struct Modems {
    handles: HashMap<String, ModemHandle>,
    tasks: Vec<JoinHandle<()>>,
    /// The ICCID last seen in each port.
    iccids: HashMap<String, String>,
    /// Ports whose modem was reported not answering, until it is identified again.
    silent: std::collections::HashSet<String>,
    /// Spare AT ports of modems ModemManager keeps (`[modems] shared_with_modemmanager`).
    shared: std::collections::HashSet<String>,
}

impl Modems {
    /// Start a supervisor for every port; their events arrive on `events`.
    pub(crate) fn start(
        daemon: &super::Settings,
        profiles: Arc<Profiles>,
        ctx: &Ctx,
        cancel: &CancellationToken,
        events: mpsc::Sender<ModemEvent>,
    ) -> Modems {
        let mut modems = Modems {
            shared: daemon.modems_shared.iter().cloned().collect(),
            ..Modems::default()
        };
        for port in &daemon.modems {
            let shared = modems.shared.contains(port);
            if let Some(advice) =
                crate::modem::sysfs::modemmanager_conflict(port).filter(|_| !shared)
            {
                tracing::warn!(%port, "{advice}");
            }
            // The configured interface wins; else the one sysfs puts on the same USB
            // device as the port.
            let netdev = daemon.modem_netdevs.get(port).cloned().or_else(|| {
                let found = crate::modem::sysfs::netdev_for(std::path::Path::new("/sys"), port);
                if let Some(n) = &found {
                    tracing::info!(%port, netdev = %n, "usage counters from the modem's network interface (sysfs)");
                }
                found
            });
            let settings = supervisor::Settings {
                poll: daemon.modem_poll,
                netdev,
                pins: daemon.pins.clone(),
                sms: Some(sms_sink(&ctx.rec)),
                ..supervisor::Settings::default()
            };
            let profiles = match daemon.modem_euicc_transport.get(port) {
                Some(t) => Arc::new(profiles.with_euicc_transport(*t)),
                None => profiles.clone(),
            };
            let (handle, task) = supervisor::spawn(
                port.clone(),
                profiles,
                Some(ctx.store.clone()),
                settings,
                cancel.clone(),
                events.clone(),
            );
            modems.handles.insert(port.clone(), handle);
            modems.tasks.push(task);
        }
        modems
    }

    /// A supervisor's event: one handler per kind.
    pub(crate) async fn on_event(&mut self, ctx: &Ctx, ev: ModemEvent) -> Result<(), DaemonError> {
        let now = crate::time::unix_now();
        if let ModemEvent::Identified(info) | ModemEvent::SimInserted { info, .. } = &ev {
            show_radio(ctx, info);
        }
        match ev {
            ModemEvent::Identified(info) => self.on_identified(ctx, &info, now).await?,
            ModemEvent::SimInserted { info, previous } => {
                self.on_inserted(ctx, &info, previous, now).await?
            }
            ModemEvent::SimUpdated(info) => {
                let lock = info.sim.lock.map(|l| l.summary());
                tracing::info!(port = %info.port, iccid = info.sim.iccid.as_deref(), sim = %info.sim.state, lock = lock.as_deref(), "SIM read again");
                if let Some(obs) = crate::observe::from_modem(&info, now) {
                    self.seen(ctx, obs).await?;
                }
            }
            ModemEvent::SimRemoved { port, iccid } => {
                tracing::info!(%port, %iccid, "SIM removed from modem");
                self.gone(ctx, &port).await?;
            }
            ModemEvent::Usage {
                port,
                iccid,
                this_month,
                in_session,
            } => {
                tracing::debug!(%port, %iccid, sent = this_month.sent, received = this_month.received, "usage accounted");
                self.on_usage(ctx, iccid, this_month, in_session, now)
                    .await?
            }
            ModemEvent::Session {
                port,
                iccid,
                in_session,
                reason,
            } => {
                tracing::info!(%port, %iccid, ?in_session, %reason, "data session changed");
                self.update(ctx, &iccid, |o| o.in_session = in_session)
                    .await?;
            }
            ModemEvent::Absent { port, error } => {
                tracing::warn!(%port, %error, "cannot open the modem port; retrying");
            }
            ModemEvent::Balance { iccid } => {
                // The operator's figures are in the store: the row carries them now.
                if let Some(obs) = ctx.store.get_observed(&iccid)? {
                    ctx.rec.publish_row(&obs)?;
                }
            }
            ModemEvent::Lost { port, error } => {
                tracing::warn!(%port, %error, "modem lost; reattaching");
                self.on_lost(ctx, port, error).await?
            }
        }
        Ok(())
    }

    /// A modem identified (at attach, or again after it was lost).
    async fn on_identified(
        &mut self,
        ctx: &Ctx,
        info: &crate::modem::identify::ModemInfo,
        now: u64,
    ) -> Result<(), DaemonError> {
        if self.silent.remove(&info.port) {
            ctx.rec.event(crate::contract::EventKind::ModemService {
                port: info.port.clone(),
                iccid: info.sim.iccid.clone(),
                up: true,
                reason: None,
            })?;
        }
        tracing::info!(port = %info.port, model = info.model.as_deref(), sim = %info.sim.state, iccid = info.sim.iccid.as_deref(), at_commands = info.at_commands, "modem identified");
        // A first identification is a first look at the port: any other SIM the
        // store still has present there left while nobody watched (simgate down,
        // a power cut) and is reported removed now.
        let here = info.sim.iccid.clone();
        let stale = ctx.rec.present_where(
            |l| matches!(l, crate::sim::Location::Modem { port, .. } if *port == info.port),
        )?;
        for old in stale.iter().filter(|o| Some(&o.iccid) != here.as_ref()) {
            tracing::info!(port = %info.port, iccid = %old.iccid, "not in its modem at the first look: removed");
            mark_absent(ctx, &old.iccid).await?;
        }
        match crate::observe::from_modem(info, now) {
            Some(obs) => self.seen(ctx, obs).await,
            None => self.gone(ctx, &info.port).await,
        }
    }

    /// A SIM inserted in a modem, `previous` the one it replaced.
    async fn on_inserted(
        &mut self,
        ctx: &Ctx,
        info: &crate::modem::identify::ModemInfo,
        previous: Option<String>,
        now: u64,
    ) -> Result<(), DaemonError> {
        tracing::info!(port = %info.port, iccid = info.sim.iccid.as_deref(), previous = previous.as_deref(), "SIM inserted in modem");
        let Some(obs) = crate::observe::from_modem(info, now) else {
            return Ok(());
        };
        let (iccid, location) = (obs.iccid.clone(), obs.location.clone());
        // The pair, for the platform: which SIM took whose place. During a
        // guided swap it is the swap's to say, once verified (or never, when
        // rolled back): src/daemon/swap.rs.
        let guided = ctx.store.swap_on_port(&info.port)?.is_some();
        self.seen(ctx, obs).await?;
        if let (Some(old), false) = (previous, guided) {
            if old != iccid {
                ctx.rec.event(crate::contract::EventKind::Swapped {
                    iccid,
                    replaced: old,
                    location,
                })?;
            }
        }
        Ok(())
    }

    /// This month's counters of a SIM: to the platform batched, to the page at once.
    async fn on_usage(
        &mut self,
        ctx: &Ctx,
        iccid: String,
        this_month: crate::store::usage::Bytes,
        in_session: crate::sim::InSession,
        now: u64,
    ) -> Result<(), DaemonError> {
        // The platform gets it batched (broker.usage_interval_secs).
        if let Some(link) = &ctx.link {
            link.report_usage(crate::contract::UsageSample {
                month: crate::time::month_key(now),
                iccid: iccid.clone(),
                rx: this_month.received,
                tx: this_month.sent,
                at: now,
            });
        }
        self.update(ctx, &iccid, |o| o.in_session = in_session)
            .await?;
        // This month's megabytes on the page (the row itself may not change).
        if let Some(obs) = ctx.store.get_observed(&iccid)? {
            ctx.rec.show(&obs)?;
        }
        Ok(())
    }

    /// A modem stopped answering: the platform learns it now. The SIM's row says its
    /// modem is silent and its session unknown, and an event says so once (MQTT.md).
    async fn on_lost(&mut self, ctx: &Ctx, port: String, error: String) -> Result<(), DaemonError> {
        // After a restart the port's SIM is known from the store only.
        let iccid = match self.iccids.get(&port).cloned() {
            Some(i) => Some(i),
            None => ctx
                .rec
                .present_where(
                    |l| matches!(l, crate::sim::Location::Modem { port: p, .. } if *p == port),
                )?
                .into_iter()
                .next()
                .map(|o| o.iccid),
        };
        if let Some(i) = &iccid {
            self.update(ctx, i, |o| {
                o.modem_silent = true;
                o.in_session = crate::sim::InSession::NotApplicable;
            })
            .await?;
        }
        self.silent.insert(port.clone());
        ctx.rec.event(crate::contract::EventKind::ModemService {
            port,
            iccid,
            up: false,
            reason: Some(error),
        })?;
        Ok(())
    }

    /// A SIM observed in a modem; a different SIM that sat in the same port is now
    /// absent (its record, and its usage, stay with its own ICCID).
    async fn seen(&mut self, ctx: &Ctx, obs: Observed) -> Result<(), DaemonError> {
        let crate::sim::Location::Modem { port, .. } = &obs.location else {
            return ctx.record(&obs).await;
        };
        if let Some(old) = self.iccids.insert(port.clone(), obs.iccid.clone()) {
            if old != obs.iccid {
                mark_absent(ctx, &old).await?;
            }
        }
        ctx.record(&obs).await
    }

    async fn gone(&mut self, ctx: &Ctx, port: &str) -> Result<(), DaemonError> {
        if let Some(old) = self.iccids.remove(port) {
            mark_absent(ctx, &old).await?;
        }
        Ok(())
    }

    /// Change a stored observation and record it, only when something changed (only
    /// changes go on the wire).
    async fn update(
        &self,
        ctx: &Ctx,
        iccid: &str,
        f: impl FnOnce(&mut Observed),
    ) -> Result<(), DaemonError> {
        if let Some(mut obs) = ctx.store.get_observed(iccid)? {
            let before = obs.clone();
            f(&mut obs);
            if obs != before {
                obs.observed_at = crate::time::unix_now();
                ctx.record(&obs).await?;
            }
        }
        Ok(())
    }

    /// The supervisor of `port`, for platform commands.
    pub(crate) fn handle(&self, port: &str) -> Option<ModemHandle> {
        self.handles.get(port).cloned()
    }

    /// Wait (bounded) for the supervisors to wind down after cancellation.
    pub(crate) async fn join(self) {
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
        }
    }
}

/// The page's signal and registration columns (the platform has no field for them).
fn show_radio(ctx: &Ctx, info: &crate::modem::identify::ModemInfo) {
    if let Some(feed) = &ctx.rec.feed {
        feed.modem(
            &info.port,
            crate::http::ModemView {
                signal: info.sim.signal.and_then(|s| serde_json::to_value(s).ok()),
                registration: info
                    .sim
                    .registration
                    .as_ref()
                    .and_then(|r| serde_json::to_value(r).ok()),
            },
        );
    }
}

async fn mark_absent(ctx: &Ctx, iccid: &str) -> Result<(), DaemonError> {
    if let Some(mut obs) = ctx.store.get_observed(iccid)? {
        if obs.present {
            obs.present = false;
            // A SIM out of its modem has no data session, whatever was last seen, and
            // no modem to be silent.
            obs.in_session = crate::sim::InSession::No;
            obs.modem_silent = false;
            obs.observed_at = crate::time::unix_now();
            ctx.record(&obs).await?;
        }
    }
    Ok(())
}

impl super::work::ModemPorts for Modems {
    fn handle(&self, port: &str) -> Option<ModemHandle> {
        Modems::handle(self, port)
    }

    fn shared_with_modemmanager(&self, port: &str) -> bool {
        self.shared.contains(port)
    }
}

/// Where a supervisor puts received SMS: the recorder's once-per-key events (MQTT.md,
/// `sms`), so an SMS read again after a kill reaches the platform once.
fn sms_sink(rec: &crate::agent::Recorder) -> crate::modem::channels::EventSink {
    let rec = rec.clone();
    crate::modem::channels::EventSink(std::sync::Arc::new(move |key, ev| {
        rec.event_once(key, ev).map_err(|e| e.to_string())
    }))
}
