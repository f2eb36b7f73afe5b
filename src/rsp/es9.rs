//! ES9+ (GSMA SGP.22 §6.5): the LPA's side of the SM-DP+'s HTTPS interface. JSON over
//! HTTP/1.1 over TLS, each function one POST to `/gsma/rsp2/es9plus/<function>` with the
//! header `X-Admin-Protocol`; ASN.1 objects travel base64-encoded (§6.5.1); a refusal
//! comes back as `header.functionExecutionStatus` with a subject and a reason code
//! (§6.5.1.4, codes in §5.2.6 / §6.5.2).
//!
//! [`Es9`] is the seam the download engine talks through: [`Https`] is the real one; an
//! IoT Profile Assistant (SGP.32) would put its eIM's transport behind the same trait.

use super::tls;
use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The ES9+ functions an LPA calls (SGP.22 §6.5.2.6 to §6.5.2.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    InitiateAuthentication,
    AuthenticateClient,
    GetBoundProfilePackage,
    HandleNotification,
    CancelSession,
}

impl Function {
    pub fn name(self) -> &'static str {
        match self {
            Function::InitiateAuthentication => "initiateAuthentication",
            Function::AuthenticateClient => "authenticateClient",
            Function::GetBoundProfilePackage => "getBoundProfilePackage",
            Function::HandleNotification => "handleNotification",
            Function::CancelSession => "cancelSession",
        }
    }
}

/// What an SM-DP+ said when it refused a function (SGP.22 §6.5.1.4
/// FunctionExecutionStatus.statusCodeData).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServerStatus {
    pub subject_code: String,
    pub reason_code: String,
    pub message: Option<String>,
}

impl ServerStatus {
    /// The codes in words (SGP.22 §6.5.2: each function's table of subject and reason
    /// codes; §5.2.6 the reason codes' general meaning).
    pub fn words(&self) -> String {
        let specific = match (self.subject_code.as_str(), self.reason_code.as_str()) {
            ("8.1", "4.8") => Some("the eUICC has not enough space for this profile"),
            ("8.1", "6.1") => Some("the eUICC's signature (or the server challenge) is invalid"),
            ("8.1.1", "3.8") => Some("the EID is not the one this order is for"),
            ("8.1.1", "2.2") => Some("the order needs an EID the request did not carry"),
            ("8.1.2", "6.1") => Some("the EUM certificate is invalid"),
            ("8.1.2", "6.3") => Some("the EUM certificate has expired"),
            ("8.1.3", "6.1") => Some("the eUICC certificate is invalid"),
            ("8.1.3", "6.3") => Some("the eUICC certificate has expired"),
            ("8.2", "1.2") => Some("the profile is not released yet"),
            ("8.2", "3.7") => Some("the profile package cannot be bound again"),
            ("8.2.1", "3.3") => Some("the profile for this ICCID is not available"),
            ("8.2.5", "3.7") => Some("no profile of this type is left"),
            ("8.2.5", "4.3") => Some("no profile fits this eUICC or device"),
            ("8.2.6", "3.3") => Some("the matching ID conflicts with another order"),
            ("8.2.6", "3.8") => Some("the matching ID is refused: check the activation code"),
            ("8.2.7", "2.2") => Some("a confirmation code is required (--confirmation-code)"),
            ("8.2.7", "3.8") => Some("the confirmation code is refused"),
            ("8.2.7", "6.4") => Some("too many wrong confirmation codes: the order is locked"),
            ("8.8", "3.1") => Some("the SM-DP+ OID is invalid"),
            ("8.8.1", "3.8") => Some("the SM-DP+ address is not this server's"),
            ("8.8.2", "3.1") => Some("the SM-DP+ supports none of the eUICC's CI keys"),
            ("8.8.3", "3.1") => Some("the SM-DP+ does not support the eUICC's SGP.22 version"),
            ("8.8.4", "3.7") => Some("the SM-DP+ has no certificate from a CI the eUICC trusts"),
            ("8.8.5", "4.1") => Some("the download order has expired"),
            ("8.8.5", "6.4") => Some("the download order was retried too often"),
            ("8.10.1", "3.9") => {
                Some("the SM-DP+ does not know this session (expired or cancelled)")
            }
            ("8.11.1", "3.9") => Some("the eUICC's CI is not one the SM-DP+ trusts"),
            _ => None,
        };
        let general = match self.reason_code.as_str() {
            "1.1" => "a mandatory element is missing",
            "1.2" => "not allowed",
            "2.1" => "invalid",
            "2.2" => "missing",
            "3.1" => "invalid",
            "3.3" => "already in use",
            "3.7" => "not available",
            "3.8" => "refused",
            "3.9" => "unknown",
            "4.1" => "expired",
            "4.2" => "an execution error",
            "4.8" => "not enough space",
            "5.1" => "unavailable",
            "6.1" => "verification failed",
            "6.3" => "expired",
            "6.4" => "too many retries",
            _ => "refused",
        };
        let mut s = specific
            .map(str::to_string)
            .unwrap_or_else(|| format!("subject {}: {general}", self.subject_code));
        s.push_str(&format!(
            " (subject {}, reason {})",
            self.subject_code, self.reason_code
        ));
        if let Some(m) = self.message.as_deref().filter(|m| !m.is_empty()) {
            s.push_str(&format!(
                ": \"{}\"",
                m.chars().take(200).collect::<String>()
            ));
        }
        s
    }
}

