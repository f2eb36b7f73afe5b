//! What a test's subscriber sees: one message per line, each of the agent's own payloads
//! checked against the contract's JSON Schemas on the way.

use super::{which, Lines, Proc, INSTALL_HINT};
use std::process::{Command, Stdio};
use std::time::Duration;

/// One message seen by a subscriber.
#[derive(Debug, Clone)]
pub struct Msg {
    pub retained: bool,
    pub topic: String,
    pub payload: serde_json::Value,
}

#[derive(Debug)]
pub struct Sub {
    _proc: Proc,
    pub lines: Lines,
}

impl Sub {
    /// The next message (debug lines skipped) satisfying `pred`. The deadline only
    /// bounds a test that fails: a loaded 2-core CI machine has taken longer than 15 s
    /// to carry a card's read to the broker.
    pub fn expect(&mut self, what: &str, pred: impl FnMut(&Msg) -> bool) -> Msg {
        self.expect_within(what, Duration::from_secs(60), pred)
    }

    /// As `expect`, with its own deadline (a deadline, never a measured time).
    pub fn expect_within(
        &mut self,
        what: &str,
        limit: Duration,
        mut pred: impl FnMut(&Msg) -> bool,
    ) -> Msg {
        let mut found = None;
        self.lines
            .expect(what, limit, |line| match parse_msg(line) {
                Some(m) if pred(&m) => {
                    found = Some(m);
                    true
                }
                _ => false,
            });
        found.expect("expect returned on a matching line")
    }
}

/// [`Broker::subscribe_with`] on the broker at loopback `port` (a cluster's node).
pub fn subscribe_at(port: u16, topic: &str, extra: &[&str]) -> Sub {
    assert!(
        which("mosquitto_sub"),
        "mosquitto_sub not found: {INSTALL_HINT}"
    );
    let mut proc = Proc::spawn(
        "mosquitto_sub",
        // stdbuf: mosquitto_sub's stdout is block-buffered on a pipe.
        Command::new("stdbuf")
            .args([
                "-oL",
                "mosquitto_sub",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-q",
                "1",
                "-d",
                "-t",
                topic,
                "-F",
                "%r %t %p",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut lines = Lines::new(proc.child.stdout.take().expect("piped stdout"));
    lines.expect("mosquitto_sub's SUBACK", Duration::from_secs(10), |l| {
        l.contains("SUBACK")
    });
    Sub { _proc: proc, lines }
}

/// One subscriber line (`retain topic payload`) as a message; None for its debug lines.
pub fn parse_msg(line: &str) -> Option<Msg> {
    if line.starts_with("Client ") || line.starts_with("Subscribed (mid") {
        return None; // mosquitto_sub -d debug output
    }
    let (retain, rest) = line.split_once(' ')?;
    let (topic, payload) = rest.split_once(' ')?;
    let msg = Msg {
        retained: retain == "1",
        topic: topic.to_string(),
        payload: serde_json::from_str(payload)
            .unwrap_or(serde_json::Value::String(payload.to_string())),
    };
    if let Err(e) = wire_schema::check(&msg.topic, &msg.payload) {
        panic!(
            "{} does not match the contract's schema (schema/, MQTT.md): {e}\n{}",
            msg.topic, msg.payload
        );
    }
    Some(msg)
}

/// Every message an agent publishes that a test's subscriber sees is validated against
/// the contract's JSON Schemas (src/schema.rs): the wire itself, not only the types,
/// keeps to what schema/ and MQTT.md promise.
mod wire_schema {
    use std::sync::OnceLock;

    struct Validator {
        schemas: boon::Schemas,
        index: Vec<(&'static str, boon::SchemaIndex)>,
    }

    fn validator() -> &'static Validator {
        static V: OnceLock<Validator> = OnceLock::new();
        V.get_or_init(|| {
            let mut schemas = boon::Schemas::new();
            let mut compiler = boon::Compiler::new();
            let mut index = Vec::new();
            for p in simgate::schema::PAYLOADS {
                let url = format!("https://simgate.invalid/schema/v1/{}.schema.json", p.name);
                let schema = simgate::schema::schema(p.name).expect("a schema per payload");
                compiler
                    .add_resource(&url, schema)
                    .expect("a schema resource");
                let i = compiler
                    .compile(&url, &mut schemas)
                    .unwrap_or_else(|e| panic!("{}: {e:#}", p.name));
                index.push((p.name, i));
            }
            Validator { schemas, index }
        })
    }

    /// The agent's own topics (agent → platform) only: tests publish bad commands and
    /// records on purpose. A cleared retained message (empty) has no payload to check.
    pub(super) fn check(topic: &str, payload: &serde_json::Value) -> Result<(), String> {
        let Some(rest) = topic.strip_prefix("simgate/v1/") else {
            return Ok(());
        };
        let parts: Vec<&str> = rest.split('/').skip(1).collect();
        let name = match parts.as_slice() {
            ["health"] => "health",
            ["index"] => "index",
            ["events"] => "event",
            ["usage"] => "usage",
            ["sim", _, "state"] => "sim-state",
            ["cmd", _, "status"] => "command-status",
            _ => return Ok(()),
        };
        if payload.as_str() == Some("") {
            return Ok(());
        }
        let v = validator();
        let (_, i) = v.index.iter().find(|(n, _)| *n == name).expect("indexed");
        v.schemas
            .validate(payload, *i)
            .map_err(|e| format!("{e:#}"))
    }
}
