//! The one way an observation reaches the store and the platform: stored first (what
//! was shown is kept), then published as the SIM's state row and the events it implies.

use super::changes;
use crate::contract::{CommandStatus, CommandStatusWord, EventKind, SimState};
use crate::http::Feed;
use crate::link::{Link, LinkError};
use crate::sim::{Location, Observed};
use crate::store::sims::Owed;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// The store and, when there is a platform link, the link; when the station page is
/// served (src/http), its feed: every row the platform gets, the page gets.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub store: Store,
    pub link: Option<Link>,
    pub feed: Option<Feed>,
}

impl Recorder {
    /// Store an observation and publish what changed: the events it implies (inserted,
    /// removed, swapped, identity changed) and the SIM's state row with the cached
    /// platform record. An observation equal to the last one but for its time publishes
    /// nothing (bytes cost money).
    ///
    /// The observation is stored with what it owes the platform (`store::Owed`), paid
    /// once its row and events are queued: a crash in between (a kill, a disk full)
    /// leaves the debt, which the next start pays ([`Recorder::recover`]) — otherwise
    /// the same SIM found again would publish nothing, and the platform never learn.
    pub fn record(&self, obs: &Observed) -> Result<(), RecordError> {
        let prev = self.store.get_observed(&obs.iccid)?;
        if prev
            .as_ref()
            .is_some_and(|p| changes::same_but_time(p, obs))
        {
            self.store.put_observed(obs)?;
            return Ok(());
        }
        self.store.put_observed_owing(
            obs,
            &Owed {
                prev: prev.clone(),
                row_only: false,
            },
        )?;
        // A SIM arriving where another one was last seen present: that one was swapped
        // out without a removal being seen (a modem reporting a new ICCID in its slot).
        let mut replaced = Vec::new();
        if obs.present
            && prev
                .as_ref()
                .is_none_or(|p| !p.present || p.location != obs.location)
        {
            for mut other in self.store.all_observed()? {
                if other.iccid != obs.iccid && other.present && other.location == obs.location {
                    other.present = false;
                    other.observed_at = obs.observed_at;
                    self.store.put_observed_owing(
                        &other,
                        &Owed {
                            prev: None,
                            row_only: true,
                        },
                    )?;
                    replaced.push(other);
                }
            }
        }
        if self.link.is_some() || self.feed.is_some() {
            for old in &replaced {
                self.publish_row(old)?;
            }
            if let Some(link) = &self.link {
                for ev in changes::events(prev.as_ref(), obs, &replaced) {
                    link.publish_event(ev)?;
                }
            }
            self.publish_row(obs)?;
        }
        for old in &replaced {
            self.store.paid(&old.iccid)?;
        }
        self.store.paid(&obs.iccid)?;
        Ok(())
    }

    /// The SIM's row (observation, cached record, estimate) to the platform and the
    /// page: after the record or the estimate changed without a new observation.
    pub fn publish_row(&self, obs: &Observed) -> Result<(), RecordError> {
        if self.link.is_none() && self.feed.is_none() {
            return Ok(());
        }
        let row = self.store.row(obs)?;
        if let Some(link) = &self.link {
            link.publish_state(&row)?;
        }
        self.show_row(&row)
    }

    /// The SIM's row to the page only (a station caching a platform record, a modem's
    /// usage counted: the platform learns those its own way).
    pub fn show(&self, obs: &Observed) -> Result<(), RecordError> {
        if self.feed.is_none() {
            return Ok(());
        }
        self.show_row(&self.store.row(obs)?)
    }

    fn show_row(&self, row: &SimState) -> Result<(), RecordError> {
        if let Some(feed) = &self.feed {
            let month = crate::time::month_key(crate::time::unix_now());
            let used = self.store.month_usage(&row.sim.iccid, &month)?;
            feed.row(row, (used.total() > 0).then(|| used.megabytes()));
        }
        Ok(())
    }

    /// A command's lifecycle to the platform (its status topic, and an event once it is
    /// final when `as_event`) and to the page.
    pub fn command_status(
        &self,
        status: &CommandStatus,
        as_event: bool,
    ) -> Result<(), RecordError> {
        if as_event
            && matches!(
                status.status,
                CommandStatusWord::Successful | CommandStatusWord::Failed
            )
        {
            crate::metrics::counters()
                .command_finished(status.status.word(), status.code.map(|c| c.word()));
        }
        if let Some(feed) = &self.feed {
            feed.command(status);
        }
        if let Some(link) = &self.link {
            link.publish_command_status(status)?;
            if as_event
                && matches!(
                    status.status,
                    CommandStatusWord::Successful | CommandStatusWord::Failed
                )
            {
                link.publish_event(EventKind::Command {
                    id: status.id.clone(),
                    iccid: status.iccid.clone(),
                    action: status.action.clone(),
                    status: status.status,
                    code: status.code,
                    reason: status.reason.clone(),
                })?;
            }
        }
        Ok(())
    }

    /// Pay what the last run left owing: the rows (and events) of observations it
    /// stored but died before queuing. Returns how many SIMs. Called once at start,
    /// before anything is recorded.
    pub fn recover(&self) -> Result<usize, RecordError> {
        let owed = self.store.owed()?;
        for (iccid, debt) in &owed {
            let Some(obs) = self.store.get_observed(iccid)? else {
                self.store.paid(iccid)?;
                continue;
            };
            tracing::warn!(%iccid, "SIM row published at start-up: the last run died before publishing it");
            if let Some(link) = &self.link {
                if !debt.row_only {
                    for ev in changes::events(debt.prev.as_ref(), &obs, &[]) {
                        link.publish_event(ev)?;
                    }
                }
                link.publish_state(&self.store.row(&obs)?)?;
            }
            self.store.paid(iccid)?;
        }
        Ok(owed.len())
    }

    /// The SIM keyed `key` is no longer where it was: record it absent.
    pub fn removed(&self, key: &str, now: u64) -> Result<(), RecordError> {
        if let Some(mut obs) = self.store.get_observed(key)? {
            if obs.present {
                obs.present = false;
                obs.observed_at = now;
                self.record(&obs)?;
            }
        }
        Ok(())
    }

    /// Every stored SIM still marked present at a location `here` selects: the rows a
    /// first look must confirm or report removed.
    pub fn present_where(
        &self,
        here: impl Fn(&Location) -> bool,
    ) -> Result<Vec<Observed>, RecordError> {
        Ok(self
            .store
            .all_observed()?
            .into_iter()
            .filter(|o| o.present && here(&o.location))
            .collect())
    }

    /// An event for the platform, when there is a link (and the page: a swap's steps).
    pub fn event(&self, ev: EventKind) -> Result<(), RecordError> {
        if let Some(feed) = &self.feed {
            feed.event(&ev);
        }
        if let Some(link) = &self.link {
            link.publish_event(ev)?;
        }
        Ok(())
    }

    /// An event for the platform once per `key`, ever (MQTT.md, `sms`): `Some(false)`
    /// when it was queued before. `None` without a platform link: there is nowhere
    /// durable to put it, so the caller keeps what it reports.
    pub fn event_once(&self, key: &str, ev: EventKind) -> Result<Option<bool>, RecordError> {
        let Some(link) = &self.link else {
            return Ok(None);
        };
        let queued = link.publish_event_once(key, ev.clone())?;
        if let (true, Some(feed)) = (queued, &self.feed) {
            feed.event(&ev);
        }
        Ok(Some(queued))
    }
}