/// Why an ES9+ call did not give an answer: the link, or the server saying no.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Es9Error {
    /// No TCP connection, DNS failed, or no answer in time: the server may never have
    /// seen the request.
    #[error("SM-DP+ {address} unreachable: {detail}")]
    Unreachable { address: String, detail: String },
    /// The TLS handshake failed: most often a certificate that does not chain to a
    /// configured CI, or is for another name.
    #[error("SM-DP+ {address}: TLS refused: {detail}")]
    Tls { address: String, detail: String },
    /// The connection broke after the request was sent: the server may have acted.
    #[error("SM-DP+ {address}: the connection broke during {function}: {detail}")]
    Broken {
        address: String,
        function: &'static str,
        detail: String,
    },
    #[error("SM-DP+ {function}: HTTP status {status}")]
    Http { function: &'static str, status: u16 },
    #[error("SM-DP+ {function}: malformed answer: {detail}")]
    Malformed {
        function: &'static str,
        detail: String,
    },
    /// The server refused the function (FunctionExecutionStatus "Failed").
    #[error("SM-DP+ refused {function}: {}", status.words())]
    Refused {
        function: &'static str,
        status: ServerStatus,
    },
}

impl Es9Error {
    /// The server may have acted on the request (the answer was lost, not refused).
    pub fn in_doubt(&self) -> bool {
        matches!(self, Es9Error::Broken { .. })
    }
}

/// The SM-DP+ side of a download, as the download engine sees it: send a function's
/// JSON body, get the answer's body (`None`: 204 No Content).
pub trait Es9 {
    fn call(&mut self, function: Function, body: Value) -> Result<Option<Value>, Es9Error>;
    /// The server's address as the activation code names it.
    fn address(&self) -> &str;
}

/// Counts of what went over the link: for the closing figures and `--json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Traffic {
    pub round_trips: u32,
    pub connections: u32,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// The base64 of ES9+'s ASN.1 fields (SGP.22 §6.5.1: RFC 4648 base64 with padding).
pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A base64 field of an answer, decoded; the error names it.
pub fn field(v: &Value, function: Function, name: &str) -> Result<Vec<u8>, Es9Error> {
    let text = v
        .get(name)
        .and_then(Value::as_str)
        .ok_or(Es9Error::Malformed {
            function: function.name(),
            detail: format!("no \"{name}\""),
        })?;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| Es9Error::Malformed {
            function: function.name(),
            detail: format!("\"{name}\" is not base64: {e}"),
        })
}

/// A text field of an answer.
pub fn text<'a>(v: &'a Value, function: Function, name: &str) -> Result<&'a str, Es9Error> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or(Es9Error::Malformed {
            function: function.name(),
            detail: format!("no \"{name}\""),
        })
}

