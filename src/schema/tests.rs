use super::*;
use crate::contract::{parse_command, parse_platform_record};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema")
}

/// The committed schema/ is what the contract's types generate: a change to a payload
/// type without regenerating (and so without reviewing the schema diff) fails here.
#[test]
fn committed_schema_files_are_what_the_contract_types_generate() {
    let write = std::env::var_os("SIMGATE_WRITE_SCHEMA").is_some();
    for (name, text) in files() {
        let path = dir().join(&name);
        if write {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (SIMGATE_WRITE_SCHEMA=1 writes it)", path.display())
        });
        assert!(
            committed == text,
            "{} differs from what src/contract/ generates: run \
             SIMGATE_WRITE_SCHEMA=1 cargo test --lib schema:: and review the diff",
            path.display()
        );
    }
}

/// A validator over every schema file.
struct Validator {
    schemas: boon::Schemas,
    index: std::collections::HashMap<&'static str, boon::SchemaIndex>,
}

impl Validator {
    fn new() -> Validator {
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        let mut index = std::collections::HashMap::new();
        for p in PAYLOADS {
            let url = format!("https://simgate.invalid/schema/v1/{}.schema.json", p.name);
            compiler
                .add_resource(&url, schema(p.name).unwrap())
                .unwrap();
            let i = compiler
                .compile(&url, &mut schemas)
                .unwrap_or_else(|e| panic!("{}: {e:#}", p.name));
            index.insert(p.name, i);
        }
        Validator { schemas, index }
    }

    fn check(&self, payload: &str, v: &Value) -> Result<(), String> {
        self.schemas
            .validate(v, self.index[payload])
            .map_err(|e| format!("{e:#}"))
    }
}

/// Which payload an example of MQTT.md is, by its fields (the doc's blocks mix them).
fn kind_of(v: &Value) -> &'static str {
    let has = |k: &str| v.get(k).is_some();
    if has("type") {
        "event"
    } else if has("trigger") && !has("v") {
        "rule"
    } else if has("version") {
        "health"
    } else if has("iccids") {
        "index"
    } else if has("sims") {
        "usage"
    } else if has("expires_at") {
        "command"
    } else if has("action") && has("status") {
        "command-status"
    } else if has("observed_at") {
        "sim-state"
    } else {
        "platform-record"
    }
}

/// Every JSON value in a ```json block of MQTT.md (a block may hold several, one per
/// line or spread over lines).
fn examples() -> Vec<(usize, Value)> {
    let doc = include_str!("../../MQTT.md");
    let mut out = Vec::new();
    let mut block: Option<(usize, String)> = None;
    for (n, line) in doc.lines().enumerate() {
        match (&mut block, line.trim_start()) {
            (None, "```json") => block = Some((n + 2, String::new())),
            (Some((start, text)), "```") => {
                for v in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
                    let v = v.unwrap_or_else(|e| panic!("MQTT.md:{start}: not JSON: {e}"));
                    out.push((*start, v));
                }
                block = None;
            }
            (Some((_, text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            _ => {}
        }
    }
    out
}

/// Numbers compared as numbers (1024 and 1024.0 are one value on the wire).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w))
        }
        _ => a == b,
    }
}

/// The code's reading of an example, written back: a field the doc shows that the code
/// does not know (or spells otherwise) is lost on the way and the two differ.
fn round_trip(kind: &str, v: &Value) -> Result<Value, String> {
    fn via<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> Result<Value, String> {
        let t: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        serde_json::to_value(t).map_err(|e| e.to_string())
    }
    match kind {
        "event" => via::<EventMsg>(v),
        "health" => via::<Health>(v),
        "usage" => via::<UsageBatch>(v),
        "command-status" => via::<CommandStatus>(v),
        "sim-state" => via::<SimState>(v),
        "index" => via::<crate::contract::SimIndex>(v),
        "command" => via::<CommandMsg>(v),
        "platform-record" => via::<PlatformMsg>(v),
        _ => Err(format!("no type for {kind}")),
    }
}

