//! A gateway's monitoring: `/health` and `/metrics` on the page's server (src/metrics.rs,
//! src/http), scraped by a plain HTTP client while `simgate run` works on the real stack
//! (pcscd + vpcd with a virtual card, mosquitto), the numbers checked to move with a
//! card read, a command and a broker outage.

use crate::support;

use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use support::browser::http;
use support::{Broker, Pcsc, Proc, TempDir};

const USIM: &str = "8988211000000430010";
const WAIT: Duration = Duration::from_secs(30);

/// The value of one series (`name{labels}` exactly as exposed) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn scrape(port: u16) -> String {
    let (status, body) = http(port, "GET", "/metrics", &[], None).expect("scrape /metrics");
    assert_eq!(status, 200, "{body}");
    body
}

fn health(port: u16) -> (u16, Value) {
    let (status, body) = http(port, "GET", "/health", &[], None).expect("GET /health");
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, v)
}

/// Scrape until `cond` holds on a scrape (the daemon's work is asynchronous to the
/// scrape), returning that scrape.
fn scrape_until(port: u16, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    support::wait_for(what, WAIT, || {
        last = scrape(port);
        cond(&last)
    });
    last
}

#[test]
fn health_and_metrics_tell_readiness_reads_commands_and_a_broker_outage() {
    let pcsc = Pcsc::start();
    let mut broker = Broker::start();
    let state = TempDir::new("state");
    let agent = "gw-mon";
    let port = support::free_port();
    let mut sub = broker.subscribe(&format!("simgate/v1/{agent}/#"));
    let mut run = Proc::spawn(
        "simgate run",
        pcsc.simgate()
            .args(support::run_args(&broker.url(), agent))
            .arg(state.path())
            .args(["--http", &port.to_string(), "--metrics"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    support::wait_for("/health to say ready", WAIT, || {
        assert!(
            run.child.try_wait().ok().flatten().is_none(),
            "simgate exited before serving /health"
        );
        http(port, "GET", "/health", &[], None).is_ok_and(|(s, _)| s == 200)
    });
    let (_, h) = health(port);
    assert_eq!(h["ready"], true, "{h}");
    assert_eq!(h["pcscd"], "up", "{h}");
    assert_eq!(h["readers"], 2, "{h}");
    assert_eq!(h["modems"], json!({"up": 0, "configured": 0}), "{h}");
    let before = scrape(port);
    assert_eq!(sample(&before, "simgate_ready"), Some(1.0), "{before}");
    let reads = |t: &str| sample(t, "simgate_card_reads_total{result=\"ok\"}").unwrap_or(-1.0);
    let read_count =
        |t: &str| sample(t, "simgate_card_read_duration_seconds_count").unwrap_or(-1.0);
    assert_eq!(reads(&before), 0.0, "{before}");

    // A card read: the counter and the histogram move together.
    let card = pcsc.insert(0, "usim.toml");
    sub.expect("the SIM's row", |m| {
        m.topic.ends_with(&format!("sim/{USIM}/state")) && m.payload["present"] == true
    });
    let after = scrape_until(port, "the read counted", |t| reads(t) == 1.0);
    assert_eq!(read_count(&after), 1.0, "{after}");
    assert_eq!(
        sample(
            &after,
            "simgate_card_read_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        Some(1.0),
        "{after}"
    );
    assert!(
        sample(&after, "simgate_card_read_duration_seconds_sum").is_some_and(|s| s > 0.0),
        "{after}"
    );

    // A command: counted by its outcome once it is final, and a repeat of its id
    // (answered from its record) is not counted again.
    let ok = "simgate_commands_total{outcome=\"successful\"}";
    assert_eq!(sample(&after, ok), None, "{after}");
    let cmd = json!({"v": 1, "id": "mon-1", "iccid": USIM, "action": "refresh",
        "expires_at": support::unix_now() + 600});
    support::send_command(&broker, agent, &cmd);
    let fin = support::final_status(&mut sub, agent, "mon-1");
    assert_eq!(fin.payload["status"], "successful", "{}", fin.payload);
    scrape_until(port, "the command counted", |t| sample(t, ok) == Some(1.0));
    let refused = "simgate_commands_total{outcome=\"failed\",code=\"not_hosted\"}";
    let stranger = json!({"v": 1, "id": "mon-2", "iccid": "8988211000000000003",
        "action": "refresh", "expires_at": support::unix_now() + 600});
    support::send_command(&broker, agent, &stranger);
    support::final_status(&mut sub, agent, "mon-2");
    support::send_command(&broker, agent, &cmd);
    sub.expect("the repeat answered", |m| {
        m.topic.ends_with("/cmd/mon-1/status") && m.payload["status"] == "successful"
    });
    let t = scrape_until(port, "the refusal counted", |t| {
        sample(t, refused) == Some(1.0)
    });
    assert_eq!(
        sample(&t, ok),
        Some(1.0),
        "a repeat is no second outcome: {t}"
    );

    // The broker away: /health says so (still ready: the outbox keeps everything), a
    // card's removal waits in the outbox and ages there.
    assert_eq!(
        sample(&t, "simgate_broker_reconnects_total"),
        Some(0.0),
        "{t}"
    );
    broker.stop();
    support::wait_for("/health to see the broker gone", WAIT, || {
        health(port).1["broker"] == "not_connected"
    });
    card.remove();
    let queued = scrape_until(port, "the removal queued", |t| {
        sample(t, "simgate_outbox_depth").is_some_and(|d| d >= 1.0)
    });
    assert_eq!(
        sample(&queued, "simgate_broker_connected"),
        Some(0.0),
        "{queued}"
    );
    let (status, h) = health(port);
    assert_eq!(
        status, 200,
        "a broker away is no failure of the gateway: {h}"
    );
    assert!(h["outbox"]["depth"].as_u64().is_some_and(|d| d >= 1), "{h}");
    assert!(h["outbox"]["oldest_age_secs"].is_u64(), "{h}");
    scrape_until(port, "the oldest message to age", |t| {
        sample(t, "simgate_outbox_oldest_age_seconds").is_some_and(|a| a >= 1.0)
    });

    // Back: one reconnect, the outbox drained, and the age gone with it.
    broker.resume();
    let back = scrape_until(port, "the outbox drained after the reconnect", |t| {
        sample(t, "simgate_outbox_depth") == Some(0.0)
    });
    assert_eq!(
        sample(&back, "simgate_broker_reconnects_total"),
        Some(1.0),
        "{back}"
    );
    assert_eq!(
        sample(&back, "simgate_outbox_oldest_age_seconds"),
        Some(0.0),
        "{back}"
    );
    let (_, h) = health(port);
    assert_eq!(h["broker"], "connected", "{h}");
    assert!(
        h["outbox"].get("oldest_age_secs").is_none(),
        "left out, not null: {h}"
    );
    run.interrupt();
}

#[test]
fn health_and_metrics_are_off_unless_asked() {
    let pcsc = Pcsc::start();
    let state = TempDir::new("state");
    let port = support::free_port();
    let mut run = Proc::spawn(
        "simgate run",
        pcsc.simgate()
            .args(["run", "--agent-id", "gw-quiet", "--state-dir"])
            .arg(state.path())
            .args(["--http", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    support::wait_for("the page to answer", WAIT, || {
        assert!(
            run.child.try_wait().ok().flatten().is_none(),
            "simgate exited before serving its page"
        );
        http(port, "GET", "/", &[], None).is_ok_and(|(s, _)| s == 200)
    });
    for path in ["/health", "/metrics"] {
        let (status, _) = http(port, "GET", path, &[], None).expect(path);
        assert_eq!(status, 404, "{path} without [http] metrics");
    }
    run.interrupt();

    // Asked for without a listener: a configuration error naming the key (exit 2).
    let out = pcsc
        .simgate()
        .args(["run", "--agent-id", "gw-quiet", "--state-dir"])
        .arg(state.path())
        .arg("--metrics")
        .output()
        .expect("run simgate");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http.metrics"), "{err}");
}
