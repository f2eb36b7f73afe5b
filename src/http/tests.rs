//! The page's handlers and its event stream, through the router itself
//! (tower::ServiceExt::oneshot): no socket, a real store in a temporary directory.

use super::*;
use crate::sim::{FormFactor, Location, Observed, PlatformRecord};
use axum::body::Body;
use axum::http::Request;
use futures_util::StreamExt;
use tower::ServiceExt;

const ICCID: &str = "8988211000000430010";
const ESIM: &str = "8949000000000000018";
const EID: &str = "89049032123451234512345678901235";
const TOKEN: &str = "0123456789abcdef-token";

struct Rig {
    page: Page,
    act: mpsc::Receiver<WebCommand>,
    dir: PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rig(tag: &str, token: Option<&str>) -> Rig {
    let dir = std::env::temp_dir().join(format!("simgate-http-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(&dir).unwrap();
    let (tx, act) = mpsc::channel(4);
    Rig {
        page: Page {
            feed: Feed::new("run", "gw-1"),
            store,
            token: token.map(Into::into),
            act: Some(tx),
            csv: None,
            cancel: CancellationToken::new(),
            probe: None,
        },
        act,
        dir,
    }
}

fn sim(iccid: &str) -> Observed {
    Observed::new(
        iccid,
        true,
        Location::Reader {
            reader: "Virtual PCD 00 00".into(),
        },
        1_700_000_000,
    )
}

async fn call(page: &Page, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let resp = router(page.clone()).oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn post(body: &str, token: Option<&str>) -> Request<Body> {
    let mut r = Request::post("/api/command").header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    r.body(Body::from(body.to_string())).unwrap()
}

/// The next message on a page's stream, as JSON.
async fn next(stream: &mut axum::body::BodyDataStream) -> serde_json::Value {
    let mut text = String::new();
    // One SSE event ends with an empty line (HTML §9.2.6); a frame may hold part of one.
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a message within 5 s")
            .expect("the stream open")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let data: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {text}"))
}

async fn open_stream(page: &Page) -> axum::body::BodyDataStream {
    let resp = router(page.clone()).oneshot(get("/events")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "text/event-stream",
        "an event stream"
    );
    resp.into_body().into_data_stream()
}

#[tokio::test]
async fn the_page_its_styles_and_script_are_served_from_the_binary_and_anything_else_is_404() {
    let r = rig("assets", None);
    let (s, h, body) = call(&r.page, get("/")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(h[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
    assert!(
        body.contains("/app.js") && body.contains("/app.css"),
        "{body}"
    );
    assert!(body.contains("<thead id=\"head\">"), "{body}");
    let (s, h, js) = call(&r.page, get("/app.js")).await;
    // The columns are the script's, drawn when some row has something for them.
    for col in [
        "ICCID",
        "Present",
        "Type",
        "Status",
        "In session",
        "Data left",
        "This month",
    ] {
        assert!(js.contains(&format!("label: \"{col}\"")), "column {col}");
    }
    assert_eq!(
        (s, h[header::CONTENT_TYPE].to_str().unwrap()),
        (StatusCode::OK, "text/javascript; charset=utf-8")
    );
    let (s, _, _) = call(&r.page, get("/app.css")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, body) = call(&r.page, get("/etc/passwd")).await;
    assert_eq!(
        (s, body.as_str()),
        (StatusCode::NOT_FOUND, "no such page\n")
    );
    let (s, _, _) = call(&r.page, Request::delete("/").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_page_gets_the_whole_picture_first_then_each_change() {
    let r = rig("stream", None);
    r.page.store.put_observed(&sim(ICCID)).unwrap();
    let mut s = open_stream(&r.page).await;
    let snap = next(&mut s).await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["rows"][0]["row"]["iccid"], ICCID);
    assert_eq!(snap["recent"]["mode"], "run");
    assert_eq!(snap["can_act"], false, "no token: read-only");
    assert_eq!(r.page.feed.pages(), 1);

    // A change: exactly the row, as the platform gets it (contract::SimState).
    let mut later = sim(ESIM);
    later.form_factor = Some(FormFactor::Esim);
    r.page.store.put_observed(&later).unwrap();
    let row = r.page.store.row(&later).unwrap();
    r.page.feed.row(&row, Some(1.5));
    let msg = next(&mut s).await;
    assert_eq!(msg["type"], "row");
    assert_eq!(msg["row"]["iccid"], ESIM);
    assert_eq!(msg["row"]["form_factor"], "esim");
    assert_eq!(msg["this_month_mb"], 1.5);

    // A page that goes away leaves nothing behind: its receiver is gone.
    drop(s);
    assert_eq!(r.page.feed.pages(), 0);
}

#[tokio::test]
async fn a_page_that_fell_behind_the_ring_gets_the_snapshot_again_not_a_gap() {
    let r = rig("lag", None);
    r.page.store.put_observed(&sim(ICCID)).unwrap();
    let mut s = open_stream(&r.page).await;
    assert_eq!(next(&mut s).await["type"], "snapshot");
    let row = r.page.store.row(&sim(ICCID)).unwrap();
    for _ in 0..300 {
        r.page.feed.row(&row, None);
    }
    let msg = next(&mut s).await;
    assert_eq!(msg["type"], "snapshot", "{msg}");
    assert_eq!(msg["rows"][0]["row"]["iccid"], ICCID);
    // Then changes again, from where the snapshot stood.
    r.page.feed.note("reader ready: Virtual PCD 00 01");
    let msg = next(&mut s).await;
    assert_eq!(msg["type"], "note");
    assert_eq!(msg["note"]["text"], "reader ready: Virtual PCD 00 01");
}

#[tokio::test]
async fn the_stream_ends_when_simgate_stops() {
    let r = rig("cancel", None);
    let mut s = open_stream(&r.page).await;
    assert_eq!(next(&mut s).await["type"], "snapshot");
    r.page.cancel.cancel();
    let end = tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .unwrap();
    assert!(end.is_none(), "the stream ended");
}

#[tokio::test]
async fn a_station_read_and_its_warnings_reach_the_page_and_stay_for_a_page_opened_later() {
    let r = rig("station", None);
    r.page.feed.station(
        &crate::sim::Batch::default(),
        &["Virtual PCD 00 00".into()],
        true,
    );
    let mut s = open_stream(&r.page).await;
    next(&mut s).await;
    let mut read = crate::observe::CardReport::new(
        "Virtual PCD 00 00",
        &Err(crate::reader::ReaderError::NoCard(
            "Virtual PCD 00 00".into(),
        )),
        1_700_000_000,
        12,
    );
    read.n = Some(2);
    read.warnings
        .push("DUPLICATE: already read in this batch as #1".into());
    let tally = Tally {
        reads: 2,
        unique: 1,
        warned: 1,
    };
    r.page.feed.read(&read, tally);
    let msg = next(&mut s).await;
    assert_eq!(msg["type"], "read");
    assert_eq!(
        msg["read"]["warnings"][0],
        "DUPLICATE: already read in this batch as #1"
    );
    assert_eq!(msg["tally"]["warned"], 1);

    let mut s2 = open_stream(&r.page).await;
    let snap = next(&mut s2).await;
    assert_eq!(snap["recent"]["station"]["tally"]["reads"], 2);
    assert_eq!(snap["recent"]["station"]["csv"], true);
    assert_eq!(
        snap["recent"]["station"]["reads"][0]["warnings"][0],
        "DUPLICATE: already read in this batch as #1"
    );
}

#[tokio::test]
async fn more_pages_than_the_cap_are_refused_503() {
    let r = rig("cap", None);
    let mut open = Vec::new();
    for _ in 0..MAX_PAGES {
        open.push(open_stream(&r.page).await);
    }
    let (s, _, body) = call(&r.page, get("/events")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    open.pop();
    assert_eq!(r.page.feed.pages(), MAX_PAGES - 1);
    let _again = open_stream(&r.page).await;
}

#[tokio::test]
async fn the_qr_code_is_the_activation_code_when_the_record_has_one_else_the_eid() {
    let r = rig("qr", None);
    let mut e = sim(ESIM);
    e.form_factor = Some(FormFactor::Esim);
    e.eid = Some(EID.into());
    r.page.store.put_observed(&e).unwrap();
    assert_eq!(
        qr_payload(&r.page.store, ESIM).unwrap().as_deref(),
        Some(EID)
    );
    let code = "LPA:1$smdp.example.com$04386-AGYFT-A74Y8-3F815";
    r.page
        .store
        .put_platform(
            ESIM,
            &PlatformRecord {
                activation_code: Some(code.into()),
                ..PlatformRecord::default()
            },
        )
        .unwrap();
    assert_eq!(
        qr_payload(&r.page.store, ESIM).unwrap().as_deref(),
        Some(code)
    );
    let (s, h, body) = call(&r.page, get(&format!("/qr/{ESIM}"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "image/svg+xml");
    assert!(body.contains("<svg") && body.contains("#000000"), "{body}");
    // The SVG is the code of the payload, the same modules as the QR of that text.
    assert_eq!(body, qr_svg(code).unwrap());

    let (s, _, _) = call(&r.page, get(&format!("/qr/{ICCID}"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a SIM with no code and no EID");
    let (s, _, _) = call(&r.page, get("/qr/..%2F..%2Fetc")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn without_a_configured_token_the_page_is_read_only_and_nothing_reaches_the_daemon() {
    let mut r = rig("readonly", None);
    let body = format!(r#"{{"id":"web-1","iccid":"{ICCID}","action":"request_refill"}}"#);
    let (s, _, text) = call(&r.page, post(&body, Some("anything-at-all-here"))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("read-only"), "{text}");
    assert!(r.act.try_recv().is_err(), "nothing reached the daemon");
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_401_and_nothing_reaches_the_daemon() {
    let mut r = rig("badtoken", Some(TOKEN));
    let body = format!(r#"{{"id":"web-1","iccid":"{ICCID}","action":"request_refill"}}"#);
    for token in [None, Some("0123456789abcdef-tokeN"), Some("short")] {
        let (s, h, _) = call(&r.page, post(&body, token)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(h[header::WWW_AUTHENTICATE], "Bearer");
    }
    let (s, _, _) = call(&r.page, get("/api/token")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(r.act.try_recv().is_err(), "nothing reached the daemon");
}

#[tokio::test]
async fn an_oversized_body_is_413_and_a_bad_command_400_and_neither_reaches_the_daemon() {
    let mut r = rig("badbody", Some(TOKEN));
    let big = format!(
        r#"{{"id":"web-1","iccid":"{ICCID}","action":"request_refill","pad":"{}"}}"#,
        "x".repeat(MAX_BODY)
    );
    let (s, _, _) = call(&r.page, post(&big, Some(TOKEN))).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    for (body, why) in [
        ("not json".to_string(), "not JSON"),
        (
            format!(r#"{{"id":"web-1","iccid":"{ICCID}","action":"set_record","params":{{}}}}"#),
            "request_refill or swap",
        ),
        (
            format!(r#"{{"id":"web 1","iccid":"{ICCID}","action":"request_refill"}}"#),
            "id:",
        ),
        (
            format!(r#"{{"id":"web-1","iccid":"{ICCID}","action":"swap","params":{{}}}}"#),
            "to_slot",
        ),
    ] {
        let (s, _, text) = call(&r.page, post(&body, Some(TOKEN))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {text}");
        assert!(text.contains(why), "{body}: {text}");
    }
    assert!(r.act.try_recv().is_err(), "nothing reached the daemon");
}

#[tokio::test]
async fn with_the_token_a_command_goes_to_the_daemon_as_a_platform_command_and_202_once_claimed() {
    let mut r = rig("act", Some(TOKEN));
    let (s, _, _) = call(
        &r.page,
        Request::get("/api/token")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let page = r.page.clone();
    let body =
        format!(r#"{{"id":"web-7","iccid":"{ICCID}","action":"swap","params":{{"to_slot":2}}}}"#);
    let call = tokio::spawn(async move { call(&page, post(&body, Some(TOKEN))).await });
    let got = r.act.recv().await.expect("the daemon got it");
    assert_eq!(got.command.id, "web-7");
    assert_eq!(got.command.action, crate::contract::Action::Swap);
    assert_eq!(
        got.command.params,
        crate::contract::Params::Swap(crate::contract::SwapTarget::ToSlot(2))
    );
    assert!(got.command.expires_at > crate::time::unix_now());
    got.claimed.send(()).unwrap();
    let (s, _, text) = call.await.unwrap();
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(text, r#"{"id":"web-7"}"#);
}

#[tokio::test]
async fn a_station_page_takes_no_commands_and_serves_its_batch_csv() {
    let mut r = rig("stationcsv", Some(TOKEN));
    r.page.act = None;
    let body = format!(r#"{{"id":"web-1","iccid":"{ICCID}","action":"request_refill"}}"#);
    let (s, _, _) = call(&r.page, post(&body, Some(TOKEN))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, text) = call(&r.page, get("/batch.csv")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(text.contains("--csv"), "{text}");
    let csv = r.dir.join("batch.csv");
    std::fs::write(&csv, "n,iccid\n1,8988211000000430010\n").unwrap();
    r.page.csv = Some(csv);
    let (s, h, text) = call(&r.page, get("/batch.csv")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        h[header::CONTENT_DISPOSITION],
        "attachment; filename=\"batch.csv\""
    );
    assert_eq!(text, "n,iccid\n1,8988211000000430010\n");
}

#[tokio::test]
async fn a_swap_s_steps_and_a_command_s_lifecycle_reach_the_page_and_a_later_page_gets_them() {
    use crate::contract::{CommandStatus, CommandStatusWord, EventKind, SwapStep};
    let r = rig("swap", None);
    let mut s = open_stream(&r.page).await;
    next(&mut s).await;
    let step = |step, ok| EventKind::SwapStep {
        id: "web-9".into(),
        iccid: ICCID.into(),
        step,
        ok,
        new_iccid: None,
        detail: "slot 2".into(),
        secs: None,
    };
    r.page.feed.event(&step(SwapStep::ALL[0], None));
    r.page.feed.event(&step(SwapStep::ALL[0], Some(true)));
    let msg = next(&mut s).await;
    assert_eq!(msg["type"], "swap_step");
    assert_eq!(msg["swap"]["steps"].as_array().unwrap().len(), 1);
    let msg = next(&mut s).await;
    assert_eq!(msg["swap"]["steps"][1]["ok"], true, "{msg}");
    // Other events are the platform's business, not the page's.
    r.page.feed.event(&EventKind::Removed {
        iccid: ICCID.into(),
        location: sim(ICCID).location,
    });
    let status = |word| CommandStatus {
        v: 1,
        id: "web-9".into(),
        iccid: ICCID.into(),
        action: "swap".into(),
        status: word,
        code: None,
        reason: None,
        rows: None,
        result: None,
        profile: None,
        ts: 1,
    };
    r.page.feed.command(&status(CommandStatusWord::Received));
    r.page.feed.command(&status(CommandStatusWord::Executing));
    assert_eq!(next(&mut s).await["command"]["status"], "received");
    assert_eq!(next(&mut s).await["command"]["status"], "executing");

    let mut later = open_stream(&r.page).await;
    let snap = next(&mut later).await;
    assert_eq!(
        snap["recent"]["swaps"][0]["steps"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let commands = snap["recent"]["commands"].as_array().unwrap();
    assert_eq!(commands.len(), 1, "one entry per command id: {commands:?}");
    assert_eq!(commands[0]["status"], "executing");
}
