//! The daemon's property over the fuzz generators (src/fuzz/props.rs): whatever the
//! contract refuses changes nothing in the store but the refusal's own record.

use super::Commands;
use crate::contract;
use crate::daemon::work::ModemPorts;
use crate::fuzz::gen::cases;
use crate::fuzz::props::{refused_payloads, ICCID};
use crate::link::{received, AckToken, Received};
use crate::sim::{Location, Observed, PlatformRecord};
use crate::store::commands::CommandState;

/// Through the link's own parsing (`link::received`) and the daemon's handler
/// (`Commands::on_platform`), into a store with SIMs, records and commands in it: a
/// refused command leaves every tree as it was but for its own id's failed record (so
/// a redelivery gets the same answer); a refused platform record leaves the record
/// cached before it, noting only the refusal's fingerprint.
#[tokio::test]
async fn a_refused_payload_changes_nothing_in_the_store_but_its_refusal() {
    struct NoModems;
    impl ModemPorts for NoModems {
        fn handle(&self, _: &str) -> Option<crate::modem::supervisor::ModemHandle> {
            None
        }
    }
    let dir = std::env::temp_dir().join(format!("simgate-fuzz-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = crate::store::Store::open(&dir).unwrap();
    let now = crate::time::unix_now();
    let reader = Location::Reader {
        reader: "R 00 00".into(),
    };
    store
        .put_observed(&Observed::new(ICCID, true, reader, now))
        .unwrap();
    let kept = PlatformRecord {
        plan: Some("IoT 1GB".into()),
        ..Default::default()
    };
    store.put_platform(ICCID, &kept).unwrap();
    let (events, _rx) = tokio::sync::mpsc::channel(4);
    let ctx = crate::daemon::Ctx::new(
        store.clone(),
        None,
        events,
        crate::reader::ReadSettings::from_config(&Default::default()),
    );
    let topics = contract::Topics::new("gw-1");
    let mut cmds = Commands::default();
    let mut refused = 0;
    let mut payloads = Vec::new();
    cases("refused_payload_store", 3, |rng| {
        payloads.extend(refused_payloads(rng))
    });
    for payload in payloads {
        for topic in [topics.commands(), topics.sim_platform(ICCID)] {
            let before = store.snapshot();
            let msg = received(&topics, &topic, &payload, now, AckToken::none())
                .expect("a topic of ours");
            let refusal = match &msg {
                Received::Command {
                    command: Err(r), ..
                } => Some(r.clone()),
                Received::PlatformRecord { record: Err(r), .. } => Some(r.clone()),
                _ => None,
            };
            let Some(r) = refusal else { continue };
            refused += 1;
            cmds.on_platform(&ctx, msg, &NoModems).await.unwrap();
            let after = store.snapshot();
            let changed: Vec<_> = after
                .iter()
                .filter(|e| !before.contains(e))
                .chain(before.iter().filter(|e| !after.contains(e)))
                .map(|(tree, key, _)| (tree.clone(), key.clone()))
                .collect();
            let allowed = |(tree, key): &(String, String)| match topic == topics.commands() {
                true => r.id.as_deref().is_some_and(|id| {
                    (tree == "commands" && key == id)
                        || (tree == "commands_expiry" && key.ends_with(id))
                }),
                false => key == ICCID && tree == "platform_refused",
            };
            assert!(changed.iter().all(allowed), "{changed:?} after {r:?}");
            if let Some(id) = &r.id {
                // Failed with this refusal's code; an id refused before keeps the
                // first answer (a redelivery is answered from its record).
                let rec = store.get_command(id).unwrap().unwrap();
                assert_eq!(rec.state, CommandState::Failed);
                let first = !before.iter().any(|(t, k, _)| t == "commands" && k == id);
                assert!(!first || rec.code == Some(r.code), "{rec:?} after {r:?}");
            }
            assert_eq!(store.get_platform(ICCID).unwrap(), Some(kept.clone()));
        }
    }
    assert!(refused > 100, "{refused} refusals");
    drop((ctx, store));
    let _ = std::fs::remove_dir_all(dir);
}
