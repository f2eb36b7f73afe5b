//! The one way an observation reaches the store and the platform: stored first (what
//! was shown is kept), then published as the SIM's state row and the events it implies.

use super::changes;
use crate::contract::EventKind;
use crate::link::{Link, LinkError};
use crate::sim::{Location, Observed};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// The store and, when there is a platform link, the link.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub store: Store,
    pub link: Option<Link>,
}

impl Recorder {
    /// Store an observation and publish what changed: the events it implies (inserted,
    /// removed, swapped, identity changed) and the SIM's state row with the cached
    /// platform record. An observation equal to the last one but for its time publishes
    /// nothing (bytes cost money).
    pub fn record(&self, obs: &Observed) -> Result<(), RecordError> {
        let prev = self.store.get_observed(&obs.iccid)?;
        self.store.put_observed(obs)?;
        if prev
            .as_ref()
            .is_some_and(|p| changes::same_but_time(p, obs))
        {
            return Ok(());
        }
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
                    self.store.put_observed(&other)?;
                    replaced.push(other);
                }
            }
        }
        if let Some(link) = &self.link {
            for old in &replaced {
                link.publish_state(&crate::link::row(&self.store, old)?)?;
            }
            for ev in changes::events(prev.as_ref(), obs, &replaced) {
                link.publish_event(ev)?;
            }
            link.publish_state(&crate::link::row(&self.store, obs)?)?;
        }
        Ok(())
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

    /// An event for the platform, when there is a link.
    pub fn event(&self, ev: EventKind) -> Result<(), RecordError> {
        if let Some(link) = &self.link {
            link.publish_event(ev)?;
        }
        Ok(())
    }
}
