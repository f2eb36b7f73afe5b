//! What the platform sends: a command or a platform record, parsed and checked by the
//! contract, handed to the daemon on a bounded queue and acknowledged only once the
//! daemon stored it; an oversized one discarded (`drain`) and refused as `too_large`.

use super::drain;
use super::settings::MAX_PACKET_BYTES;
use crate::contract::{self, Command, Inbound, Refusal, Topics};
use crate::sim::PlatformRecord;
use rumqttc::{Publish, QoS};
use tokio::sync::mpsc;

/// Something the platform sent, for the daemon. Acknowledge it with
/// [`Link::ack`](super::Link::ack) once it is stored: until then the broker will deliver
/// it again after a reconnect.
#[derive(Debug)]
pub enum Received {
    Command {
        command: Result<Command, Refusal>,
        ack: AckToken,
    },
    PlatformRecord {
        iccid: String,
        /// Ok(None): the platform cleared its retained record.
        record: Result<Option<PlatformRecord>, Refusal>,
        ack: AckToken,
    },
}

/// The MQTT acknowledgement owed for an inbound message (None: already acknowledged,
/// a poison message the link discarded, see `drain`).
#[derive(Debug)]
pub struct AckToken(pub(super) Option<Publish>);

impl AckToken {
    /// Nothing to acknowledge: a command that came from the station page (src/http).
    pub fn local() -> AckToken {
        AckToken(None)
    }

    /// Nothing owed: for the daemon's property test, which hands it messages of its own.
    #[cfg(all(test, feature = "fuzzing"))]
    pub(crate) fn none() -> AckToken {
        AckToken(None)
    }
}

/// What an inbound message on `topic` means: a command or a platform record, each
/// parsed and checked by the contract (a record's refusal carries the payload's
/// fingerprint). A topic that is not ours gives its acknowledgement back.
pub(crate) fn received(
    topics: &Topics,
    topic: &str,
    payload: &[u8],
    now: u64,
    ack: AckToken,
) -> Result<Received, AckToken> {
    match topics.inbound(topic) {
        Some(Inbound::Command) => Ok(Received::Command {
            command: contract::parse_command(payload, now),
            ack,
        }),
        Some(Inbound::PlatformRecord { iccid }) => {
            let record = if contract::valid_iccid(&iccid) {
                contract::parse_platform_record(payload)
            } else {
                Err(Refusal::new(
                    contract::RefusalCode::InvalidField,
                    "topic: not an ICCID (18-20 digits, A-E allowed) or an EID (32 digits)",
                ))
            }
            .map_err(|mut r| {
                r.payload_hash = contract::payload_hash(payload);
                r
            });
            Ok(Received::PlatformRecord { iccid, record, ack })
        }
        None => Err(ack),
    }
}

/// Inbound messages (commands, platform records) waiting for the daemon, at most.
/// Above the broker's in-flight window for QoS 1 (mosquitto's max_inflight_messages: 20
/// by default), so in practice only a QoS 0 flood meets the bound.
pub const INBOUND_QUEUE: usize = 256;

/// The driver's side of what the platform sends: the daemon's bounded queue, and the
/// count of what a flood made it drop.
pub(super) struct Inbox {
    topics: Topics,
    received: mpsc::Sender<Received>,
    /// QoS 0 messages dropped because the daemon was `INBOUND_QUEUE` behind.
    dropped_qos0: u64,
}

impl Inbox {
    pub(super) fn new(topics: Topics, received: mpsc::Sender<Received>) -> Inbox {
        Inbox {
            topics,
            received,
            dropped_qos0: 0,
        }
    }

    /// Hand an inbound message to the daemon; the acknowledgement of one that is not
    /// ours to consume (a broker delivering outside our filters) comes back, for the
    /// driver to send so it does not come back.
    pub(super) async fn on_publish(&mut self, p: Publish) -> Option<AckToken> {
        let now = crate::time::unix_now();
        let (topic, payload, qos) = (p.topic.clone(), p.payload.clone(), p.qos);
        let msg = match received(&self.topics, &topic, &payload, now, AckToken(Some(p))) {
            Ok(msg) => msg,
            Err(ack) => {
                tracing::debug!(%topic, "ignored inbound message");
                return Some(ack);
            }
        };
        // The queue to the daemon is bounded (INBOUND_QUEUE): a flood must not grow
        // memory (5 000 hostile QoS 0 payloads queued 17 MB that the allocator kept).
        // QoS 1 messages are bounded by the broker's in-flight window anyway (manual
        // acks; mosquitto: 20), and wait here for room. A QoS 0 message arriving while
        // the daemon is that far behind is dropped: at most once is what its sender
        // asked for, and the contract's messages are QoS 1 (MQTT.md).
        let msg = match self.received.try_send(msg) {
            Ok(()) => return None,
            Err(mpsc::error::TrySendError::Full(msg)) if qos != QoS::AtMostOnce => msg,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped_qos0 += 1;
                // Said at 1, 2, 4, 8 ... drops: a flood does not flood the journal too.
                if self.dropped_qos0.is_power_of_two() {
                    tracing::warn!(%topic, dropped = self.dropped_qos0, "QoS 0 message dropped: the agent is {INBOUND_QUEUE} messages behind");
                }
                return None;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!("daemon gone; inbound message left unacknowledged");
                return None;
            }
        };
        if self.received.send(msg).await.is_err() {
            tracing::debug!("daemon gone; inbound message left unacknowledged");
        }
        None
    }

    /// Discard what rumqttc cannot read (see `drain`), and tell the daemon, which
    /// refuses it as `too_large` like any oversized payload.
    pub(super) async fn drain(&mut self, access: &drain::Access<'_>) {
        let found = match drain::drain(access, MAX_PACKET_BYTES).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "poison message not discarded; retrying after the next connect");
                return;
            }
        };
        for d in found {
            tracing::warn!(topic = %d.topic, bytes = d.bytes, "oversized message acknowledged and discarded");
            let mut refusal = Refusal::new(
                contract::RefusalCode::TooLarge,
                format!(
                    "payload of {} bytes exceeds the {MAX_PACKET_BYTES} bytes the agent reads; discarded",
                    d.bytes
                ),
            );
            // Unread: its size stands for it.
            refusal.payload_hash = contract::payload_hash(&d.bytes.to_be_bytes());
            let msg = match self.topics.inbound(&d.topic) {
                Some(Inbound::Command) => Received::Command {
                    command: Err(refusal),
                    ack: AckToken(None),
                },
                Some(Inbound::PlatformRecord { iccid }) => Received::PlatformRecord {
                    iccid,
                    record: Err(refusal),
                    ack: AckToken(None),
                },
                None => continue,
            };
            let _ = self.received.send(msg).await;
        }
    }
}
