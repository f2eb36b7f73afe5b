//! The station page (src/http) in a real browser — Debian's chromium, headless, through
//! chromedriver — against the real stack: pcscd + vpcd with simgate's virtual cards,
//! mosquitto, `simgate station` and `simgate run` serving the page.

use crate::support;

use serde_json::{json, Value};
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

/// The text of a row's cell under the column `label`; None when the table has no such
/// column (a column is drawn only when some row has something for it).
fn cell(browser: &Browser, iccid: &str, label: &str) -> Option<String> {
    let v = browser.js(
        &format!(
            "const c = {}.querySelector('td[data-label=\"{label}\"]'); return c ? c.innerText : null;",
            row(iccid)
        ),
        json!([]),
    );
    v.as_str().map(String::from)
}

/// What a person cannot see without scrolling sideways: the page wider than its
/// viewport, or the table wider than its box.
fn overflow(browser: &Browser) -> Value {
    browser.js(
        "const m = document.querySelector('main'); const d = document.documentElement;
         return {page: d.scrollWidth - window.innerWidth, table: m.scrollWidth - m.clientWidth};",
        json!([]),
    )
}

/// Whether the element `css` selects lies whole inside the viewport.
fn in_view(browser: &Browser, css: &str) -> bool {
    browser.js(
        &format!(
            "const r = document.querySelector('{css}').getBoundingClientRect();
             return r.width > 0 && r.left >= 0 && r.top >= 0 && r.right <= window.innerWidth + 0.5 && r.bottom <= window.innerHeight + 0.5;"
        ),
        json!([]),
    ) == true
}

/// The two screens the page is made for: a laptop's and a phone's.
const LAPTOP: (u32, u32, bool) = (1366, 768, false);
const PHONE: (u32, u32, bool) = (390, 844, true);

