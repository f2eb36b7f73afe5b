//! eSIM provisioning from the platform and as a technician's swap, on the real stack: the
//! test SM-DP+ (`simgate emulate smdp`, ES9+ over HTTPS), the emulated modem's eUICC
//! (real SGP.22 cryptography behind +CGLA), mosquitto and `simgate run`. The platform's
//! `esim_download` installs and enables a profile (committed as a swap), rolls back one
//! that never registers, downloads once per command id — redelivered, or cut by a kill
//! -9 — counted at the SM-DP+; `simgate swap` enables an installed profile and downloads
//! then enables another.

use crate::support::{self, smdp, Broker, Modem, Msg, Proc, Sub, TempDir};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::{final_status as outcome, unix_now as now};

/// The emulated modem's eSIM (src/emu/modem.rs `EmuSim::esim`): its EID, the enabled
/// profile, and the second installed one.
const EID: &str = "89049032123451234512345678901235";
const OLD: &str = "89883030000000000429";
const TRAVEL: &str = "89883030000000000437";
/// devices/smdp/profiles.toml: SIMGATE-TEST-1's and SIMGATE-TEST-BIG's profiles.
const NEW: &str = "8900101000000000019";
const BIG: &str = "8900101000000000035";
const MATCHING: &str = "SIMGATE-TEST-1";

struct Rig {
    dir: TempDir,
    pki: PathBuf,
    smdp: smdp::Smdp,
    broker: Broker,
    emu: Modem,
    sub: Sub,
    agent: String,
}

impl Rig {
    /// The SM-DP+, the broker, a modem with the eSIM (and `modem_args`), a subscriber.
    fn new(agent: &str, modem_args: &[&str]) -> Rig {
        let dir = TempDir::new("provision");
        let pki = smdp::rsp_pki(&dir.path().join("pki"), EID);
        let smdp = smdp::Smdp::start(&pki, &smdp::shipped_profiles(), &[]);
        let broker = Broker::start();
        let pki_s = pki.display().to_string();
        let mut args = vec!["--esim", "--pki", &pki_s];
        args.extend_from_slice(modem_args);
        let emu = Modem::start_with("generic-3gpp", &args);
        let sub = broker.subscribe(&format!("simgate/v1/{agent}/#"));
        Rig {
            dir,
            pki,
            smdp,
            broker,
            emu,
            sub,
            agent: agent.to_string(),
        }
    }

    fn state(&self) -> PathBuf {
        let s = self.dir.path().join("state");
        std::fs::create_dir_all(&s).unwrap();
        s
    }

    /// `simgate run` on the modem, trusting the rig's CI, a swap verify limit of
    /// `register` seconds.
    fn agent(&self, register: u64) -> Proc {
        let toml = format!(
            "[modems]\npoll_secs = 3600\nswap_register_secs = {register}\n[esim]\nci_dir = \"{}\"\n",
            self.pki.display()
        );
        Proc::spawn(
            "simgate run",
            &mut support::modem_agent_with(
                &self.broker.url(),
                &self.agent,
                &self.state(),
                &self.emu.port,
                &toml,
            ),
        )
    }

    fn await_row(&mut self, iccid: &str) {
        self.sub
            .expect_within("the eSIM's row", Duration::from_secs(60), |m| {
                m.topic.ends_with(&format!("sim/{iccid}/state")) && m.payload["present"] == true
            });
    }

    fn send(&self, id: &str, action: &str, params: serde_json::Value) {
        let cmd = json!({"v":1,"id":id,"iccid":OLD,"action":action,"params":params,"expires_at":now() + 900});
        support::send_command(&self.broker, &self.agent, &cmd);
    }

    fn outcome(&mut self, id: &str) -> Msg {
        let agent = self.agent.clone();
        outcome(&mut self.sub, &agent, id)
    }

    /// Bound packages the SM-DP+ built: one per download.
    fn downloads(&self) -> usize {
        self.smdp.events("bpp").len()
    }

    /// The payloads seen so far, parsed.
    fn seen(&self) -> Vec<serde_json::Value> {
        self.sub
            .lines
            .seen
            .iter()
            .filter_map(|l| serde_json::from_str(l.splitn(3, ' ').nth(2)?).ok())
            .collect()
    }

    fn steps(&self, id: &str) -> Vec<serde_json::Value> {
        self.seen()
            .into_iter()
            .filter(|p| p["type"] == "esim_download_step" && p["id"] == id)
            .collect()
    }

