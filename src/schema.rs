//! The MQTT contract in machine-readable form: a JSON Schema (draft 2020-12) per payload,
//! derived from the types of `contract` (schemars reads their serde attributes, so a
//! field added, renamed or made optional there changes the schema), and an AsyncAPI 3.0
//! document naming every topic with its direction, QoS, retain flag and payload.
//!
//! The files live in the repository's schema/ (shipped in the package's docs beside
//! MQTT.md). A test regenerates them and fails when they differ from the committed ones
//! (`SIMGATE_WRITE_SCHEMA=1 cargo test --lib schema::` rewrites them), and validates
//! every JSON example of MQTT.md and the code's own payloads against them, so the prose,
//! the files and the wire cannot drift apart.

use crate::contract::{
    CommandMsg, CommandStatus, EventMsg, Health, PlatformMsg, SimIndex, SimState, UsageBatch,
};
use schemars::generate::SchemaSettings;
use serde_json::{json, Value};

/// One payload of the contract: its schema file and where it travels.
#[derive(Debug, Clone, Copy)]
pub struct Payload {
    /// The file under schema/, `<name>.schema.json`.
    pub name: &'static str,
    /// The topic under `simgate/v1/{agentId}/`.
    pub topic: &'static str,
    /// The agent publishes it (else: the platform does, the agent subscribes).
    pub outbound: bool,
    pub retain: bool,
    /// One line for the AsyncAPI document.
    pub summary: &'static str,
}

/// Every payload, in MQTT.md's order of topics. All go at QoS 1.
pub const PAYLOADS: &[Payload] = &[
    Payload {
        name: "health",
        topic: "health",
        outbound: true,
        retain: true,
        summary: "The agent is online or offline (the last will says offline, ts 0).",
    },
    Payload {
        name: "sim-state",
        topic: "sim/{iccid}/state",
        outbound: true,
        retain: true,
        summary: "A SIM's whole row: what the agent observed plus the cached platform record.",
    },
    Payload {
        name: "index",
        topic: "index",
        outbound: true,
        retain: true,
        summary:
            "Every ICCID the agent has a state row for, sorted (for exact-topic subscriptions).",
    },
    Payload {
        name: "event",
        topic: "events",
        outbound: true,
        retain: false,
        summary: "Something happened: numbered by seq without gaps; one shape per type.",
    },
    Payload {
        name: "usage",
        topic: "usage",
        outbound: true,
        retain: false,
        summary: "Data counters of the SIMs whose counters moved, batched per interval.",
    },
    Payload {
        name: "command-status",
        topic: "cmd/{id}/status",
        outbound: true,
        retain: false,
        summary: "A command's lifecycle: received, executing, successful or failed.",
    },
    Payload {
        name: "platform-record",
        topic: "sim/{iccid}/platform",
        outbound: false,
        retain: true,
        summary: "The platform's record of a SIM (retained by the platform; empty clears it).",
    },
    Payload {
        name: "command",
        topic: "cmd",
        outbound: false,
        retain: false,
        summary: "A command for one SIM, idempotent by its id.",
    },
];

/// The JSON Schema of one payload. Outbound payloads are described as the agent writes
/// them, inbound ones as it reads them (schemars' serialize and deserialize contracts:
/// a field with a default is optional to send, one skipped when empty optional to read).
pub fn schema(name: &str) -> Option<Value> {
    let out = SchemaSettings::draft2020_12().for_serialize();
    let inb = SchemaSettings::draft2020_12().for_deserialize();
    let mut s = match name {
        "health" => out.into_generator().into_root_schema_for::<Health>(),
        "sim-state" => out.into_generator().into_root_schema_for::<SimState>(),
        "index" => out.into_generator().into_root_schema_for::<SimIndex>(),
        "event" => out.into_generator().into_root_schema_for::<EventMsg>(),
        "usage" => out.into_generator().into_root_schema_for::<UsageBatch>(),
        "command-status" => out.into_generator().into_root_schema_for::<CommandStatus>(),
        "platform-record" => inb.into_generator().into_root_schema_for::<PlatformMsg>(),
        "command" => inb.into_generator().into_root_schema_for::<CommandMsg>(),
        _ => return None,
    }
    .to_value();
    not_null(&mut s);
    if let Value::Object(o) = &mut s {
        o.insert(
            "$id".into(),
            json!(format!(
                "https://simgate.invalid/schema/v1/{name}.schema.json"
            )),
        );
    }
    Some(s)
}

