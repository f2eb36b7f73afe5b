//! The station page (src/http) in a real browser — Debian's chromium, headless, through
//! chromedriver — against the real stack: pcscd + vpcd with simgate's virtual cards,
//! mosquitto, `simgate station` and `simgate run` serving the page.

use crate::support;

use serde_json::json;
use std::process::Stdio;
use std::time::Duration;
use support::browser::{decode_qr, http, Browser};
use support::{Broker, Pcsc, Proc, TempDir};

const USIM: &str = "8988211000000430010";
const USIM20: &str = "89882110000005300811";
const ESIM: &str = "8949440000000000016";
const CODE: &str = "LPA:1$smdp.example.com$04386-AGYFT-A74Y8-3F815";
const TOKEN: &str = "tech-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(20);

/// simgate serving its page on `port`: waits until the page answers.
fn await_page(port: u16, proc: &mut Proc) {
    support::wait_for("the station page to answer", WAIT, || {
        assert!(
            proc.child.try_wait().ok().flatten().is_none(),
            "simgate exited before serving its page"
        );
        http(port, "GET", "/", &[], None).is_ok_and(|(s, _)| s == 200)
    });
}

fn row(iccid: &str) -> String {
    format!("document.querySelector('tr[data-iccid=\"{iccid}\"]')")
}

/// The page is live (its snapshot drawn) before anything happens to the cards.
fn open(browser: &Browser, port: u16) {
    browser.goto(&format!("http://127.0.0.1:{port}/"));
    browser.until(
        "the page's live stream",
        "document.getElementById('live').classList.contains('on')",
        WAIT,
    );
}