    fn last_row(&self, iccid: &str) -> serde_json::Value {
        let topic = format!("/sim/{iccid}/state ");
        self.sub
            .lines
            .seen
            .iter()
            .rev()
            .find(|l| l.contains(&topic))
            .and_then(|l| serde_json::from_str(l.splitn(3, ' ').nth(2)?).ok())
            .unwrap_or_else(|| panic!("no row for {iccid}"))
    }

    fn was_pending(&self, iccid: &str) -> bool {
        let topic = format!("/sim/{iccid}/state ");
        self.sub
            .lines
            .seen
            .iter()
            .any(|l| l.contains(&topic) && l.contains("\"status\":\"Pending\""))
    }
}

/// The modem's command count so far (`count` on the emulator's stdin).
fn at_count(emu: &mut Modem) -> u64 {
    emu.control("count");
    let l = emu
        .lines
        .expect("the emulator's count", Duration::from_secs(5), |l| {
            l.starts_with("commands ")
        });
    l["commands ".len()..].trim().parse().unwrap()
}

/// Every file under `dir`, read whole: the store must not hold `secret`.
fn files_hold(dir: &Path, secret: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if std::fs::read(&p)
                .is_ok_and(|b| b.windows(secret.len()).any(|w| w == secret.as_bytes()))
            {
                found.push(p);
            }
        }
    }
    found
}

#[test]
fn the_platform_downloads_and_enables_a_profile_committed_as_a_swap_and_a_redelivery_downloads_nothing(
) {
    let mut rig = Rig::new("gw-dl", &[]);
    let mut run = rig.agent(30);
    rig.await_row(OLD);
    let code = rig.smdp.activation_code(MATCHING);
    let params = json!({"activation_code": code, "enable": true, "nickname": "operator B"});
    let before = at_count(&mut rig.emu);
    let t = std::time::Instant::now();
    rig.send("dl-1", "esim_download", params.clone());
    let m = rig.outcome("dl-1");
    // Figures for the closing note (not asserted): the whole command, download and swap.
    eprintln!(
        "figures: esim_download with enable through the daemon: {} ms to its outcome, {} AT lines",
        t.elapsed().as_millis(),
        at_count(&mut rig.emu) - before
    );
    assert_eq!(m.payload["status"], "successful", "{}", m.payload);
    assert_eq!(m.payload["profile"], NEW, "{}", m.payload);

    // The steps, in order, each once; installing throttled (no event per segment).
    let steps = rig.steps("dl-1");
    let words: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    let firsts: Vec<&str> = words
        .iter()
        .copied()
        .filter(|w| *w != "installing")
        .collect();
    assert_eq!(
        firsts,
        [
            "challenge",
            "authenticated",
            "preview",
            "package",
            "installed",
            "notification"
        ],
        "{steps:?}"
    );
    let segments = steps[3]["of"].as_u64().unwrap();
    let installing = words.iter().filter(|w| **w == "installing").count();
    assert!(
        installing <= 4,
        "{installing} installing events for {segments} segments"
    );
    assert_eq!(steps[2]["profile"], NEW);

    // Then the swap to it: act (the profile switch), detect, verify, commit.
    let seen = rig.seen();
    let verify = seen
        .iter()
        .find(|p| {
            p["type"] == "swap_step"
                && p["id"] == "dl-1"
                && p["step"] == "verify"
                && p["ok"] == true
        })
        .unwrap_or_else(|| panic!("no verified swap step: {seen:?}"));
    assert!(
        verify["detail"].as_str().unwrap().contains("registered"),
        "{verify}"
    );
    let swapped: Vec<_> = seen.iter().filter(|p| p["type"] == "swapped").collect();
    assert_eq!(swapped.len(), 1, "{swapped:?}");
    assert_eq!(swapped[0]["iccid"], NEW);
    assert_eq!(swapped[0]["replaced"], OLD);
    assert!(rig.was_pending(OLD) && rig.was_pending(NEW));
    let old = rig.last_row(OLD);
    let new = rig.last_row(NEW);
    assert_eq!(old["present"], false, "{old}");
    assert_eq!(new["present"], true, "{new}");
    assert_eq!(new["in_session"], "yes", "{new}");
    assert!(old["status"] != "Pending" && new["status"] != "Pending");
    assert_eq!(rig.downloads(), 1);

    // The same command again (a broker redelivery, a platform retry): answered from its
    // record; nothing more at the SM-DP+.
    let before = rig.sub.lines.seen.len();
    rig.send("dl-1", "esim_download", params);
    let m = rig.outcome("dl-1");
    assert_eq!(m.payload["status"], "successful", "{}", m.payload);
    assert_eq!(m.payload["profile"], NEW, "{}", m.payload);
    assert!(rig.sub.lines.seen[before..]
        .iter()
        .all(|l| !l.contains("esim_download_step")));
    assert_eq!(rig.downloads(), 1, "a redelivered id downloaded again");

    // The matching ID is a secret: in no message of the agent's (the platform's own
    // command on `…/cmd` holds it), and not in the store.
    let cmd_topic = format!(" simgate/v1/{}/cmd ", rig.agent);
    let leaked: Vec<&String> = rig
        .sub
        .lines
        .seen
        .iter()
        .filter(|l| l.contains(MATCHING) && !l.contains(&cmd_topic))
        .collect();
    assert!(
        leaked.is_empty(),
        "the matching ID reached the broker: {leaked:?}"
    );
    run.interrupt();
    assert_eq!(files_hold(&rig.state(), MATCHING), Vec::<PathBuf>::new());
}

