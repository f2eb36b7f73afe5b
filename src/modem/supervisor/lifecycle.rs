//! The supervisor's task: open the port (waiting for it while it is absent), attach
//! (synchronise, identify, unlock, keep a suspension, first sample), serve the attached
//! state until the port is lost or the token cancelled, then reattach with backoff.

use super::{ModemEvent, ModemHandle, Settings, Supervisor};
use crate::at::{AtConnection, AtError};
use crate::backoff::Backoff;
use crate::modem::identify;
use crate::modem::profile::Profiles;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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
}