#[test]
fn every_example_of_mqtt_md_validates_against_its_schema_and_the_code_reads_it_whole() {
    let val = Validator::new();
    let all = examples();
    assert!(
        all.len() > 30,
        "only {} examples found in MQTT.md",
        all.len()
    );
    let mut seen = std::collections::BTreeSet::new();
    for (line, v) in &all {
        let kind = kind_of(v);
        seen.insert(kind);
        if kind == "rule" {
            let (_, errors) = crate::rules::parse(std::slice::from_ref(v));
            assert!(errors.is_empty(), "MQTT.md:{line}: {errors:?}");
            continue;
        }
        val.check(kind, v).unwrap_or_else(|e| {
            panic!("MQTT.md:{line}: a {kind} example fails its schema: {e}\n{v}")
        });
        let back = round_trip(kind, v).unwrap_or_else(|e| panic!("MQTT.md:{line}: {e}"));
        assert!(
            same(&back, v),
            "MQTT.md:{line}: the code reads this {kind} otherwise than the doc writes it:\n doc:  {v}\n code: {back}"
        );
        // Inbound examples pass the agent's own checks too (a command as of before its
        // expiry).
        match kind {
            "command" => {
                let bytes = serde_json::to_vec(v).unwrap();
                let now = v["expires_at"].as_u64().unwrap() - 60;
                parse_command(&bytes, now).unwrap_or_else(|e| panic!("MQTT.md:{line}: {e}"));
            }
            "platform-record" => {
                parse_platform_record(&serde_json::to_vec(v).unwrap())
                    .unwrap_or_else(|e| panic!("MQTT.md:{line}: {e}"));
            }
            _ => {}
        }
    }
    for p in PAYLOADS {
        assert!(
            seen.contains(p.name),
            "MQTT.md has no example of {}",
            p.name
        );
    }
}