#[test]
fn a_downloaded_profile_that_never_registers_is_rolled_back_to_the_old_one_and_stays_installed() {
    let mut rig = Rig::new("gw-dlrb", &["--never-registers", NEW]);
    let _run = rig.agent(3);
    rig.await_row(OLD);
    let code = rig.smdp.activation_code(MATCHING);
    rig.send(
        "dl-rb",
        "esim_download",
        json!({"activation_code": code, "enable": true}),
    );
    let m = rig.outcome("dl-rb");
    assert_eq!(m.payload["status"], "failed", "{}", m.payload);
    assert_eq!(m.payload["code"], "failed", "{}", m.payload);
    // The new profile stays installed, and the outcome says which.
    assert_eq!(m.payload["profile"], NEW, "{}", m.payload);
    let reason = m.payload["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("verify: SIM {NEW} did not register within 3 s")),
        "{reason}"
    );
    assert!(
        reason.contains(&format!("rolled back (SIM {OLD} back: registered")),
        "{reason}"
    );
    let seen = rig.seen();
    assert!(
        seen.iter().all(|p| p["type"] != "swapped"),
        "a rolled-back download was reported swapped"
    );
    let old = rig.last_row(OLD);
    assert_eq!(old["present"], true, "{old}");
    assert_eq!(old["in_session"], "yes", "{old}");
    assert!(old["status"] != "Pending", "{old}");
    assert!(rig.last_row(NEW)["status"] != "Pending");
    assert_eq!(rig.downloads(), 1);
}

#[test]
fn a_download_killed_mid_package_is_reconciled_at_the_next_start_and_never_downloaded_twice() {
    // 20 ms per AT line: the 25-segment package takes seconds to load.
    let mut rig = Rig::new("gw-dlk9", &["--latency-ms", "20"]);
    let mut run = rig.agent(30);
    rig.await_row(OLD);
    let code = rig.smdp.activation_code("SIMGATE-TEST-BIG");
    let params = json!({"activation_code": code});
    rig.send("dl-k9", "esim_download", params.clone());
    rig.sub
        .expect_within("the package loading", Duration::from_secs(120), |m| {
            m.payload["type"] == "esim_download_step" && m.payload["step"] == "installing"
        });
    run.kill9();
    assert_eq!(rig.downloads(), 1);

    // The next start asks the eUICC before it reports: not landed, interrupted.
    let _again = rig.agent(30);
    let m = rig.outcome("dl-k9");
    assert_eq!(m.payload["status"], "failed", "{}", m.payload);
    assert_eq!(m.payload["code"], "interrupted", "{}", m.payload);
    let reason = m.payload["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("profile {BIG} is not on the eUICC (listed again)")),
        "{reason}"
    );
    let reconciled = rig
        .steps("dl-k9")
        .into_iter()
        .find(|s| s["step"] == "reconciled")
        .expect("a reconciled step");
    assert!(
        reconciled["detail"]
            .as_str()
            .unwrap()
            .contains("is not on the eUICC"),
        "{reconciled}"
    );
    // Redelivered after the restart: answered from the record, nothing downloaded.
    rig.send("dl-k9", "esim_download", params);
    let m = rig.outcome("dl-k9");
    assert_eq!(m.payload["code"], "interrupted", "{}", m.payload);
    assert_eq!(rig.downloads(), 1, "the killed download was repeated");
}

fn swap_cli(rig: &Rig, id: &str, target: &[&str]) -> std::process::Output {
    Command::new(support::simgate_bin())
        .args([
            "swap",
            "--broker",
            &rig.broker.url(),
            "--agent-id",
            &rig.agent,
        ])
        .args(["--port", &rig.emu.port, "--id", id, "--wait", "300"])
        .args(target)
        .output()
        .unwrap()
}

