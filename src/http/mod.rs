//! The station page: one live web page served by simgate itself (`simgate run --http`,
//! `simgate station --http`), the platform's SIMs page for the SIMs this machine holds.
//! View and act, never configure: the page reads the store and the [`Feed`]; its only
//! actions (request a refill, start a swap) take the configured token and enter the
//! daemon's loop as commands, through the same exactly-once path as the platform's
//! (src/daemon/commands/).
//!
//! The page, its styles and script are embedded in the binary (src/http/page/): nothing
//! to build or fetch, no internet needed. Live updates are server-sent events (HTML
//! Living Standard §9.2): a snapshot first, then changes.

mod feed;

pub use feed::{Feed, ModemView, Recent, Tally, RECENT_READS};

use crate::contract::{self, Command};
use crate::store::Store;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The largest request body taken (a command is a few hundred bytes): beyond it, 413.
pub const MAX_BODY: usize = 4096;
/// Pages open at once; one more is answered 503 (each costs a receiver and a socket).
pub const MAX_PAGES: usize = 64;
/// How long a command from the page waits for the daemon's loop to claim it.
const CLAIM_WAIT: Duration = Duration::from_secs(10);
/// A page command expires after this (a repeat after it is refused as expired).
const COMMAND_LIFETIME_SECS: u64 = 600;
/// The actions a page may ask for. Never set_record, suspend, resume: the page does not
/// configure SIMs, the platform does.
pub const PAGE_ACTIONS: &[contract::Action] =
    &[contract::Action::RequestRefill, contract::Action::Swap];

const INDEX: &str = include_str!("page/index.html");
const CSS: &str = include_str!("page/app.css");
const JS: &str = include_str!("page/app.js");

/// Where to serve and who may act.
#[derive(Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    /// The bearer token the buttons need; None: the page is read-only.
    pub token: Option<String>,
    /// Serve `/health` and `/metrics` (`[http] metrics`; `simgate run` only).
    pub metrics: bool,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("metrics", &self.metrics)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("http.listen: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A command from the page for the daemon's loop: claimed there exactly as a platform
/// command is, then `claimed` is answered.
#[derive(Debug)]
pub struct WebCommand {
    pub command: Command,
    pub claimed: oneshot::Sender<()>,
}

/// What a gateway's monitoring asks the daemon at each scrape of `/health` and
/// `/metrics` (src/daemon/service.rs answers).
pub trait Probe: Send + Sync + std::fmt::Debug {
    fn health(&self) -> crate::metrics::Health;
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct Page {
    pub feed: Feed,
    pub store: Store,
    pub token: Option<Arc<str>>,
    /// The daemon's loop; None at a station (it takes no commands).
    pub act: Option<mpsc::Sender<WebCommand>>,
    /// The station's batch CSV, for its download link.
    pub csv: Option<PathBuf>,
    pub cancel: CancellationToken,
    /// Serve `/health` and `/metrics` from this; None: they are 404 like any unknown
    /// path (off unless asked).
    pub probe: Option<Arc<dyn Probe>>,
}

/// Bind `settings.addr` and serve the page until `cancel` fires. Returns the address
/// bound (a port 0 gets one from the system) and the server's task.
pub async fn start(
    settings: &Settings,
    page: Page,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), HttpError> {
    let bind = |source| HttpError::Bind {
        addr: settings.addr,
        source,
    };
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    let cancel = page.cancel.clone();
    let app = router(page);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "station page server stopped");
        }
    });
    tracing::info!(url = %format!("http://{addr}/"), "station page");
    Ok((addr, task))
}

/// The page's routes. Anything else is 404.
pub fn router(page: Page) -> Router {
    let monitored = match page.probe.is_some() {
        true => Router::new()
            .route("/health", get(health))
            .route("/metrics", get(metrics)),
        false => Router::new(),
    };
    monitored
        .route("/", get(index))
        .route("/app.css", get(|| asset("text/css; charset=utf-8", CSS)))
        .route(
            "/app.js",
            get(|| asset("text/javascript; charset=utf-8", JS)),
        )
        .route("/events", get(events))
        .route("/state", get(state))
        .route("/qr/{key}", get(qr))
        .route("/batch.csv", get(batch_csv))
        .route("/api/token", get(check_token))
        .route("/api/command", post(command))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(page)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into() + "\n",
    )
        .into_response()
}

