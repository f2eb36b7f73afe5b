//! Configuration as a user meets it: the template, `config check`, and a bad file.

use crate::support;

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

/// Runs simgate, expecting exit 2 and one line on stderr; returns that line.
fn usage_error(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(simgate_bin()).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn config_check_validates_the_profile_override_directory_like_run() {
    let dir = TempDir::new("cfg");
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    std::fs::write(profiles.join("bad.toml"), "x = 1\n").unwrap();
    let cfg = dir.path().join("simgate.toml");
    std::fs::write(
        &cfg,
        format!("[modems]\nprofile_dir = {:?}\n", profiles.display()),
    )
    .unwrap();
    // Regression: `config check` said "ok" for a directory `run` then refused.
    let err = usage_error(&["config".as_ref(), "check".as_ref(), cfg.as_os_str()]);
    assert!(err.contains("modems.profile_dir"), "{err}");
    assert!(err.contains("bad.toml:1"), "{err}");
    assert!(err.contains("unknown field `x`"), "{err}");
    let err = usage_error(&[
        "--config".as_ref(),
        cfg.as_os_str(),
        "run".as_ref(),
        "--agent-id".as_ref(),
        "gw-1".as_ref(),
        "--modem".as_ref(),
        "/dev/null".as_ref(),
        "--state-dir".as_ref(),
        dir.path().join("state").as_os_str(),
    ]);
    assert!(err.contains("bad.toml:1"), "{err}");
}

#[test]
fn bad_arguments_and_files_are_usage_errors_on_one_line() {
    let dir = TempDir::new("cfg");
    let garbage = dir.path().join("garbage.toml");
    std::fs::write(&garbage, "garbage\n").unwrap();
    let err = usage_error(&[
        "emulate".as_ref(),
        "card".as_ref(),
        "--image".as_ref(),
        garbage.as_os_str(),
    ]);
    assert!(
        err.contains("garbage.toml") && err.contains("line 1"),
        "{err}"
    );
    let err = usage_error(&[
        "emulate".as_ref(),
        "modem".as_ref(),
        "--profile".as_ref(),
        "nope".as_ref(),
    ]);
    assert!(
        err.contains("--profile") && err.contains("quectel-ec2x"),
        "{err}"
    );
    let send = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> =
            ["platform", "send", "--broker", "mqtt://127.0.0.1:1"]
                .iter()
                .map(|s| s.as_ref())
                .collect();
        args.extend(["--agent-id", "gw-1"].iter().map(std::ffi::OsStr::new));
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        usage_error(&args)
    };
    // Checked before connecting: nothing listens on port 1.
    let err = send(&["--iccid", "a/#", "--action", "refresh"]);
    assert!(err.contains("--iccid"), "{err}");
    // A value outside a closed vocabulary: clap's own refusal, exit 2, with the words.
    let out = Command::new(simgate_bin())
        .args([
            "platform",
            "send",
            "--broker",
            "mqtt://127.0.0.1:1",
            "--agent-id",
            "gw-1",
        ])
        .args(["--iccid", "8988211000000430010", "--action", "reboot"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--action") && err.contains("set_record"),
        "{err}"
    );
    let err = send(&[
        "--iccid",
        "8988211000000430010",
        "--action",
        "refresh",
        "--id",
        "x/+",
    ]);
    assert!(err.contains("--id"), "{err}");
    let err = send(&[
        "--iccid",
        "8988211000000430010",
        "--action",
        "refresh",
        "--params",
        "{",
    ]);
    assert!(err.contains("--params"), "{err}");
}

#[test]
fn watch_with_a_bad_broker_url_is_a_usage_error() {
    let err = usage_error(&[
        "watch".as_ref(),
        "--broker".as_ref(),
        "tcp://x".as_ref(),
        "--agent-id".as_ref(),
        "gw-1".as_ref(),
    ]);
    assert!(err.contains("--broker"), "{err}");
}

#[test]
fn config_check_and_path_use_the_file_given_by_the_environment() {
    let shipped = support::repo().join("config/simgate.toml");
    let check = Command::new(simgate_bin())
        .args(["config", "check"])
        .env("SIMGATE_CONFIG", &shipped)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let said = String::from_utf8_lossy(&check.stdout);
    assert_eq!(
        said.lines().next(),
        Some(format!("{}: ok", shipped.display()).as_str())
    );
    // Then every key, where its value came from: the shipped file sets none (each is
    // commented out), so the default.
    let want = "broker.keepalive_secs = 300  default";
    assert!(said.lines().any(|l| l.trim() == want), "{want}:\n{said}");
    let path = Command::new(simgate_bin())
        .args(["config", "path"])
        .env("SIMGATE_CONFIG", &shipped)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&path.stdout),
        format!("{}\n", shipped.display())
    );
}

/// With no file given, /etc/simgate/simgate.toml is the one: checked when it exists,
/// named as missing when not (the installed case is checked by `make deb-check`, where
/// the package put it). Either way the answer names it.
#[test]
fn config_check_without_a_file_checks_the_system_configuration() {
    let out = Command::new(simgate_bin())
        .args(["config", "check"])
        .env_remove("SIMGATE_CONFIG")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("/etc/simgate/simgate.toml"), "{said}");
    if !std::path::Path::new("/etc/simgate/simgate.toml").exists() {
        assert_eq!(out.status.code(), Some(2), "{said}");
        assert!(said.contains("does not exist"), "{said}");
    }
}