/// Read an answer's `header.functionExecutionStatus` (SGP.22 §6.5.1.4): `Ok` for
/// "Executed-Success" and "Executed-WithWarning", the status otherwise.
pub fn execution_status(v: &Value, function: Function) -> Result<(), Es9Error> {
    let st = v
        .pointer("/header/functionExecutionStatus")
        .ok_or(Es9Error::Malformed {
            function: function.name(),
            detail: "no header.functionExecutionStatus".into(),
        })?;
    match st.get("status").and_then(Value::as_str) {
        Some("Executed-Success") | Some("Executed-WithWarning") => Ok(()),
        Some(_) => {
            let data = st.get("statusCodeData");
            let s = |k: &str| {
                data.and_then(|d| d.get(k))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            Err(Es9Error::Refused {
                function: function.name(),
                status: ServerStatus {
                    subject_code: s("subjectCode").unwrap_or_else(|| "?".into()),
                    reason_code: s("reasonCode").unwrap_or_else(|| "?".into()),
                    message: s("message"),
                },
            })
        }
        None => Err(Es9Error::Malformed {
            function: function.name(),
            detail: "functionExecutionStatus without a status".into(),
        }),
    }
}

/// The ES9+ protocol version simgate speaks (SGP.22 §6.5.1.1: "gsma/rsp/v<x.y.z>").
pub const ADMIN_PROTOCOL: &str = "gsma/rsp/v2.2.0";

/// ES9+ over HTTPS. One TLS connection, kept for the session's calls (SGP.22 §6.5.1.1
/// allows it; it saves a handshake per function), opened again if the server closed it.
/// Synchronous to its caller (the download engine runs beside blocking card I/O): each
/// call runs on the tokio runtime given.
pub struct Https {
    address: String,
    host: String,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    rt: tokio::runtime::Handle,
    timeout: Duration,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    pub traffic: Traffic,
}

impl Https {
    /// A client for the SM-DP+ at `address` (host or host:port; port 443 by default,
    /// SGP.22 §6.5.1.1), trusting the CIs of `tls` only.
    pub fn new(
        address: &str,
        tls: Arc<rustls::ClientConfig>,
        rt: tokio::runtime::Handle,
        timeout: Duration,
    ) -> Result<Https, String> {
        super::activation::check_address(address)?;
        let (host, port) = match address.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| "bad port".to_string())?,
            ),
            None => (address.to_string(), 443),
        };
        Ok(Https {
            address: address.to_string(),
            host,
            port,
            tls,
            rt,
            timeout,
            sender: None,
            traffic: Traffic::default(),
        })
    }

    async fn connect(
        &mut self,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, Es9Error> {
        let unreachable = |detail: String| Es9Error::Unreachable {
            address: self.address.clone(),
            detail,
        };
        let tcp = tokio::time::timeout(
            self.timeout,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| unreachable(format!("no connection in {} s", self.timeout.as_secs())))?
        .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::try_from(self.host.clone()).map_err(|e| {
            Es9Error::Tls {
                address: self.address.clone(),
                detail: format!("\"{}\" is not a server name: {e}", self.host),
            }
        })?;
        let tls = tokio::time::timeout(
            self.timeout,
            tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| unreachable("no TLS handshake in time".into()))?
        .map_err(|e| Es9Error::Tls {
            address: self.address.clone(),
            detail: tls::explain(&e),
        })?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "ES9+ connection ended");
            }
        });
        self.traffic.connections += 1;
        Ok(sender)
    }

    async fn post(&mut self, function: Function, body: Vec<u8>) -> Result<Option<Value>, Es9Error> {
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        sender.ready().await.map_err(|e| Es9Error::Unreachable {
            address: self.address.clone(),
            detail: e.to_string(),
        })?;
        let len = body.len();
        let req = hyper::Request::post(format!("/gsma/rsp2/es9plus/{}", function.name()))
            .header(hyper::header::HOST, &self.address)
            .header(
                hyper::header::CONTENT_TYPE,
                "application/json;charset=UTF-8",
            )
            .header(hyper::header::ACCEPT, "application/json")
            .header(hyper::header::USER_AGENT, "gsma-rsp-lpad")
            .header("X-Admin-Protocol", ADMIN_PROTOCOL)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Es9Error::Malformed {
                function: function.name(),
                detail: e.to_string(),
            })?;
        let broken = |detail: String| Es9Error::Broken {
            address: self.address.clone(),
            function: function.name(),
            detail,
        };
        let resp = tokio::time::timeout(self.timeout, sender.send_request(req))
            .await
            .map_err(|_| broken(format!("no answer in {} s", self.timeout.as_secs())))?
            .map_err(|e| broken(e.to_string()))?;
        let status = resp.status();
        let bytes = tokio::time::timeout(self.timeout, resp.into_body().collect())
            .await
            .map_err(|_| broken("the answer stopped".into()))?
            .map_err(|e| broken(e.to_string()))?
            .to_bytes();
        self.traffic.round_trips += 1;
        self.traffic.bytes_sent += len as u64;
        self.traffic.bytes_received += bytes.len() as u64;
        self.sender = Some(sender);
        if status == hyper::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(Es9Error::Http {
                function: function.name(),
                status: status.as_u16(),
            });
        }
        if bytes.is_empty() {
            return Ok(None);
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| Es9Error::Malformed {
            function: function.name(),
            detail: format!("not JSON: {e}"),
        })?;
        execution_status(&v, function)?;
        Ok(Some(v))
    }
}