/// `/health`: the daemon's state as JSON (`metrics::Health`); 503 until it is ready
/// (its first look at readers and modems done), so a load balancer or a probe waits for
/// it. A broker away is no failure of the gateway (the outbox keeps everything): it is
/// said in the body, not in the status.
async fn health(State(page): State<Page>) -> Response {
    let Some(probe) = &page.probe else {
        return not_found().await;
    };
    let h = probe.health();
    let status = match h.ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        serde_json::to_string(&h).unwrap_or_default() + "\n",
    )
        .into_response()
}

/// `/metrics`: the Prometheus text exposition (src/metrics.rs).
async fn metrics(State(page): State<Page>) -> Response {
    let Some(probe) = &page.probe else {
        return not_found().await;
    };
    let body = crate::metrics::exposition(crate::metrics::counters(), &probe.health());
    (
        [
            (header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "no such page")
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Only its own scripts, styles and images: nothing from elsewhere.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self'; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
        .into_response()
}

async fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The whole picture: every SIM's row (from the store) and what the feed keeps.
pub fn snapshot(page: &Page, recent: &Recent) -> Result<String, crate::store::StoreError> {
    let month = crate::time::month_key(crate::time::unix_now());
    let mut rows = Vec::new();
    for obs in page.store.all_observed()? {
        let this_month = page.store.month_usage(&obs.iccid, &month)?;
        let mut row = serde_json::json!({ "row": page.store.row(&obs)? });
        // Left out, never null, when nothing was used this month (as in a `row` change).
        if this_month.total() > 0 {
            row["this_month_mb"] = this_month.megabytes().into();
        }
        rows.push(row);
    }
    let msg = serde_json::json!({
        "type": "snapshot",
        "rows": rows,
        "recent": recent,
        "can_act": page.token.is_some() && page.act.is_some(),
        "pages": page.feed.pages(),
    });
    Ok(msg.to_string())
}

async fn state(State(page): State<Page>) -> Response {
    match snapshot(&page, &page.feed.recent()) {
        Ok(s) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            s,
        )
            .into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("store: {e}")),
    }
}

/// One page's stream: the snapshot, then each change; after a lag (the page fell
/// more than the ring behind) the snapshot again. It ends when the page goes (hyper
/// drops it, and with it the receiver) or simgate stops.
struct Stream {
    page: Page,
    rx: broadcast::Receiver<Arc<str>>,
    first: Option<String>,
}