#[test]
fn an_esim_swap_from_simgate_swap_enables_an_installed_profile_then_downloads_and_enables_another()
{
    let mut rig = Rig::new("gw-esw", &[]);
    let _run = rig.agent(30);
    rig.await_row(OLD);
    let out = swap_cli(&rig, "sw-p", &["--to-profile", TRAVEL]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("act done"), "{text}");
    assert!(
        text.contains(&format!("SIM {OLD} replaced by {TRAVEL}")),
        "{text}"
    );
    assert!(text.contains("sw-p: successful"), "{text}");
    rig.await_row(TRAVEL);

    let code = rig.smdp.activation_code(MATCHING);
    let out = swap_cli(&rig, "sw-d", &["--download", &code]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("download installed"), "{text}");
    assert!(
        text.contains(&format!("SIM {TRAVEL} replaced by {NEW}")),
        "{text}"
    );
    assert!(!text.contains(MATCHING), "{text}");
    assert_eq!(rig.downloads(), 1);
    // The rows came before the command's status (src/daemon/swap.rs `ended`).
    assert_eq!(rig.outcome("sw-d").payload["profile"], NEW);
    assert_eq!(rig.last_row(NEW)["present"], true);
    assert_eq!(rig.last_row(TRAVEL)["present"], false);
}

#[test]
fn a_refused_matching_id_fails_by_its_codes_and_is_never_echoed_in_events_or_the_outcome() {
    let mut rig = Rig::new("gw-dlno", &[]);
    let _run = rig.agent(30);
    rig.await_row(OLD);
    // The test SM-DP+ quotes a refused matching ID in its message, as servers may.
    let secret = "NO-SUCH-PROFILE-42";
    let code = rig.smdp.activation_code(secret);
    rig.send("dl-no", "esim_download", json!({"activation_code": code}));
    let m = rig.outcome("dl-no");
    assert_eq!(m.payload["status"], "failed", "{}", m.payload);
    assert_eq!(m.payload["code"], "invalid_field", "{}", m.payload);
    let reason = m.payload["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("download failed at authenticateClient"),
        "{reason}"
    );
    assert!(reason.contains("8.2.6") && reason.contains('…'), "{reason}");
    let failed = rig
        .steps("dl-no")
        .into_iter()
        .find(|s| s["step"] == "failed")
        .expect("a failed step");
    assert!(
        failed["detail"].as_str().unwrap().contains("listed again"),
        "{failed}"
    );
    let cmd_topic = format!(" simgate/v1/{}/cmd ", rig.agent);
    let leaked: Vec<&String> = rig
        .sub
        .lines
        .seen
        .iter()
        .filter(|l| l.contains(secret) && !l.contains(&cmd_topic))
        .collect();
    assert!(leaked.is_empty(), "the matching ID was echoed: {leaked:?}");
    assert_eq!(rig.downloads(), 0);
}

#[test]
fn a_download_killed_while_its_new_profile_verifies_is_rolled_back_to_the_old_profile_at_the_next_start(
) {
    let mut rig = Rig::new("gw-dlk9v", &["--never-registers", NEW]);
    // A long limit: the kill lands while verify waits.
    let mut run = rig.agent(600);
    rig.await_row(OLD);
    let code = rig.smdp.activation_code(MATCHING);
    rig.send(
        "dl-k9v",
        "esim_download",
        json!({"activation_code": code, "enable": true}),
    );
    rig.sub
        .expect_within("verify under way", Duration::from_secs(60), |m| {
            m.payload["type"] == "swap_step"
                && m.payload["step"] == "verify"
                && m.payload.get("ok").is_none()
        });
    run.kill9();

    // The next start finds the swap's record (the download's is gone) and rolls back.
    let _again = rig.agent(3);
    let m = rig.outcome("dl-k9v");
    assert_eq!(m.payload["status"], "failed", "{}", m.payload);
    assert_eq!(m.payload["profile"], NEW, "{}", m.payload);
    let reason = m.payload["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("verify: simgate restarted during this step"),
        "{reason}"
    );
    assert!(
        reason.contains(&format!("rolled back (SIM {OLD} back: registered")),
        "{reason}"
    );
    let old = rig.last_row(OLD);
    assert_eq!(old["present"], true, "{old}");
    assert!(old["status"] != "Pending", "{old}");
    assert!(rig.last_row(NEW)["status"] != "Pending");
    assert_eq!(rig.downloads(), 1, "the download was repeated");
}