#[test]
fn station_page_shows_a_card_inserted_after_it_loaded_and_a_duplicate_s_warning_big() {
    let pcsc = Pcsc::start();
    let state = TempDir::new("state");
    let csv = state.path().join("batch.csv");
    let port = support::free_port();
    let mut station = Proc::spawn(
        "simgate station",
        pcsc.simgate()
            .args(["station", "--json", "--state-dir"])
            .arg(state.path())
            .args(["--label", "lot-9", "--company", "ACME", "--csv"])
            .arg(&csv)
            .args(["--http", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    await_page(port, &mut station);
    let browser = Browser::start();
    open(&browser, port);
    let text = browser.js("return document.body.innerText;", json!([]));
    assert!(
        text.as_str().unwrap().contains("lot-9"),
        "the batch: {text}"
    );

    // Inserted after the page loaded: the row appears, no reload.
    let card = pcsc.insert(0, "usim.toml");
    browser.until("the USIM's row", &row(USIM), WAIT);
    let cells = browser.js(
        &format!("return Array.from({}.cells, c => c.innerText);", row(USIM)),
        json!([]),
    );
    let cells: Vec<String> = serde_json::from_value(cells).unwrap();
    assert!(cells[0].starts_with(USIM), "{cells:?}");
    assert!(cells[14].contains(&pcsc.reader(0)), "where: {cells:?}");
    assert!(cells[17].contains("yes"), "present: {cells:?}");
    assert_eq!(cells[12], "lot-9", "labels: {cells:?}");
    browser.until(
        "the count",
        "document.getElementById('count-reads').textContent === '1'",
        WAIT,
    );

    // The same card again: the duplicate's warning, big, in the last-read panel.
    card.remove();
    browser.until(
        "the USIM no longer present",
        &format!("{}.className === 'absent'", row(USIM)),
        WAIT,
    );
    let _again = pcsc.insert(0, "usim.toml");
    let warning = browser.until(
        "the duplicate's warning",
        "Array.from(document.querySelectorAll('#last .warning')).map(w => w.innerText).find(t => t.includes('DUPLICATE'))",
        WAIT,
    );
    assert!(
        warning
            .as_str()
            .unwrap()
            .contains("already read in this batch as #1"),
        "{warning}"
    );
    let size = browser.js(
        "return parseFloat(getComputedStyle(document.querySelector('#last .warning')).fontSize);",
        json!([]),
    );
    assert!(
        size.as_f64().unwrap() >= 24.0,
        "big enough from a step back: {size} px"
    );
    assert_eq!(
        browser.js(
            "return document.getElementById('count-warned').textContent;",
            json!([])
        ),
        "1"
    );

    // The batch's CSV behind the page's link: both reads.
    let href = browser.js(
        "const a = document.getElementById('csv'); return a.hidden ? null : a.getAttribute('href');",
        json!([]),
    );
    assert_eq!(href, "/batch.csv");
    let (status, body) = http(port, "GET", "/batch.csv", &[], None).unwrap();
    assert_eq!(status, 200);
    assert_eq!(body.matches(USIM).count(), 2, "{body}");
    station.interrupt();
}

#[test]
fn the_esim_qr_code_decodes_to_the_activation_code_and_the_page_outlives_the_broker() {
    let pcsc = Pcsc::start();
    let mut broker = Broker::start();
    let state = TempDir::new("state");
    let agent = "st-web";
    // The platform's record for the eSIM, retained, before the station starts.
    broker.publish(
        &format!("simgate/v1/{agent}/sim/{ESIM}/platform"),
        &[
            "-r",
            "-m",
            &json!({"v":1,"status":"Active","plan":"Travel 5GB","activation_code":CODE})
                .to_string(),
        ],
    );
    let mut sub = broker.subscribe(&format!("simgate/v1/{agent}/sim/+/state"));
    let port = support::free_port();
    let mut station = Proc::spawn(
        "simgate station",
        pcsc.simgate()
            .args(["station", "--json", "--state-dir"])
            .arg(state.path())
            .args(["--broker", &broker.url(), "--agent-id", agent])
            .args(["--http", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    await_page(port, &mut station);
    let browser = Browser::start();
    open(&browser, port);

    let _esim = pcsc.insert(1, "euicc.toml");
    sub.expect("the eSIM's row with its record", |m| {
        m.payload["iccid"] == ESIM && m.payload["platform"]["plan"] == "Travel 5GB"
    });
    let qr = format!("{} && {}.querySelector('img.qr')", row(ESIM), row(ESIM));
    browser.until(
        "the eSIM's QR code, drawn",
        &format!(
            "({qr}) && ({qr}).complete && ({qr}).naturalWidth > 0 && ({qr}).alt.includes('LPA:1$')"
        ),
        WAIT,
    );
    let cells = browser.js(
        &format!("return Array.from({}.cells, c => c.innerText);", row(ESIM)),
        json!([]),
    );
    let cells: Vec<String> = serde_json::from_value(cells).unwrap();
    assert!(cells[0].contains("eSIM"), "marked eSIM: {cells:?}");
    assert!(cells[1].contains("Active"), "status as a word: {cells:?}");
    assert_eq!(cells[4], "Travel 5GB", "plan: {cells:?}");
    let png = browser.screenshot_of(&format!("tr[data-iccid=\"{ESIM}\"] img.qr"));
    assert_eq!(decode_qr(&png, state.path()), CODE);

    // simgate's broker goes away: the page still shows what happens.
    broker.stop();
    let _usim = pcsc.insert(0, "usim-20digit.toml");
    browser.until("a card read with the broker gone", &row(USIM20), WAIT);
    browser.until(
        "the page still live",
        "document.getElementById('live').classList.contains('on')",
        WAIT,
    );
    station.interrupt();
}

#[test]
fn a_request_without_the_token_changes_nothing_and_the_page_s_button_goes_through_the_command_path()
{
    let pcsc = Pcsc::start();
    let broker = Broker::start();
    let state = TempDir::new("state");
    let agent = "gw-web";
    let cfg = state.path().join("simgate.toml");
    std::fs::write(&cfg, format!("[http]\ntoken = \"{TOKEN}\"\n")).unwrap();
    let mut sub = broker.subscribe(&format!("simgate/v1/{agent}/#"));
    let _card = pcsc.insert(0, "usim.toml");
    let port = support::free_port();
    let mut run = Proc::spawn(
        "simgate run",
        pcsc.simgate()
            .arg("--config")
            .arg(&cfg)
            .args(support::run_args(&broker.url(), agent))
            .arg(state.path())
            .args(["--http", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    sub.expect("the SIM's row", |m| {
        m.topic.ends_with(&format!("sim/{USIM}/state")) && m.payload["present"] == true
    });
    await_page(port, &mut run);

    // Without the token, with a wrong one: refused, and nothing reaches the daemon.
    let cmd = |id: &str| {
        json!({"id": id, "iccid": USIM, "action": "request_refill", "params": {}}).to_string()
    };
    let (s, _) = http(port, "POST", "/api/command", &[], Some(&cmd("no-token"))).unwrap();
    assert_eq!(s, 401);
    let wrong = [("Authorization", "Bearer tech-0123456789abcdeX")];
    let (s, _) = http(
        port,
        "POST",
        "/api/command",
        &wrong,
        Some(&cmd("bad-token")),
    )
    .unwrap();
    assert_eq!(s, 401);
    let (s, _) = http(port, "GET", "/no/such/page", &[], None).unwrap();
    assert_eq!(s, 404);

    // The technician unlocks the page and presses the refill button.
    let browser = Browser::start();
    open(&browser, port);
    browser.until("the USIM's row", &row(USIM), WAIT);
    assert_eq!(
        browser.js(
            &format!("return {}.querySelectorAll('button').length;", row(USIM)),
            json!([])
        ),
        0,
        "no buttons before the token"
    );
    browser.js(
        &format!("document.getElementById('token').value = '{TOKEN}'; document.querySelector('#token-form button').click();"),
        json!([]),
    );
    browser.until(
        "the refill button",
        &format!("{}.querySelector('button')", row(USIM)),
        WAIT,
    );
    browser.click(&format!("tr[data-iccid=\"{USIM}\"] button"));
    browser.answer_prompt("");
    // Its lifecycle on the platform's topic: the first command status the daemon ever
    // published is this one (the refused requests above published none).
    let first = sub.expect("a command status", |m| {
        m.topic.contains("/cmd/") && m.topic.ends_with("/status")
    });
    let id = first.payload["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("web-"), "{}", first.payload);
    // Usually `received`; on a loaded machine a newer status may have replaced it in
    // the outbox before it went out (MQTT.md, "Durability": per-command coalescing).
    assert!(
        ["received", "executing", "successful", "failed"]
            .contains(&first.payload["status"].as_str().unwrap_or("")),
        "{}",
        first.payload
    );
    let fin = support::final_status(&mut sub, agent, &id);
    // And on the page, as it ended.
    let shown = browser.until(
        "the command's outcome on the page",
        &format!(
            "Array.from(document.querySelectorAll('.cmd-state')).map(e => e.innerText).find(t => t.startsWith('request_refill: {}'))",
            fin.payload["status"].as_str().unwrap()
        ),
        WAIT,
    );
    assert!(shown.as_str().is_some(), "{shown}");
    run.interrupt();
}