async fn events(State(page): State<Page>) -> Response {
    if page.feed.pages() >= MAX_PAGES {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_PAGES} pages are open already; close one"),
        );
    }
    let (recent, rx) = page.feed.subscribe();
    let first = match snapshot(&page, &recent) {
        Ok(s) => s,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("store: {e}")),
    };
    let start = Stream {
        page,
        rx,
        first: Some(first),
    };
    let stream = futures_util::stream::unfold(start, |mut st| async move {
        if let Some(s) = st.first.take() {
            return Some((Ok::<_, Infallible>(SseEvent::default().data(s)), st));
        }
        let got = tokio::select! {
            _ = st.page.cancel.cancelled() => return None,
            got = st.rx.recv() => got,
        };
        match got {
            Ok(text) => Some((Ok(SseEvent::default().data(&*text)), st)),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::debug!(missed = n, "a page fell behind: sending it the snapshot");
                let (recent, rx) = st.page.feed.subscribe();
                st.rx = rx;
                match snapshot(&st.page, &recent) {
                    Ok(s) => Some((Ok(SseEvent::default().data(s)), st)),
                    Err(e) => {
                        tracing::warn!(error = %e, "snapshot for a page failed");
                        None
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// What an eSIM's QR code carries: the platform's activation code (SGP.22 §4.1) when
/// its record has one, else the EID.
pub fn qr_payload(store: &Store, key: &str) -> Result<Option<String>, crate::store::StoreError> {
    if let Some(code) = store.get_platform(key)?.and_then(|p| p.activation_code) {
        return Ok(Some(code));
    }
    Ok(store.get_observed(key)?.and_then(|o| o.eid))
}

/// `payload` as an SVG QR code with its quiet zone (ISO/IEC 18004 §9.1: 4 modules).
pub fn qr_svg(payload: &str) -> Result<String, qrcode::types::QrError> {
    use qrcode::render::svg;
    let code = qrcode::QrCode::new(payload.as_bytes())?;
    Ok(code
        .render::<svg::Color<'_>>()
        .min_dimensions(160, 160)
        .quiet_zone(true)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build())
}

async fn qr(State(page): State<Page>, Path(key): Path<String>) -> Response {
    if !contract::valid_iccid(&key) {
        return text(StatusCode::NOT_FOUND, "not an ICCID or EID");
    }
    match qr_payload(&page.store, &key) {
        Ok(Some(p)) => match qr_svg(&p) {
            Ok(svg) => (
                [
                    (header::CONTENT_TYPE, "image/svg+xml"),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                svg,
            )
                .into_response(),
            Err(e) => text(StatusCode::UNPROCESSABLE_ENTITY, format!("no QR code: {e}")),
        },
        Ok(None) => text(
            StatusCode::NOT_FOUND,
            "no activation code or EID for this SIM",
        ),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("store: {e}")),
    }
}

async fn batch_csv(State(page): State<Page>) -> Response {
    let Some(path) = &page.csv else {
        return text(
            StatusCode::NOT_FOUND,
            "no batch CSV: start the station with --csv FILE",
        );
    };
    match tokio::fs::read(path).await {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"batch.csv\"",
                ),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(e) => text(StatusCode::NOT_FOUND, format!("{}: {e}", path.display())),
    }
}

/// The token check: None when the request carries the configured token, else the
/// response that refuses it.
fn refused(page: &Page, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &page.token else {
        return Some(text(
            StatusCode::FORBIDDEN,
            "read-only page: no [http] token is configured",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if same(g.as_bytes(), token.as_bytes()) => None,
        _ => {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "a valid token is needed (Authorization: Bearer TOKEN)",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Some(r)
        }
    }
}

/// Compare without stopping at the first difference (no timing hint of the prefix).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn check_token(State(page): State<Page>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&page, &headers) {
        return r;
    }
    if page.act.is_none() {
        return text(StatusCode::FORBIDDEN, "a station takes no commands");
    }
    StatusCode::NO_CONTENT.into_response()
}

/// A command from the page, for the daemon's loop:
/// `{"id": "...", "iccid": "...", "action": "request_refill"|"swap", "params": {...}}`.
/// Checked as the platform's commands are (contract::parse_command); 202 once the loop
/// claimed its id, its lifecycle then on the event stream.
async fn command(State(page): State<Page>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = refused(&page, &headers) {
        return r;
    }
    let Some(act) = &page.act else {
        return text(StatusCode::FORBIDDEN, "a station takes no commands");
    };
    let msg: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) => return text(StatusCode::BAD_REQUEST, "body: not a JSON object"),
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("body: not JSON: {e}")),
    };
    let page_may = || {
        let words: Vec<&str> = PAGE_ACTIONS.iter().map(|a| a.word()).collect();
        text(
            StatusCode::BAD_REQUEST,
            format!("action: the page may ask for {}", words.join(" or ")),
        )
    };
    let now = crate::time::unix_now();
    let command = match contract::parse_local_command(msg, now, now + COMMAND_LIFETIME_SECS) {
        Ok(c) if PAGE_ACTIONS.contains(&c.action) => c,
        Ok(_) => return page_may(),
        Err(r) if r.code == contract::RefusalCode::UnknownAction => return page_may(),
        Err(r) => return text(StatusCode::BAD_REQUEST, r.reason),
    };
    let id = command.id.clone();
    let (claimed, answer) = oneshot::channel();
    let sent = tokio::time::timeout(CLAIM_WAIT, act.send(WebCommand { command, claimed })).await;
    if !matches!(sent, Ok(Ok(()))) {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is not taking commands now",
        );
    }
    match tokio::time::timeout(CLAIM_WAIT, answer).await {
        Ok(Ok(())) => (
            StatusCode::ACCEPTED,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "id": id }).to_string(),
        )
            .into_response(),
        _ => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon did not take the command",
        ),
    }
}

#[cfg(test)]
mod tests;
