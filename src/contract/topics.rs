//! The topics of one agent's subtree, `simgate/v1/<agent-id>/...` (MQTT.md, "Topics"):
//! built for the agent, classified for the agent (inbound) and for the platform side
//! (outbound).

/// Topic builder for one agent.
#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
}

/// Any topic of one agent's subtree, as the platform side sees it (`Topics::outbound`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentTopic {
    Health,
    SimState { iccid: String },
    SimPlatform { iccid: String },
    Events,
    Usage,
    Command,
    CommandStatus { id: String },
    Index,
}

/// What an inbound topic is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A platform command (`cmd`).
    Command,
    /// The platform's record for a SIM (`sim/<iccid>/platform`).
    PlatformRecord { iccid: String },
}

impl Topics {
    /// `agent_id` must have passed `config::validate_agent_id` (no `/`, `+`, `#`).
    pub fn new(agent_id: &str) -> Topics {
        Topics {
            prefix: format!("simgate/v1/{agent_id}"),
        }
    }

    /// Everything of this agent, for subscribers such as `simgate watch`.
    pub fn all(&self) -> String {
        format!("{}/#", self.prefix)
    }

    /// Agent health: agent → platform, retained, QoS 1; the last will sets it offline.
    pub fn health(&self) -> String {
        format!("{}/health", self.prefix)
    }

    /// A SIM's state row: agent → platform, retained, QoS 1. `iccid` is validated digits.
    pub fn sim_state(&self, iccid: &str) -> String {
        format!("{}/sim/{iccid}/state", self.prefix)
    }

    /// The platform's record for a SIM: platform → agent, retained by the platform, QoS 1.
    pub fn sim_platform(&self, iccid: &str) -> String {
        format!("{}/sim/{iccid}/platform", self.prefix)
    }

    /// Filter the agent subscribes to for platform records.
    pub fn sim_platform_filter(&self) -> String {
        format!("{}/sim/+/platform", self.prefix)
    }

    /// The ICCIDs this agent keeps a row for: agent → platform, retained, QoS 1. For a
    /// platform on a broker that serves retained messages only to exact topics, or only
    /// on the node they were published on (MQTT.md, "Clusters").
    pub fn index(&self) -> String {
        format!("{}/index", self.prefix)
    }

    /// Events: agent → platform, QoS 1, not retained.
    pub fn events(&self) -> String {
        format!("{}/events", self.prefix)
    }

    /// Usage telemetry batches: agent → platform, QoS 1, not retained.
    pub fn usage(&self) -> String {
        format!("{}/usage", self.prefix)
    }

    /// Commands: platform → agent, QoS 1, not retained (the broker queues them for the
    /// agent's persistent session while it is offline).
    pub fn commands(&self) -> String {
        format!("{}/cmd", self.prefix)
    }

    /// A command's lifecycle: agent → platform, QoS 1, not retained. `id` is validated.
    pub fn command_status(&self, id: &str) -> String {
        format!("{}/cmd/{id}/status", self.prefix)
    }

    /// Filter for every command status (platform side).
    pub fn command_status_filter(&self) -> String {
        format!("{}/cmd/+/status", self.prefix)
    }

    /// Classify any topic of this agent's subtree (platform side: `simgate watch`,
    /// `simgate platform`); None for a topic the contract does not define.
    pub fn outbound(&self, topic: &str) -> Option<AgentTopic> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        Some(match parts.as_slice() {
            ["health"] => AgentTopic::Health,
            ["events"] => AgentTopic::Events,
            ["usage"] => AgentTopic::Usage,
            ["index"] => AgentTopic::Index,
            ["cmd"] => AgentTopic::Command,
            ["cmd", id, "status"] => AgentTopic::CommandStatus { id: id.to_string() },
            ["sim", iccid, "state"] => AgentTopic::SimState {
                iccid: iccid.to_string(),
            },
            ["sim", iccid, "platform"] => AgentTopic::SimPlatform {
                iccid: iccid.to_string(),
            },
            _ => return None,
        })
    }

    /// Classify a topic the agent received; None for anything it does not consume.
    pub fn inbound(&self, topic: &str) -> Option<Inbound> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        if rest == "cmd" {
            return Some(Inbound::Command);
        }
        let iccid = rest.strip_prefix("sim/")?.strip_suffix("/platform")?;
        Some(Inbound::PlatformRecord {
            iccid: iccid.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_the_builder_spells_is_classified_back() {
        let t = Topics::new("gw-1");
        let iccid = "8988211000000430010";
        assert_eq!(t.outbound(&t.health()), Some(AgentTopic::Health));
        assert_eq!(t.outbound(&t.events()), Some(AgentTopic::Events));
        assert_eq!(t.outbound(&t.usage()), Some(AgentTopic::Usage));
        assert_eq!(t.outbound(&t.commands()), Some(AgentTopic::Command));
        assert_eq!(
            t.outbound(&t.sim_state(iccid)),
            Some(AgentTopic::SimState {
                iccid: iccid.into()
            })
        );
        assert_eq!(
            t.outbound(&t.sim_platform(iccid)),
            Some(AgentTopic::SimPlatform {
                iccid: iccid.into()
            })
        );
        assert_eq!(
            t.outbound(&t.command_status("c-1")),
            Some(AgentTopic::CommandStatus { id: "c-1".into() })
        );
        // Another agent's topics, and topics the contract does not define, are not ours.
        assert_eq!(t.outbound(&Topics::new("gw-2").health()), None);
        assert_eq!(t.outbound("simgate/v1/gw-1/sim/x/other"), None);
        assert_eq!(t.outbound("simgate/v1/gw-10/health"), None);
    }

    #[test]
    fn inbound_topics_are_classified_and_foreign_ones_ignored() {
        let t = Topics::new("gw-1");
        assert_eq!(t.inbound("simgate/v1/gw-1/cmd"), Some(Inbound::Command));
        assert_eq!(
            t.inbound("simgate/v1/gw-1/sim/8988211000000430010/platform"),
            Some(Inbound::PlatformRecord {
                iccid: "8988211000000430010".into()
            })
        );
        assert_eq!(t.inbound("simgate/v1/gw-10/cmd"), None);
        assert_eq!(t.inbound("simgate/v1/gw-1/health"), None);
    }
}
