//! `simgate emulate smdp`: a test SM-DP+ speaking ES9+ (GSMA SGP.22 §5.6, §6.5) over
//! HTTPS on loopback, for the LPA's tests and the demo. Real cryptography with the
//! keys and certificates of a PKI directory (tests/rig/rsp-pki.sh), profiles as data
//! (devices/smdp/profiles.toml), faults as flags, and a journal of what happened.
//!
//! - [`es9`]: the ES9+ functions, pure (request in, answer and journal lines out).
//! - [`profiles`]: the profiles file and the SAIP package built from each profile.
//! - this module: TLS (rustls with the DPtls certificate) and a small HTTP/1.1 server
//!   around [`es9::Smdp`]. Hand-written rather than hyper: ES9+ is JSON POSTs with a
//!   Content-Length, and a fault must be able to close a connection mid-request.

pub mod es9;
pub mod profiles;

use crate::emu::rsp::RspError;
use es9::{Reply, Smdp};
use rumqttc::tokio_rustls::{rustls, TlsAcceptor};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use es9::Faults;

#[cfg(test)]
mod tests;

/// Where the ES9+ functions live (SGP.22 §6.5.2: https://{address}/gsma/rsp2/es9plus/…).
const ES9_PREFIX: &str = "/gsma/rsp2/es9plus/";
/// A request's header block and body are bounded: a BPP request is a few KB.
const MAX_HEADERS: usize = 16 * 1024;
const MAX_BODY: usize = 1 << 20;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: String,
    pub pki: PathBuf,
    pub profiles: PathBuf,
    /// The SM-DP+ address LPAs must name; default `127.0.0.1:PORT` and `localhost:PORT`.
    pub address: Option<String>,
    pub journal: Option<PathBuf>,
    pub faults: Faults,
}

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SmdpError {
    #[error(transparent)]
    Pki(#[from] RspError),
    #[error(transparent)]
    Profiles(#[from] profiles::ProfilesError),
    #[error("{path}: {message}")]
    Tls { path: PathBuf, message: String },
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("journal {path}: {source}")]
    Journal {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The journal: one JSON object per line, flushed at once so a test reading it sees
/// every line of an answered request.
#[derive(Debug, Clone)]
struct Journal(Option<Arc<Mutex<std::fs::File>>>);

impl Journal {
    fn write(&self, lines: &[serde_json::Value]) {
        let Some(file) = &self.0 else { return };
        // A poisoned lock means a writer panicked mid-line; the file is still usable.
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        for line in lines {
            if let Err(e) = writeln!(f, "{line}") {
                tracing::warn!("journal: {e}");
            }
        }
    }
}

/// The rustls server configuration with the PKI's DPtls certificate and key. Only the
/// DPtls certificate is sent: the CI is the client's trust root (SGP.22 §2.6.6).
fn tls_config(dir: &Path) -> Result<rustls::ServerConfig, SmdpError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|e| SmdpError::Tls {
            path: path.clone(),
            message: e.to_string(),
        })
    };
    let cert_path = dir.join("dptls.pem");
    let key_path = dir.join("dptls.key");
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut read("dptls.pem")?.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| SmdpError::Tls {
                path: cert_path.clone(),
                message: e.to_string(),
            })?;
    if certs.is_empty() {
        return Err(SmdpError::Tls {
            path: cert_path,
            message: "no CERTIFICATE block".into(),
        });
    }
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut read("dptls.key")?.as_slice())
            .ok()
            .flatten()
            .ok_or_else(|| SmdpError::Tls {
                path: key_path.clone(),
                message: "no private key".into(),
            })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| SmdpError::Tls {
            path: key_path,
            message: e.to_string(),
        })
}

/// Load everything, bind, call `ready` with the bound address, and serve until
/// `cancel`.
pub async fn run(
    opts: Options,
    cancel: CancellationToken,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), SmdpError> {
    let pki = es9::Pki::load(&opts.pki)?;
    let profiles = profiles::ProfilesFile::load(&opts.profiles)?;
    let tls = TlsAcceptor::from(Arc::new(tls_config(&opts.pki)?));
    let journal = match &opts.journal {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| SmdpError::Journal {
                    path: path.clone(),
                    source,
                })?;
            Journal(Some(Arc::new(Mutex::new(f))))
        }
        None => Journal(None),
    };
    let listener = TcpListener::bind(&opts.listen)
        .await
        .map_err(|source| SmdpError::Listen {
            addr: opts.listen.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| SmdpError::Listen {
        addr: opts.listen.clone(),
        source,
    })?;
    let addresses = match &opts.address {
        Some(a) => vec![a.clone()],
        None => vec![local.to_string(), format!("localhost:{}", local.port())],
    };
    let smdp = Arc::new(Mutex::new(Smdp::new(addresses, pki, profiles, opts.faults)));
    ready(local);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: the next accept may succeed.
                    tracing::warn!("accept: {e}");
                    continue;
                }
            },
        };
        let (tls, smdp, journal, cancel) =
            (tls.clone(), smdp.clone(), journal.clone(), cancel.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = connection(tcp, peer, tls, smdp, journal) => {}
            }
        });
    }
}