#[test]
fn a_broken_system_configuration_does_not_stop_the_template() {
    // `config template` reads no configuration: it works with a broken --config too,
    // as it must with a broken /etc/simgate/simgate.toml.
    let dir = TempDir::new("cfg");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[agent\n").unwrap();
    let out = Command::new(simgate_bin())
        .arg("--config")
        .arg(&bad)
        .args(["config", "template"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_man_pages_and_completions_come_from_the_command_line_definition() {
    let dir = TempDir::new("man");
    let out = Command::new(simgate_bin())
        .args(["generate", "man", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = std::fs::read_to_string(dir.path().join("simgate-run.1")).unwrap();
    assert!(
        run.starts_with(".ie \\n(.g .ds Aq"),
        "roff: {}",
        &run[..80.min(run.len())]
    );
    assert!(
        run.contains("simgate\\-run") && run.contains("agent\\-id"),
        "{run}"
    );
    // Beyond --help (man-pages(7)): how it ends, what it reads, examples.
    let main = std::fs::read_to_string(dir.path().join("simgate.1")).unwrap();
    for section in [
        ".SH \"EXIT STATUS\"",
        ".SH ENVIRONMENT",
        ".SH FILES",
        ".SH EXAMPLES",
        ".SH \"SEE ALSO\"",
    ] {
        assert!(main.contains(section), "simgate(1) lacks {section}");
        assert!(run.contains(section), "simgate-run(1) lacks {section}");
    }
    assert!(main.contains("SIMGATE_CONFIG") && main.contains("/etc/simgate/conf.d"));
    // simgate.toml(5), from the commented template: every key with its default.
    let conf = std::fs::read_to_string(dir.path().join("simgate.toml.5")).unwrap();
    assert!(conf.contains(".TH simgate.toml 5"), "{conf}");
    let template: toml::Table = simgate::config::template_keys().parse().unwrap();
    for (section, keys) in &template {
        for (key, _) in keys.as_table().unwrap() {
            assert!(
                conf.contains(&format!("{key} = ")),
                "[{section}] {key} not in simgate.toml(5)"
            );
        }
    }
    let bash = Command::new(simgate_bin())
        .args(["generate", "completions", "bash"])
        .output()
        .unwrap();
    let bash = String::from_utf8_lossy(&bash.stdout);
    assert!(bash.contains("complete -F _simgate"), "{bash}");
    assert!(bash.contains("--agent-id"), "{bash}");
    // Closed vocabularies are offered as values: the shell completes them.
    for values in ["auto human json", "refresh suspend resume set_record"] {
        assert!(bash.contains(values), "{values} not offered: {bash}");
    }
}

/// Regression: a printing command whose reader closed the pipe (`simgate config check |
/// grep -q ok` once grep has its match) panicked on EPIPE ("failed printing to stdout").
/// It must end quietly: status 0, nothing on stderr. The pipe's read end is closed
/// before the command starts, so its first write meets EPIPE every time.
#[test]
fn a_printing_command_into_a_closed_pipe_ends_quietly_without_a_panic() {
    let shipped = support::repo().join("config/simgate.toml");
    let shipped = shipped.to_str().unwrap();
    for args in [
        vec!["config", "template"],
        vec!["config", "check", shipped],
        vec!["config", "path"],
        vec!["generate", "man"],
        vec!["--help"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(simgate_bin())
            .args(&args)
            .stdout(writer)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "simgate {args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "simgate {args:?}: {err}");
        assert!(err.is_empty(), "simgate {args:?} said: {err}");
    }
}

/// The shipped file sets nothing (every key commented out: unset means default), and a
/// drop-in in conf.d beside it overrides it; `config check` names the drop-in's file and
/// line for the value it set, `config path` lists it, and the command that reads the
/// configuration gets its value.
#[test]
fn a_conf_d_drop_in_overrides_the_commented_shipped_file_and_check_names_its_file_and_line() {
    let dir = TempDir::new("confd");
    let main = dir.path().join("simgate.toml");
    std::fs::copy(support::repo().join("config/simgate.toml"), &main).unwrap();
    let check = |file: &std::path::Path| {
        let out = Command::new(simgate_bin())
            .args(["config", "check"])
            .arg(file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let shipped = check(&main);
    let keys: Vec<&str> = shipped.lines().skip(1).collect();
    assert!(keys.len() >= 40, "{shipped}");
    assert!(
        keys.iter()
            .all(|l| l.ends_with("  default") || l.contains("<none>")),
        "the shipped file sets nothing:\n{shipped}"
    );
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    let drop_in = dir.path().join("conf.d/50-site.toml");
    std::fs::write(&drop_in, "# this gateway\n[agent]\nid = \"gw-site\"\n").unwrap();
    std::fs::write(
        dir.path().join("conf.d/10-base.toml"),
        "[agent]\nid = \"gw-base\"\n[broker]\nkeepalive_secs = 120\n",
    )
    .unwrap();
    let out = check(&main);
    assert!(
        out.contains(&format!("agent.id = \"gw-site\"  {}:3", drop_in.display())),
        "{out}"
    );
    assert!(out.contains("broker.keepalive_secs = 120  "), "{out}");
    assert!(
        out.contains(&format!("{}: ok (drop-in)", drop_in.display())),
        "{out}"
    );
    let path = Command::new(simgate_bin())
        .arg("--config")
        .arg(&main)
        .args(["config", "path"])
        .output()
        .unwrap();
    let path = String::from_utf8(path.stdout).unwrap();
    let lines: Vec<&str> = path.lines().collect();
    assert_eq!(lines.len(), 3, "{path}");
    assert!(
        lines[1].ends_with("10-base.toml") && lines[2].ends_with("50-site.toml"),
        "{path}"
    );
    // A bad value in a drop-in: refused naming the drop-in, its line and the key.
    std::fs::write(&drop_in, "[broker]\nkeepalive_secs = 1\n").unwrap();
    let out = Command::new(simgate_bin())
        .arg("--config")
        .arg(&main)
        .args(["readers"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:2: broker.keepalive_secs", drop_in.display())),
        "{err}"
    );
}