/// A picture of the page for the README (copied from target/screenshots/ into
/// tests/rig/screenshots/ by hand when the page changes).
fn keep_screenshot(browser: &Browser, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    browser.js("window.scrollTo(0, 0);", json!([]));
    std::fs::write(dir.join(name), browser.screenshot()).unwrap();
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
    let id = cell(&browser, USIM, "ICCID").unwrap();
    assert!(
        id.starts_with(USIM),
        "copied, the ICCID is the bare number: {id}"
    );
    let place = cell(&browser, USIM, "Where").unwrap();
    assert!(place.contains(&pcsc.reader(0)), "where: {place}");
    assert!(cell(&browser, USIM, "Present").unwrap().contains("here"));
    assert_eq!(cell(&browser, USIM, "Labels").unwrap(), "lot-9");
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
    assert_eq!(cell(&browser, ESIM, "Type").unwrap(), "eSIM");
    assert!(cell(&browser, ESIM, "Status").unwrap().contains("Active"));
    assert_eq!(cell(&browser, ESIM, "Plan").unwrap(), "Travel 5GB");
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

/// A station's page for the warehouse, at a laptop's and a phone's size: a mute card's
/// warning comes first in its panel and whole (never cut off by the panel), a Blank eSIM
/// is marked Blank, nothing lies off-screen sideways, and no column is dashes only.
#[test]
fn station_page_shows_a_mute_card_s_whole_warning_first_and_a_blank_esim_as_blank_at_both_sizes() {
    let pcsc = Pcsc::start();
    let state = TempDir::new("state");
    let cfg = state.path().join("simgate.toml");
    std::fs::write(&cfg, "[readers]\ncard_timeout_ms = 1500\n").unwrap();
    let port = support::free_port();
    let mut station = Proc::spawn(
        "simgate station",
        pcsc.simgate()
            .arg("--config")
            .arg(&cfg)
            .args(["station", "--json", "--state-dir"])
            .arg(state.path())
            .args(["--label", "lot-7", "--company", "ACME"])
            .args(["--http", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    await_page(port, &mut station);
    let browser = Browser::start();
    let (w, h, m) = LAPTOP;
    browser.viewport(w, h, m);
    open(&browser, port);

    let _blank = pcsc.insert(1, "euicc-blank.toml");
    let eid = "89049032123451234512345678910062";
    browser.until("the Blank eSIM's row", &row(eid), WAIT);
    let _mute = pcsc.insert(0, "mute.toml");
    browser.until(
        "the mute card's warning",
        "Array.from(document.querySelectorAll('#last .warning')).find(w => w.innerText.includes('take it out'))",
        WAIT,
    );
    for (size, name) in [(LAPTOP, "1366"), (PHONE, "390")] {
        let (w, h, m) = size;
        browser.viewport(w, h, m);
        let first = browser.js(
            "const l = document.getElementById('last'); const f = l.firstElementChild;
             return {warning: f.classList.contains('warning'), text: f.innerText,
                     clipped: l.scrollHeight > l.clientHeight + 1 || getComputedStyle(l).overflowY !== 'visible' && l.scrollHeight > l.clientHeight};",
            json!([]),
        );
        assert_eq!(
            first["warning"], true,
            "{name} px: the warning first: {first}"
        );
        assert!(
            first["text"]
                .as_str()
                .unwrap()
                .contains("card does not answer (mute or broken): take it out"),
            "{name} px: the whole warning: {first}"
        );
        assert_eq!(
            first["clipped"], false,
            "{name} px: the panel cuts: {first}"
        );
        browser.js(
            "document.querySelector('#last .warning').scrollIntoView({block: 'nearest'});",
            json!([]),
        );
        assert!(
            in_view(&browser, "#last .warning"),
            "{name} px: the warning fits the screen"
        );
        let o = overflow(&browser);
        assert_eq!(
            o,
            json!({"page": 0, "table": 0}),
            "{name} px: sideways overflow"
        );
        assert_eq!(
            cell(&browser, eid, "Type").unwrap(),
            "Blank eSIM",
            "{name} px"
        );
        browser.js(
            &format!(
                "{}.querySelector('td[data-label=\"Type\"]').scrollIntoView({{block: 'nearest'}});",
                row(eid)
            ),
            json!([]),
        );
        assert!(
            in_view(
                &browser,
                &format!("tr[data-iccid=\"{eid}\"] td[data-label=\"Type\"]")
            ),
            "{name} px: Blank visible"
        );
        // A warehouse person's table: no column that is dashes on every row.
        let empty = browser.js(
            "const heads = Array.from(document.querySelectorAll('#head th')).map(h => h.innerText);
             const rows = Array.from(document.querySelectorAll('#rows tr'));
             return heads.filter((h, i) => rows.every(r => r.cells[i].innerText.trim() === '—'));",
            json!([]),
        );
        assert_eq!(empty, json!([]), "{name} px: columns with nothing in them");
        keep_screenshot(&browser, &format!("station-page-{name}.png"));
    }
    station.interrupt();
}

/// A gateway's page for the technician: a slot swap through `simgate swap`, then at
/// 1366 px nothing is off-screen sideways, the retired SIM is visibly gone (and below
/// the present one), ICCIDs do not wrap, the swap log reads as steps in words; at a
/// phone's width the same holds.
#[test]
fn gateway_page_after_a_swap_shows_the_retired_sim_gone_present_first_and_fits_1366_px() {
    const FIRST: &str = "8901260886258128535";
    const SECOND: &str = "89314404000000000019";
    let broker = Broker::start();
    let state = TempDir::new("state");
    let agent = "gw-page";
    broker.publish(
        &format!("simgate/v1/{agent}/sim/{FIRST}/platform"),
        &[
            "-r",
            "-m",
            &json!({"v":1,"status":"Active","plan":"IoT 1GB","company":"ACME Logistics",
                    "end_user":"Truck 12","data_left_mb":512.5,"days_left":30,
                    "sim_type":"Prepaid","labels":["fleet-a"],"note":"spare in the cab"})
            .to_string(),
        ],
    );
    let emu = support::Modem::start("quectel-ec2x");
    let port = support::free_port();
    let mut sub = broker.subscribe(&format!("simgate/v1/{agent}/sim/+/state"));
    let mut run = Proc::spawn(
        "simgate run",
        support::modem_agent_with(
            &broker.url(),
            agent,
            state.path(),
            &emu.port,
            "[modems]\nswap_register_secs = 20\n",
        )
        .args(["--http", &port.to_string()]),
    );
    sub.expect("the first SIM's row with its record", |m| {
        m.payload["iccid"] == FIRST && m.payload["platform"]["plan"] == "IoT 1GB"
    });
    await_page(port, &mut run);
    let browser = Browser::start();
    let (w, h, m) = LAPTOP;
    browser.viewport(w, h, m);
    open(&browser, port);
    browser.until("the first SIM's row", &row(FIRST), WAIT);

    let out = std::process::Command::new(support::simgate_bin())
        .args(["swap", "--broker", &broker.url(), "--agent-id", agent])
        .args([
            "--port",
            &emu.port,
            "--to-slot",
            "2",
            "--id",
            "sw-page",
            "--wait",
            "60",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        !said
            .split_whitespace()
            .any(|w| w.starts_with('#') && w[1..].starts_with(|c: char| c.is_ascii_digit())),
        "event numbers mean nothing to a technician: {said}"
    );
    assert!(said.contains("successful"), "{said}");
    browser.until(
        "the old SIM gone",
        &format!("{} && {}.className === 'absent'", row(FIRST), row(FIRST)),
        WAIT,
    );
    browser.until("the new SIM's row", &row(SECOND), WAIT);
    browser.until(
        "the swap committed on the page",
        "document.getElementById('activity').innerText.includes('Committed')",
        WAIT,
    );
    for (size, name) in [(LAPTOP, "1366"), (PHONE, "390")] {
        let (w, h, m) = size;
        browser.viewport(w, h, m);
        assert_eq!(
            overflow(&browser),
            json!({"page": 0, "table": 0}),
            "{name} px: sideways overflow"
        );
        let order = browser.js(
            "return Array.from(document.querySelectorAll('#rows tr')).map(r => r.dataset.iccid);",
            json!([]),
        );
        assert_eq!(
            order,
            json!([SECOND, FIRST]),
            "{name} px: present SIMs first"
        );
        let gone = format!("tr[data-iccid=\"{FIRST}\"] td[data-label=\"Present\"]");
        browser.js(
            &format!("document.querySelector('{gone}').scrollIntoView({{block: 'nearest'}});"),
            json!([]),
        );
        assert!(
            in_view(&browser, &gone),
            "{name} px: the retired SIM's Present in view"
        );
        assert!(cell(&browser, FIRST, "Present").unwrap().contains("gone"));
        let wrapped = browser.js(
            "return Array.from(document.querySelectorAll('#rows .iccid')).filter(e =>
               e.getBoundingClientRect().height > 1.6 * parseFloat(getComputedStyle(e).fontSize)).map(e => e.innerText);",
            json!([]),
        );
        assert_eq!(wrapped, json!([]), "{name} px: ICCIDs wrapped");
        let log = browser.js(
            "return document.getElementById('activity').innerText;",
            json!([]),
        );
        let log = log.as_str().unwrap();
        assert!(!log.contains("+QDSIM"), "raw AT in the swap log: {log}");
        assert!(log.lines().count() >= 6, "a line per step: {log}");
        keep_screenshot(&browser, &format!("gateway-page-{name}.png"));
    }
    run.interrupt();
}
