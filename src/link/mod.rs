//! The platform link: one MQTT connection per agent (rumqttc), the contract's topics and
//! payloads (`contract`), health with a last will.
//!
//! Only this module knows MQTT. The daemon hands it SIM states; it keeps the latest
//! state per SIM and republishes all of them after every (re)connect, because rumqttc
//! drops unacknowledged messages on some reconnects.

pub mod contract;

use crate::config::BrokerUrl;
use contract::{Health, SimState, Topics};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("broker URL: {0}")]
    Url(String),
    #[error("mqtts:// is not supported by this build yet")]
    TlsUnsupported,
    #[error("payload: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Settings the link needs, taken from the configuration.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    pub url: String,
    pub agent_id: String,
    pub keepalive: Duration,
    pub username: String,
    pub password: String,
}

/// Handle used by the daemon to publish. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Link {
    client: AsyncClient,
    topics: Topics,
    /// Latest retained payload per topic, republished on every connect.
    retained: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl Link {
    /// Connect (in the background: the link keeps retrying) and return the handle and
    /// the task driving the connection. The task ends when `cancel` fires, after
    /// publishing the agent offline.
    pub fn start(
        settings: &LinkSettings,
        cancel: CancellationToken,
    ) -> Result<(Link, tokio::task::JoinHandle<()>), LinkError> {
        let url = BrokerUrl::parse(&settings.url).map_err(LinkError::Url)?;
        if url.tls {
            return Err(LinkError::TlsUnsupported);
        }
        let topics = Topics::new(&settings.agent_id);
        let mut opts = MqttOptions::new(settings.agent_id.clone(), url.host, url.port);
        opts.set_keep_alive(settings.keepalive);
        if !settings.username.is_empty() {
            opts.set_credentials(settings.username.clone(), settings.password.clone());
        }
        let will = serde_json::to_vec(&Health::new(false, 0))?;
        opts.set_last_will(LastWill::new(topics.health(), will, QoS::AtLeastOnce, true));
        let (client, eventloop) = AsyncClient::new(opts, 64);
        let link = Link {
            client,
            topics,
            retained: Arc::new(Mutex::new(BTreeMap::new())),
        };
        let task = tokio::spawn(drive(link.clone(), eventloop, cancel));
        Ok((link, task))
    }

    /// Publish a SIM's retained state (QoS 1).
    pub async fn publish_state(&self, state: &SimState) -> Result<(), LinkError> {
        let topic = self.topics.sim_state(&state.iccid);
        let payload = serde_json::to_vec(state)?;
        self.retained
            .lock()
            // A poisoned lock means a panic elsewhere while holding it; the map is
            // still a valid map, so keep going with it.
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.clone(), payload.clone());
        self.publish(topic, payload).await;
        Ok(())
    }

    async fn publish(&self, topic: String, payload: Vec<u8>) {
        // `publish` only fails when the event loop is gone (shutdown); the retained map
        // will republish after the next connect.
        if let Err(e) = self
            .client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .await
        {
            tracing::debug!(error = %e, "publish queued after shutdown");
        }
    }
}

async fn drive(link: Link, mut eventloop: EventLoop, cancel: CancellationToken) {
    let mut backoff = Backoff::new();
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => break,
            ev = eventloop.poll() => ev,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                tracing::info!("connected to broker");
                backoff.reset();
                let health = serde_json::to_vec(&Health::new(true, crate::time::unix_now()))
                    .unwrap_or_default();
                link.publish(link.topics.health(), health).await;
                let states: Vec<(String, Vec<u8>)> = link
                    .retained
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .map(|(t, p)| (t.clone(), p.clone()))
                    .collect();
                for (topic, payload) in states {
                    link.publish(topic, payload).await;
                }
            }
            Ok(_) => {}
            Err(e) => {
                let wait = backoff.next_wait();
                tracing::warn!(error = %e, retry_in = ?wait, "broker connection lost");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    // Graceful stop: say offline ourselves (the will is only sent on an unclean drop),
    // then disconnect, driving the loop until both went out or a short grace expired.
    let offline =
        serde_json::to_vec(&Health::new(false, crate::time::unix_now())).unwrap_or_default();
    let _ = link
        .client
        .try_publish(link.topics.health(), QoS::AtLeastOnce, true, offline);
    let _ = link.client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(ev) = eventloop.poll().await {
            if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
}

/// Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff
/// And Jitter"): a fleet reconnecting after a broker restart spreads out instead of
/// arriving as one herd.
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    rng: u64,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(500);
    const CAP: Duration = Duration::from_secs(60);

    pub fn new() -> Backoff {
        // Seed from the clock and the pid: agents started together still diverge.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id()).rotate_left(32);
        Backoff {
            attempt: 0,
            rng: seed | 1,
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next wait: uniform in [0, min(cap, base·2^attempt)].
    pub fn next_wait(&mut self) -> Duration {
        let ceiling = Self::BASE
            .saturating_mul(1 << self.attempt.min(16))
            .min(Self::CAP);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64*: enough randomness for jitter, no dependency.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let ms = ceiling.as_millis() as u64;
        Duration::from_millis(if ms == 0 { 0 } else { r % (ms + 1) })
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_a_doubling_ceiling_capped_at_a_minute() {
        let mut b = Backoff::new();
        for attempt in 0..30u32 {
            let ceiling = Backoff::BASE
                .saturating_mul(1 << attempt.min(16))
                .min(Backoff::CAP);
            assert!(b.next_wait() <= ceiling);
        }
    }

    #[test]
    fn backoff_is_jittered() {
        let mut b = Backoff::new();
        let waits: Vec<Duration> = (0..20)
            .map(|_| {
                b.reset();
                b.attempt = 10;
                b.next_wait()
            })
            .collect();
        assert!(
            waits.iter().any(|w| *w != waits[0]),
            "20 equal waits: no jitter"
        );
    }
}