impl std::fmt::Debug for Https {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Https")
            .field("address", &self.address)
            .field("traffic", &self.traffic)
            .finish_non_exhaustive()
    }
}

impl Es9 for Https {
    fn call(&mut self, function: Function, body: Value) -> Result<Option<Value>, Es9Error> {
        let bytes = serde_json::to_vec(&body).map_err(|e| Es9Error::Malformed {
            function: function.name(),
            detail: e.to_string(),
        })?;
        let started = Instant::now();
        let rt = self.rt.clone();
        let r = rt.block_on(self.post(function, bytes));
        tracing::debug!(
            function = function.name(),
            ms = started.elapsed().as_millis() as u64,
            ok = r.is_ok(),
            "ES9+ call"
        );
        r
    }

    fn address(&self) -> &str {
        &self.address
    }
}

/// The JSON bodies of the calls (SGP.22 §6.5.2), built in one place.
pub mod body {
    use super::{b64, json, Value};

    pub fn initiate_authentication(challenge: &[u8], info1: &[u8], address: &str) -> Value {
        json!({
            "euiccChallenge": b64(challenge),
            "euiccInfo1": b64(info1),
            "smdpAddress": address,
        })
    }

    /// transactionId as upper-case hex text (SGP.22 §6.5.1.3: hexBinary).
    pub fn with_transaction(tid: &[u8], name: &str, object: &[u8]) -> Value {
        json!({ "transactionId": hex::encode_upper(tid), name: b64(object) })
    }

    pub fn handle_notification(pending: &[u8]) -> Value {
        json!({ "pendingNotification": b64(pending) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_status_is_read_with_its_codes_and_said_in_words() {
        let v = json!({"header": {"functionExecutionStatus": {"status": "Failed",
            "statusCodeData": {"subjectCode": "8.2.6", "reasonCode": "3.8", "message": "no"}}}});
        let e = execution_status(&v, Function::AuthenticateClient).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("matching ID is refused"), "{s}");
        assert!(s.contains("8.2.6") && s.contains("3.8"), "{s}");
        let ok = json!({"header": {"functionExecutionStatus": {"status": "Executed-Success"}}});
        assert!(execution_status(&ok, Function::AuthenticateClient).is_ok());
        let unknown = ServerStatus {
            subject_code: "8.9".into(),
            reason_code: "5.1".into(),
            message: None,
        };
        assert!(unknown.words().contains("unavailable"));
    }

    #[test]
    fn base64_fields_are_checked_by_name() {
        let v = json!({"a": "AAEC", "b": "%%"});
        assert_eq!(field(&v, Function::CancelSession, "a").unwrap(), [0, 1, 2]);
        assert!(field(&v, Function::CancelSession, "b")
            .unwrap_err()
            .to_string()
            .contains("\"b\" is not base64"));
        assert!(field(&v, Function::CancelSession, "c")
            .unwrap_err()
            .to_string()
            .contains("no \"c\""));
    }
}