/// One TLS connection: requests one after the other (HTTP/1.1 keep-alive).
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: TlsAcceptor,
    smdp: Arc<Mutex<Smdp>>,
    journal: Journal,
) {
    let stream = match tls.accept(tcp).await {
        Ok(s) => s,
        Err(e) => {
            // A client refusing our certificate ends here (its alert is the error).
            journal.write(&[serde_json::json!({"event": "tls-failed", "peer": peer.to_string(), "error": e.to_string()})]);
            return;
        }
    };
    let mut stream = BufReader::new(stream);
    loop {
        let request = match read_request(&mut stream).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                let _ = respond(&mut stream, e.0, e.1, &[], true).await;
                return;
            }
        };
        if request.method != "POST" {
            let _ = respond(&mut stream, 405, "Method Not Allowed", &[], true).await;
            return;
        }
        let Some(function) = request.path.strip_prefix(ES9_PREFIX) else {
            let _ = respond(&mut stream, 404, "Not Found", &[], request.close).await;
            if request.close {
                return;
            }
            continue;
        };
        let outcome = {
            // Handling is pure computation (no await inside): a std Mutex is enough.
            let mut s = smdp.lock().unwrap_or_else(|p| p.into_inner());
            s.handle(function, request.admin_protocol.as_deref(), &request.body)
        };
        journal.write(&outcome.journal);
        let sent = match outcome.reply {
            Reply::Json(v) => {
                respond(
                    &mut stream,
                    200,
                    "OK",
                    v.to_string().as_bytes(),
                    request.close,
                )
                .await
            }
            Reply::NoContent => respond(&mut stream, 204, "No Content", &[], request.close).await,
            Reply::NotFound => respond(&mut stream, 404, "Not Found", &[], request.close).await,
            // `--fault gone-after-bpp-request`: no answer, no TLS close_notify, the
            // socket closed — a server that went away.
            Reply::Drop => return,
        };
        if sent.is_err() || request.close {
            return;
        }
    }
}

struct Request {
    method: String,
    path: String,
    admin_protocol: Option<String>,
    close: bool,
    body: Vec<u8>,
}

/// Read one request (RFC 9112): request line, headers, a Content-Length body. `None`
/// when the client closed between requests.
async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> Result<Option<Request>, (u16, &'static str)> {
    let bad = (400, "Bad Request");
    let mut line = String::new();
    let mut header_bytes = 0usize;
    match r.read_line(&mut line).await {
        Ok(0) => return Ok(None),
        Ok(n) => header_bytes += n,
        Err(_) => return Ok(None),
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path), Some(_version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad);
    };
    let (method, path) = (method.to_string(), path.to_string());
    let mut length = 0usize;
    let mut admin_protocol = None;
    let mut close = false;
    loop {
        let mut h = String::new();
        let n = r.read_line(&mut h).await.map_err(|_| bad)?;
        header_bytes += n;
        if n == 0 || header_bytes > MAX_HEADERS {
            return Err(bad);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let Some((name, value)) = h.split_once(':') else {
            return Err(bad);
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().map_err(|_| bad)?,
            "x-admin-protocol" => admin_protocol = Some(value.to_string()),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            // ES9+ clients send whole bodies; chunked uploads are not supported here.
            "transfer-encoding" => return Err((411, "Length Required")),
            _ => {}
        }
    }
    if length > MAX_BODY {
        return Err((413, "Content Too Large"));
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body).await.map_err(|_| bad)?;
    Ok(Some(Request {
        method,
        path,
        admin_protocol,
        close,
        body,
    }))
}

async fn respond<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    code: u16,
    reason: &str,
    body: &[u8],
    close: bool,
) -> std::io::Result<()> {
    // SGP.22 §6.5.1: JSON answers carry the content type and the protocol version.
    let mut head = format!("HTTP/1.1 {code} {reason}\r\nX-Admin-Protocol: gsma/rsp/v2.2.0\r\n");
    if code == 200 {
        head.push_str("Content-Type: application/json;charset=UTF-8\r\n");
    }
    if code != 204 {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes()).await?;
    w.write_all(body).await?;
    w.flush().await
}
