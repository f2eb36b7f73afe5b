//! The platform's end of the contract: a plain MQTT client for the platform-side tools
//! (`simgate watch`, `simgate platform`) and the tests' subscribers. Unlike the agent's
//! link it has no outbox and no persistent session: it shows or sends one thing and
//! ends. It keeps rumqttc inside `src/link/` and classifies every topic through
//! [`Topics::outbound`], so no caller spells a topic.

use super::{client_options, ClientAccess, LinkError};
use crate::contract::{AgentTopic, Topics};

/// A peer's failure: its setup (URL, TLS files) or the broker connection.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Setup(#[from] LinkError),
    #[error("broker: {0}")]
    Connection(#[from] rumqttc::ConnectionError),
    #[error("broker client: {0}")]
    Client(#[from] rumqttc::ClientError),
}
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};

/// What the broker told a peer.
#[derive(Debug)]
pub enum PeerEvent {
    /// The broker accepted the connection (also after a reconnect): subscribe now.
    Connected,
    /// A subscription was acknowledged.
    Subscribed,
    /// A QoS 1 publish of ours was acknowledged.
    Acked,
    /// A message on one of the agent's topics, classified.
    Message { topic: AgentTopic, payload: Vec<u8> },
    /// A message outside the agent's subtree (a wider subscription: another agent's
    /// health, for `simgate watch` to say which agents exist).
    Foreign { topic: String },
}

/// One platform-side connection to one agent's topics.
pub struct Peer {
    client: AsyncClient,
    events: EventLoop,
    topics: Topics,
}

impl std::fmt::Debug for Peer {
    // rumqttc's event loop has no Debug of its own.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("topics", &self.topics)
            .finish()
    }
}

impl Peer {
    /// A client named `simgate-<tag>-<pid>` for agent `agent_id` (already validated by
    /// `config::validate_agent_id`). Nothing is sent until [`Peer::next`] is polled.
    pub fn new(
        broker: &str,
        agent_id: &str,
        tag: &str,
        access: &ClientAccess,
    ) -> Result<Peer, LinkError> {
        let opts = client_options(
            broker,
            format!("simgate-{tag}-{}", std::process::id()),
            access,
        )?;
        let (client, events) = AsyncClient::new(opts, 16);
        Ok(Peer {
            client,
            events,
            topics: Topics::new(agent_id),
        })
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Subscribe (QoS 1) to a filter built by [`Topics`].
    pub async fn subscribe(&self, filter: String) -> Result<(), PeerError> {
        self.client.subscribe(filter, QoS::AtLeastOnce).await?;
        Ok(())
    }

    /// Publish (QoS 1) to a topic built by [`Topics`].
    pub async fn publish(
        &self,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), PeerError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await?;
        Ok(())
    }

    /// The next thing the broker said; packets a peer has no use for are skipped. A
    /// connection error is returned as it is: polling again reconnects.
    pub async fn next(&mut self) -> Result<PeerEvent, PeerError> {
        loop {
            let ev = self.events.poll().await?;
            match ev {
                Event::Incoming(Packet::ConnAck(_)) => return Ok(PeerEvent::Connected),
                Event::Incoming(Packet::SubAck(_)) => return Ok(PeerEvent::Subscribed),
                Event::Incoming(Packet::PubAck(_)) => return Ok(PeerEvent::Acked),
                Event::Incoming(Packet::Publish(p)) => {
                    return Ok(match self.topics.outbound(&p.topic) {
                        Some(topic) => PeerEvent::Message {
                            topic,
                            payload: p.payload.to_vec(),
                        },
                        None => PeerEvent::Foreign {
                            topic: p.topic.to_string(),
                        },
                    });
                }
                _ => {}
            }
        }
    }
}
