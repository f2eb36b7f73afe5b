//! Usage accounting: the status line's counter (or the bearer's network interface)
//! accounted per SIM and month in the store — one writer, `Store::record_usage`, one
//! transaction per sample — and the month's total put in the SIM's picture.

use super::{ModemEvent, Supervisor};
use crate::at::conn::AtIo;
use crate::at::{AtConnection, AtError};
use crate::modem::identify::{self, ModemInfo};
use crate::modem::profile::Profile;
use crate::sim::InSession;
use crate::store::usage::Bytes;

impl Supervisor {
    pub(super) fn fill_month(&self, info: &mut ModemInfo) {
        if let (Some(store), Some(iccid)) = (&self.store, &info.sim.iccid) {
            let month = crate::time::month_key(crate::time::unix_now());
            if let Ok(b) = store.month_usage(iccid, &month) {
                info.sim.this_month_mb = Some(b.megabytes());
            }
        }
    }

    /// The status line: keeps `info` current, keeps a suspend in force, and accounts
    /// one counter sample.
    pub(super) async fn sample<T: AtIo>(
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
}
