//! `Link`, the daemon's handle: states, events, command statuses and usage queued in the
//! outbox (written and flushed) before the driver hands them to rumqttc.

use super::inbound::AckToken;
use super::settings::LinkSettings;
use super::{encode, LinkError};
use crate::contract::{
    self, CommandStatus, EventKind, EventMsg, SimIndex, SimState, Topics, UsageBatch, UsageSample,
};
use crate::store::outbox::{Class, Limits, Outbox, Shed};
use crate::store::Store;
use rumqttc::AsyncClient;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Handle used by the daemon to publish. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Link {
    pub(super) client: AsyncClient,
    pub(super) topics: Topics,
    store: Store,
    pub(super) outbox: Outbox,
    pub(super) wake: Arc<Notify>,
    usage: Arc<Mutex<Usage>>,
    /// Between a CONNACK and the connection's end (the daemon's status line).
    pub(super) connected: Arc<std::sync::atomic::AtomicBool>,
    /// The ICCIDs in the retained index (`index`); None until first needed, then
    /// loaded from the store.
    indexed: Arc<Mutex<Option<BTreeSet<String>>>>,
}

/// Usage between batches.
#[derive(Debug, Default)]
struct Usage {
    /// The latest sample per SIM since the last batch.
    pending: BTreeMap<String, UsageSample>,
    /// What the last queued batch said per SIM (month, rx, tx): a SIM whose counters
    /// did not move is left out of the next batch, so an idle gateway sends none.
    queued: HashMap<String, (String, u64, u64)>,
}

impl Link {
    /// The handle over `store`'s outbox (bounded as `settings` say), for a client whose
    /// event loop the driver runs.
    pub(super) fn new(
        client: AsyncClient,
        topics: Topics,
        store: &Store,
        settings: &LinkSettings,
    ) -> Result<Link, LinkError> {
        Ok(Link {
            client,
            topics,
            store: store.clone(),
            outbox: store.outbox(Limits {
                messages: settings.outbox_cap,
                bytes: settings.outbox_max_bytes,
                disk_reserve: crate::store::outbox::disk_reserve(
                    store.dir(),
                    settings.outbox_disk_reserve_percent,
                ),
            })?,
            wake: Arc::new(Notify::new()),
            usage: Arc::new(Mutex::new(Usage::default())),
            connected: Arc::default(),
            indexed: Arc::default(),
        })
    }

