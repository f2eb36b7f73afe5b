//! A real browser for the station page's tests: Debian's chromium, headless, driven
//! through chromedriver's WebDriver HTTP API (W3C WebDriver, §6 "Protocol") by a few
//! plain HTTP/1.1 requests over a TcpStream; no WebDriver crate.

use super::{free_port, which, Proc, TempDir};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const BROWSER_HINT: &str = "headless chromium, chromedriver and zbarimg are needed: \
run `make deps` (or `apt-get install chromium chromium-driver zbar-tools`)";

/// How WebDriver names an element in JSON (W3C WebDriver §12.1, "web element identifier").
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless chromium with one WebDriver session.
pub struct Browser {
    port: u16,
    session: String,
    _driver: Proc,
    _profile: TempDir,
}

/// Flags chromium needs as root in a container, and none of its own network traffic.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,800",
];

impl Browser {
    pub fn start() -> Browser {
        for tool in ["chromium", "chromedriver", "zbarimg"] {
            assert!(which(tool), "{tool} not found: {BROWSER_HINT}");
        }
        let port = free_port();
        let profile = TempDir::new("chromium");
        let driver = Proc::spawn(
            "chromedriver",
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        // chromedriver says nothing when it is ready but answers /status.
        super::wait_for("chromedriver to listen", Duration::from_secs(20), || {
            request(port, "GET", "/status", None).is_ok_and(|v| v["value"]["ready"] == true)
        });
        let mut args: Vec<String> = FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
            "timeouts": {"script": 30_000, "pageLoad": 30_000},
        }}});
        let v = request(port, "POST", "/session", Some(&caps))
            .unwrap_or_else(|e| panic!("chromium did not start: {e}; {BROWSER_HINT}"));
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}; {BROWSER_HINT}"))
            .to_string();
        Browser {
            port,
            session,
            _driver: driver,
            _profile: profile,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let v = request(self.port, method, &path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        if v["value"].get("error").is_some() {
            panic!("WebDriver {method} {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    /// The page's viewport exactly `width` × `height` CSS pixels, as a laptop's window
    /// or a phone (`mobile`: the page's meta viewport applies) shows it (Chrome DevTools
    /// Protocol, Emulation.setDeviceMetricsOverride, through chromedriver).
    pub fn viewport(&self, width: u32, height: u32, mobile: bool) {
        self.call(
            "POST",
            "/goog/cdp/execute",
            Some(
                &json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": {
                    "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile,
                }}),
            ),
        );
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Run `script` (a function body; `arguments` are `args`) in the page.
    pub fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": args})),
        )
    }

    /// Wait until the JavaScript expression `cond` is truthy in the page, woken by the
    /// page's own DOM changes (a MutationObserver) and by resources finishing their load
    /// (an image's load event), within `limit`. Returns the value.
    pub fn until(&self, what: &str, cond: &str, limit: Duration) -> Value {
        let script = format!(
            r#"const done = arguments[arguments.length - 1];
            const limit = arguments[0];
            const test = () => {{ try {{ return ({cond}); }} catch (e) {{ return null; }} }};
            let v = test();
            if (v) return done(v);
            let over = false;
            const end = (v) => {{
              if (over) return;
              over = true;
              obs.disconnect();
              document.removeEventListener('load', check, true);
              clearTimeout(t);
              done(v);
            }};
            const check = () => {{ const v = test(); if (v) end(v); }};
            const obs = new MutationObserver(check);
            obs.observe(document, {{subtree: true, childList: true, characterData: true, attributes: true}});
            // An image finishing its load changes no DOM node: its load event, caught here.
            document.addEventListener('load', check, true);
            const t = setTimeout(() => end(null), limit);"#
        );
        let v = self.call(
            "POST",
            "/execute/async",
            Some(&json!({"script": script, "args": [limit.as_millis() as u64]})),
        );
        if v.is_null() || v == false {
            let body = self.js("return document.body.innerText;", json!([]));
            panic!(
                "timed out after {limit:?} waiting for {what} ({cond}); the page says:\n{}",
                body.as_str().unwrap_or("")
            );
        }
        v
    }

    fn element(&self, css: &str) -> String {
        let el = self.call(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": css})),
        );
        el.get(ELEMENT_KEY)
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("no element {css}: {el}"))
            .to_string()
    }

    /// Click the element `css` selects, as a person would.
    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/click"), Some(&json!({})));
    }

    /// Type `text` into the page's open prompt() and accept it.
    pub fn answer_prompt(&self, text: &str) {
        self.call("POST", "/alert/text", Some(&json!({ "text": text })));
        self.call("POST", "/alert/accept", Some(&json!({})));
    }

    /// A PNG of the element `css` selects, as the page draws it.
    pub fn screenshot_of(&self, css: &str) -> Vec<u8> {
        let id = self.element(css);
        // Whole in the viewport first: chromedriver clips an element's shot to it.
        self.js(
            "arguments[0].scrollIntoView({block: 'center'});",
            json!([{ ELEMENT_KEY: id }]),
        );
        let shot = self.call("GET", &format!("/element/{id}/screenshot"), None);
        base64_decode(shot.as_str().expect("base64 PNG"))
    }

    /// A PNG of the whole window.
    pub fn screenshot(&self) -> Vec<u8> {
        let shot = self.call("GET", "/screenshot", None);
        base64_decode(shot.as_str().expect("base64 PNG"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = request(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}

/// What zbarimg reads from a PNG: the QR code's text.
pub fn decode_qr(png: &[u8], dir: &std::path::Path) -> String {
    let path = dir.join("qr.png");
    std::fs::write(&path, png).expect("write the QR screenshot");
    let out = Command::new("zbarimg")
        .args(["--raw", "-q", "-Sdisable", "-Sqrcode.enable"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("zbarimg: {e}; {BROWSER_HINT}"));
    assert!(
        out.status.success(),
        "zbarimg found no QR code in {} ({})",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One HTTP/1.1 request with a JSON body, the connection closed after it.
pub fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let (status, text) = http(
        port,
        method,
        path,
        &[],
        body.map(|b| b.to_string()).as_deref(),
    )?;
    serde_json::from_str(&text).map_err(|e| format!("HTTP {status}: not JSON ({e}): {text}"))
}

/// A plain HTTP/1.1 exchange: the status and the body as text (the page's own tests use
/// it too, for requests a browser would not make).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    // chromedriver answers `Connection:close` and keeps the socket open: the body is
    // read by its Content-Length, else chunked to its last chunk, else to the end.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let started = Instant::now();
    let mut fill = |raw: &mut Vec<u8>| -> Result<bool, String> {
        let n = s
            .read(&mut buf)
            .map_err(|e| format!("{e} after {:?}", started.elapsed()))?;
        raw.extend_from_slice(&buf[..n]);
        Ok(n > 0)
    };
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if !fill(&mut raw)? {
            return Err("connection closed before the HTTP head".into());
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status")?;
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let body = &raw[head_end + 4..];
        let done = match length {
            Some(n) => body.len() >= n,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if done || !fill(&mut raw)? {
            break;
        }
    }
    let rest = String::from_utf8_lossy(&raw[head_end + 4..]).into_owned();
    let body = if chunked { dechunk(&rest) } else { rest };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Standard base64 (RFC 4648 §4), as WebDriver sends screenshots.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => 0,
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let n = chunk
            .iter()
            .fold(0u32, |acc, &c| (acc << 6) | u32::from(val(c)))
            << (6 * (4 - chunk.len() as u32));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad.min(2)]);
    }
    out
}
