//! The MQTT contract, version 1: every topic string and payload shape lives here and
//! nowhere else. Documented for platform engineers in MQTT.md (beside the README).
//!
//! Topics sit under a per-agent prefix `simgate/v1/<agent-id>/` so a broker ACL can
//! confine each agent to its own subtree (`pattern readwrite simgate/v1/%c/#`).

use crate::sim::{Batch, FormFactor, InSession, Location, Observed, Status};
use serde::{Deserialize, Serialize};

/// Payload schema version carried in every message as `"v"`.
pub const SCHEMA_VERSION: u32 = 1;

/// Topic builder for one agent.
#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    /// `agent_id` must have passed `config::validate_agent_id` (no `/`, `+`, `#`).
    pub fn new(agent_id: &str) -> Topics {
        Topics {
            prefix: format!("simgate/v1/{agent_id}"),
        }
    }

    /// Agent health: retained, QoS 1; the last will sets it offline.
    pub fn health(&self) -> String {
        format!("{}/health", self.prefix)
    }

    /// A SIM's state row: retained, QoS 1. `iccid` is validated hex digits.
    pub fn sim_state(&self, iccid: &str) -> String {
        format!("{}/sim/{iccid}/state", self.prefix)
    }
}

/// Agent health payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub v: u32,
    /// "online" or "offline".
    pub state: String,
    pub ts: u64,
    pub version: String,
}

impl Health {
    pub fn new(online: bool, ts: u64) -> Health {
        Health {
            v: SCHEMA_VERSION,
            state: if online { "online" } else { "offline" }.into(),
            ts,
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// A SIM's retained state message: the row of the platform's SIMs page as simgate sees
/// it. Fields simgate does not know are left out (not null) to keep payloads small.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimState {
    pub v: u32,
    pub iccid: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<Status>,
    pub in_session: InSession,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub form_factor: Option<FormFactor>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub imsi: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub imei: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub operator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mcc_mnc: Option<String>,
    pub location: Location,
    pub present: bool,
    pub observed_at: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub problem: Option<String>,
    /// Service provider name read from the SIM.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub spn: Option<String>,
    /// An eUICC with no enabled profile (a Blank eSIM); the status stays the platform's.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub blank_esim: bool,
    /// Batch attributes from a reader station: `labels`, `company`, `note`.
    #[serde(flatten, default)]
    pub batch: Batch,
}

impl SimState {
    pub fn from_observed(obs: &Observed) -> SimState {
        SimState {
            v: SCHEMA_VERSION,
            iccid: obs.iccid.clone(),
            status: obs.local_status(),
            in_session: obs.in_session,
            form_factor: obs.form_factor,
            eid: obs.eid.clone(),
            imsi: obs.imsi.clone(),
            imei: obs.imei.clone(),
            operator: obs.operator.clone(),
            mcc_mnc: obs.mcc_mnc.clone(),
            location: obs.location.clone(),
            present: obs.present,
            observed_at: obs.observed_at,
            problem: obs.problem.clone(),
            spn: obs.spn.clone(),
            blank_esim: obs.blank_esim,
            batch: obs.batch.clone(),
        }
    }
}