/// The code's payloads, one of each shape it sends, against the schemas: what the
/// agent writes is what the files promise (the files come from the same types, so
/// this guards the serde attributes the generator reads, e.g. a flattened field).
#[test]
fn payloads_the_code_writes_validate_against_their_schemas() {
    use crate::contract::{CommandStatusWord, EventKind, RefusalCode, SwapStep, UsageSample};
    use crate::sim::{
        Batch, EsimProfile, Estimate, FormFactor, Location, Observed, PlatformRecord, ProfileState,
        Status,
    };
    let val = Validator::new();
    let iccid = "8988211000000430010";
    let reader = Location::Reader {
        reader: "R 00 00".into(),
    };
    let modem = Location::Modem {
        port: "/dev/ttyUSB2".into(),
        slot: Some(2),
    };
    let mut obs = Observed::new(iccid, false, modem.clone(), 1);
    obs.form_factor = Some(FormFactor::Esim);
    obs.eid = Some("89049032123451234512345678901235".into());
    obs.blank_esim = true;
    obs.problem = Some("ICCID fails its Luhn check".into());
    obs.pending = Some("swap".into());
    obs.batch = Batch {
        labels: vec!["a".into()],
        company: Some("ACME".into()),
        note: None,
    };
    obs.esim_profiles = Some(vec![EsimProfile {
        iccid: iccid.into(),
        state: ProfileState::Enabled,
        name: Some("n".into()),
        provider: None,
        nickname: None,
        class: None,
    }]);
    let record = PlatformRecord {
        status: Some(Status::Active),
        data_left_mb: Some(1.5),
        labels: vec!["x".into()],
        rules: vec![json!({"id":"low","trigger":"data_left_mb","below":50,"action":"notify"})],
        updated_at: Some(3),
        ..Default::default()
    };
    let mut state = SimState::merged(&obs, Some(&record));
    state.estimate = Some(Estimate {
        data_left_mb: Some(1.0),
        days_left: None,
        since: 2,
    });
    let events = vec![
        EventKind::Inserted {
            iccid: iccid.into(),
            location: reader.clone(),
        },
        EventKind::Removed {
            iccid: iccid.into(),
            location: modem.clone(),
        },
        EventKind::Swapped {
            iccid: iccid.into(),
            replaced: iccid.into(),
            location: modem,
        },
        EventKind::IdentityChanged {
            iccid: iccid.into(),
            field: "imsi".into(),
            old: None,
            new: Some("1".into()),
        },
        EventKind::Error {
            iccid: None,
            code: RefusalCode::Malformed,
            reason: "r".into(),
        },
        EventKind::Command {
            id: "c".into(),
            iccid: iccid.into(),
            action: "suspend".into(),
            status: CommandStatusWord::Failed,
            code: Some(RefusalCode::NotApplicable),
            reason: Some("r".into()),
        },
        EventKind::OutboxShed {
            telemetry: 1,
            events: 0,
        },
        EventKind::RuleFired {
            id: "f".into(),
            iccid: iccid.into(),
            rule: "r".into(),
            trigger: "data_used_mb".into(),
            facts: crate::rules::Facts::default(),
            actions: vec![crate::rules::ActionOutcome {
                action: crate::rules::RuleAction::Refill {
                    amount_mb: Some(1.0),
                },
                outcome: Some("requested".into()),
                reason: None,
            }],
        },
        EventKind::RefillRequested {
            iccid: iccid.into(),
            request_id: "q".into(),
            amount_mb: None,
            rule: None,
        },
        EventKind::EsimNotification {
            iccid: iccid.into(),
            number: 1,
            operation: "enable".into(),
            profile: None,
            address: "a".into(),
            notification: "30".into(),
        },
        EventKind::ReaderService {
            up: false,
            reason: Some("r".into()),
        },
        EventKind::SwapStep {
            id: "s".into(),
            iccid: iccid.into(),
            step: SwapStep::Verify,
            ok: Some(true),
            new_iccid: None,
            detail: "d".into(),
            secs: Some(0.5),
        },
        EventKind::ModemService {
            port: "p".into(),
            iccid: None,
            up: true,
            reason: None,
        },
    ];
    let status = CommandStatus {
        v: 1,
        id: "c".into(),
        iccid: iccid.into(),
        action: "refresh".into(),
        status: CommandStatusWord::Received,
        code: None,
        reason: None,
        rows: Some(2),
        result: None,
        profile: None,
        ts: 1,
    };
    let usage = UsageBatch {
        v: 1,
        seq: 1,
        ts: 1,
        sims: vec![UsageSample {
            iccid: iccid.into(),
            month: "2026-11".into(),
            rx: 1,
            tx: 2,
            at: 3,
        }],
    };
    let mut payloads = vec![
        (
            "health",
            serde_json::to_value(Health::new(true, 1)).unwrap(),
        ),
        ("sim-state", serde_json::to_value(&state).unwrap()),
        (
            "sim-state",
            serde_json::to_value(SimState::from_observed(&Observed::new(
                iccid, true, reader, 1,
            )))
            .unwrap(),
        ),
        ("command-status", serde_json::to_value(&status).unwrap()),
        ("usage", serde_json::to_value(&usage).unwrap()),
        (
            "platform-record",
            serde_json::to_value(PlatformMsg { v: 1, record }).unwrap(),
        ),
    ];
    for (seq, kind) in events.into_iter().enumerate() {
        payloads.push((
            "event",
            serde_json::to_value(EventMsg {
                v: 1,
                seq: seq as u64,
                ts: 1,
                kind,
            })
            .unwrap(),
        ));
    }
    for (kind, v) in &payloads {
        val.check(kind, v)
            .unwrap_or_else(|e| panic!("{kind}: {e}\n{v}"));
    }
    // And a schema refuses what the agent would: it is not vacuous.
    let mut bad = payloads[0].1.clone();
    bad["state"] = json!(5);
    assert!(val.check("health", &bad).is_err());
    let bad = json!({"v":1,"seq":1,"ts":1,"type":"command","id":"c","iccid":iccid,"action":"x","status":"done"});
    assert!(val.check("event", &bad).is_err());
}
