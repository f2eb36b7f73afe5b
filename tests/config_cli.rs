//! Configuration as a user meets it: the template, `config check`, and a bad file.

mod support;

use std::process::Command;
use support::{simgate_bin, TempDir};

#[test]
fn config_template_is_the_shipped_example_and_checks_clean() {
    let out = Command::new(simgate_bin())
        .args(["config", "template"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let shipped = std::fs::read_to_string(support::repo().join("config/simgate.toml")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), shipped);
    let check = Command::new(simgate_bin())
        .args(["config", "check"])
        .arg(support::repo().join("config/simgate.toml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn a_bad_config_file_is_refused_naming_file_line_and_key() {
    let dir = TempDir::new("cfg");
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[agent]\nid = \"gw-1\"\n\n[broker]\nkeep_alive = 30\n",
    )
    .unwrap();
    let out = Command::new(simgate_bin())
        .arg("--config")
        .arg(&file)
        .args(["run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:5", file.display())), "{err}");
    assert!(err.contains("keep_alive"), "{err}");
}

#[test]
fn an_invalid_value_is_refused_naming_the_key_and_why() {
    let dir = TempDir::new("cfg");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[broker]\nurl = \"tcp://broker:1883\"\n").unwrap();
    let out = Command::new(simgate_bin())
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broker.url") && err.contains("mqtt://"),
        "{err}"
    );
}

#[test]
fn run_without_an_agent_id_says_how_to_give_one() {
    let dir = TempDir::new("cfg");
    let out = Command::new(simgate_bin())
        .args(["run", "--state-dir"])
        .arg(dir.path())
        .env_remove("SIMGATE_AGENT_ID")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--agent-id"));
}