    /// The contract's topics for this agent.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Whether the broker accepted the current connection (CONNACK) and it still stands.
    pub fn is_connected(&self) -> bool {
        self.connected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Messages waiting in the outbox.
    pub fn queued(&self) -> u64 {
        self.outbox.len()
    }

    /// How long the oldest message in the outbox has waited, in seconds (None: empty).
    pub fn oldest_queued_secs(&self) -> Option<u64> {
        self.outbox.oldest_age(crate::time::unix_now())
    }

    fn enqueue(
        &self,
        class: Class,
        topic: &str,
        retain: bool,
        coalesce: Option<&str>,
        payload: impl FnOnce(u64) -> Vec<u8>,
    ) -> Result<(), LinkError> {
        // The push fsyncs on the caller's thread (milliseconds on flash): durability
        // before sending is the point, and the daemon's loop is the only caller.
        let (seq, shed) = match self.outbox.push(class, topic, retain, coalesce, payload) {
            Ok(r) => r,
            // Telemetry and events may be lost when the store cannot take them (a full
            // disk despite the reserve): the agent keeps running and says so. States and
            // statuses may not: their failure stops the daemon, which restarts.
            Err(e) if matches!(class, Class::Telemetry | Class::Event) => {
                tracing::error!(error = %e, %topic, "message not stored, dropped (disk full?)");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        // Tests wait for this line: from here the message survives kill -9.
        tracing::debug!(seq, %topic, "queued");
        if shed.any() {
            self.report_shed()?;
        }
        self.wake.notify_one();
        Ok(())
    }

    /// The shed counter travels as one coalesced notice: however often the outbox
    /// overflows while offline, the platform gets one event with the totals.
    fn report_shed(&self) -> Result<(), LinkError> {
        let Shed { telemetry, events } = self.outbox.shed_totals()?;
        tracing::warn!(telemetry, events, "outbox full: messages shed");
        let topic = self.topics.events();
        self.outbox.push(
            Class::Notice,
            &topic,
            false,
            Some("notice/outbox_shed"),
            |seq| {
                encode(&EventMsg {
                    v: contract::SCHEMA_VERSION,
                    seq,
                    ts: crate::time::unix_now(),
                    kind: EventKind::OutboxShed { telemetry, events },
                })
            },
        )?;
        Ok(())
    }

    /// Queue a SIM's retained state (QoS 1); a newer state of the same SIM replaces a
    /// queued older one.
    pub fn publish_state(&self, state: &SimState) -> Result<(), LinkError> {
        self.queue_state(state, Queueing::Coalesced)
    }

    fn queue_state(&self, state: &SimState, how: Queueing) -> Result<(), LinkError> {
        let topic = self.topics.sim_state(&state.sim.iccid);
        let payload = serde_json::to_vec(state)?;
        let coalesce = (how == Queueing::Coalesced).then_some(topic.as_str());
        self.enqueue(Class::State, &topic, true, coalesce, |_| payload)?;
        // A SIM new to this agent: the index names it, after its row.
        let new = {
            let mut indexed = self.indexed.lock().unwrap_or_else(|p| p.into_inner());
            let set = match indexed.as_mut() {
                Some(set) => set,
                None => indexed.insert(self.indexed_now()?),
            };
            set.insert(state.sim.iccid.clone())
        };
        if new {
            self.publish_index(Queueing::Coalesced)?;
        }
        Ok(())
    }

    /// Every ICCID with a row, from the store.
    fn indexed_now(&self) -> Result<BTreeSet<String>, LinkError> {
        Ok(self
            .store
            .all_observed()?
            .into_iter()
            .map(|o| o.iccid)
            .collect())
    }

    /// Queue the retained index.
    fn publish_index(&self, how: Queueing) -> Result<(), LinkError> {
        let iccids: Vec<String> = {
            let mut indexed = self.indexed.lock().unwrap_or_else(|p| p.into_inner());
            match indexed.as_ref() {
                Some(set) => set.iter().cloned().collect(),
                None => indexed
                    .insert(self.indexed_now()?)
                    .iter()
                    .cloned()
                    .collect(),
            }
        };
        let topic = self.topics.index();
        let payload = serde_json::to_vec(&SimIndex {
            v: contract::SCHEMA_VERSION,
            ts: crate::time::unix_now(),
            iccids,
        })?;
        let coalesce = (how == Queueing::Coalesced).then_some(topic.as_str());
        self.enqueue(Class::State, &topic, true, coalesce, |_| payload)
    }

    /// Queue every SIM's row again (coalesced with any queued version), then the index:
    /// for a broker (node) that does not hold this agent's retained state.
    pub(super) fn requeue_rows(&self) -> Result<u64, LinkError> {
        self.rows_again(Queueing::Coalesced)
    }

    /// A `sync`'s snapshot: every SIM's row, then the index, each queued as a message
    /// of its own; returns how many rows. Not coalesced: a newer row replacing a queued
    /// one goes to the outbox's tail, which would put it behind the sync's end marker
    /// (queued next by the caller) — the snapshot's rows must all come before it.
    pub fn sync_rows(&self) -> Result<u64, LinkError> {
        self.rows_again(Queueing::Snapshot)
    }

    fn rows_again(&self, how: Queueing) -> Result<u64, LinkError> {
        let mut rows = 0;
        for obs in self.store.all_observed()? {
            self.queue_state(&self.store.row(&obs)?, how)?;
            rows += 1;
        }
        self.publish_index(how)?;
        Ok(rows)
    }

    /// Queue an event (QoS 1, not retained).
    pub fn publish_event(&self, kind: EventKind) -> Result<(), LinkError> {
        let topic = self.topics.events();
        self.enqueue(Class::Event, &topic, false, None, |seq| {
            encode(&EventMsg {
                v: contract::SCHEMA_VERSION,
                seq,
                ts: crate::time::unix_now(),
                kind,
            })
        })
    }

    /// Queue an event once per `key`, ever (`Outbox::push_once`): `Ok(false)` when it
    /// was queued before. Unlike [`Self::publish_event`], a store that cannot take it
    /// is an error: the caller keeps the thing the event reports (an SMS on the modem)
    /// until it can.
    pub fn publish_event_once(&self, key: &str, kind: EventKind) -> Result<bool, LinkError> {
        let topic = self.topics.events();
        let queued =
            self.outbox
                .push_once(Class::Event, &topic, &format!("once/{key}"), |seq| {
                    encode(&EventMsg {
                        v: contract::SCHEMA_VERSION,
                        seq,
                        ts: crate::time::unix_now(),
                        kind,
                    })
                })?;
        if queued {
            tracing::debug!(%topic, %key, "queued once");
            self.wake.notify_one();
        }
        Ok(queued)
    }

    /// Queue a command's lifecycle status (QoS 1, not retained, never shed).
    pub fn publish_command_status(&self, status: &CommandStatus) -> Result<(), LinkError> {
        let topic = self.topics.command_status(&status.id);
        let payload = serde_json::to_vec(status)?;
        // Coalesced per command: a replay after a crash or a lost acknowledgement sends
        // only the latest status, never an older one after a newer one (MQTT.md,
        // "Lifecycle").
        self.enqueue(Class::Outcome, &topic, false, Some(&topic), |_| payload)
    }

    /// Note a SIM's usage counters; the latest sample per SIM goes out in the next batch,
    /// unless they are what the last batch already said.
    pub fn report_usage(&self, sample: UsageSample) {
        // Poisoned: a panic elsewhere while holding it; the maps are still maps.
        let mut u = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let key = (sample.month.clone(), sample.rx, sample.tx);
        if u.queued.get(&sample.iccid) == Some(&key) {
            u.pending.remove(&sample.iccid);
        } else {
            u.pending.insert(sample.iccid.clone(), sample);
        }
    }

    /// Queue one batch of the usage noted since the last one (nothing when none).
    pub fn flush_usage(&self) -> Result<(), LinkError> {
        let sims: Vec<UsageSample> = {
            let mut u = self.usage.lock().unwrap_or_else(|p| p.into_inner());
            let sims: Vec<UsageSample> = std::mem::take(&mut u.pending).into_values().collect();
            for s in &sims {
                u.queued
                    .insert(s.iccid.clone(), (s.month.clone(), s.rx, s.tx));
            }
            sims
        };
        if sims.is_empty() {
            return Ok(());
        }
        let topic = self.topics.usage();
        self.enqueue(Class::Telemetry, &topic, false, None, |seq| {
            encode(&UsageBatch {
                v: contract::SCHEMA_VERSION,
                seq,
                ts: crate::time::unix_now(),
                sims,
            })
        })
    }

    /// Acknowledge an inbound message (after storing what it said). Never waits: the
    /// daemon's loop must not stall on a full request channel; an acknowledgement not
    /// sent means a redelivery, which the store answers.
    pub fn ack(&self, token: AckToken) {
        let Some(publish) = token.0 else {
            return;
        };
        if let Err(e) = self.client.try_ack(&publish) {
            tracing::debug!(error = %e, "ack not sent; the broker will redeliver");
        }
    }
}

/// How a retained message of the agent's state is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queueing {
    /// Replacing a queued older version of the same topic (MQTT.md, "Durability").
    Coalesced,
    /// A message of its own, where it stands in the queue (a `sync`'s snapshot).
    Snapshot,
}