/// Fields a side does not know are left out, never null (MQTT.md): schemars writes an
/// `Option` as "or null"; here it is only "optional" (not in `required`).
fn not_null(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::Array(types)) = o.get_mut("type") {
                types.retain(|t| t != "null");
                if let [one] = types.as_slice() {
                    let one = one.clone();
                    o.insert("type".into(), one);
                }
            }
            if let Some(Value::Array(any)) = o.get_mut("anyOf") {
                any.retain(|s| s.get("type").is_none_or(|t| t != "null"));
                if let [one] = any.as_slice() {
                    let one = one.clone();
                    o.remove("anyOf");
                    if let Value::Object(inner) = one {
                        o.extend(inner);
                    }
                }
            }
            o.values_mut().for_each(not_null);
        }
        Value::Array(a) => a.iter_mut().for_each(not_null),
        _ => {}
    }
}

/// The AsyncAPI 3.0 document of the contract: channels (topics with their parameters),
/// operations (who sends, who receives), messages pointing at the schema files.
pub fn asyncapi() -> Value {
    let mut channels = serde_json::Map::new();
    let mut operations = serde_json::Map::new();
    for p in PAYLOADS {
        let key = p.name.replace('-', "_");
        let mut params = serde_json::Map::new();
        params.insert(
            "agentId".into(),
            json!({"description": "The agent's id, also its MQTT client id: [A-Za-z0-9._-]{1,64}"}),
        );
        if p.topic.contains("{iccid}") {
            params.insert(
                "iccid".into(),
                json!({"description": "The SIM's key: an ICCID of 18-20 digits (A-E allowed), or a Blank eSIM's EID (32 digits)"}),
            );
        }
        if p.topic.contains("{id}") {
            params.insert(
                "id".into(),
                json!({"description": "The command's id: [A-Za-z0-9._-]{1,64}"}),
            );
        }
        channels.insert(
            key.clone(),
            json!({
                "address": format!("simgate/v1/{{agentId}}/{}", p.topic),
                "parameters": params,
                "messages": {
                    (key.clone()): {
                        "name": key,
                        "summary": p.summary,
                        "contentType": "application/json",
                        "payload": {
                            "schemaFormat": "application/schema+json;version=draft-2020-12",
                            "schema": {"$ref": format!("./{}.schema.json", p.name)},
                        },
                        "bindings": {"mqtt": {"qos": 1, "retain": p.retain, "bindingVersion": "0.2.0"}},
                    }
                },
            }),
        );
        operations.insert(
            format!("{}_{key}", if p.outbound { "publish" } else { "receive" }),
            json!({
                // From the agent's side: it sends what it publishes, receives the rest.
                "action": if p.outbound { "send" } else { "receive" },
                "channel": {"$ref": format!("#/channels/{key}")},
                "summary": p.summary,
                "bindings": {"mqtt": {"qos": 1, "retain": p.retain, "bindingVersion": "0.2.0"}},
            }),
        );
    }
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "simgate agent ↔ platform",
            "version": format!("{}", crate::contract::SCHEMA_VERSION),
            "description": "The MQTT contract of a simgate agent, version 1 (MQTT.md). \
                Every payload is a UTF-8 JSON object carrying \"v\": 1; unknown fields are \
                ignored by both sides; fields a side does not know are left out, never null.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "broker": {
                "host": "{host}",
                "protocol": "mqtt",
                "protocolVersion": "3.1.1",
                "description": "mqtt:// (1883) or mqtts:// (8883, TLS with optional client certificates)",
                "variables": {"host": {"default": "localhost:1883"}},
                "bindings": {"mqtt": {"cleanSession": false, "keepAlive": 300, "lastWill": {
                    "topic": "simgate/v1/{agentId}/health", "qos": 1, "retain": true,
                }, "bindingVersion": "0.2.0"}},
            }
        },
        "channels": channels,
        "operations": operations,
    })
}

/// Every file of schema/: name and pretty JSON (with a final newline).
pub fn files() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = PAYLOADS
        .iter()
        .filter_map(|p| Some((format!("{}.schema.json", p.name), schema(p.name)?)))
        .chain([("asyncapi.json".to_string(), asyncapi())])
        .map(|(n, v)| {
            // serde_json's pretty printer cannot fail on a Value.
            let text = serde_json::to_string_pretty(&v).unwrap_or_default();
            (n, text + "\n")
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests;
