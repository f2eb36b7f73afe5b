//! The test SM-DP+ (`simgate emulate smdp`) on the real stack: its own process, HTTPS
//! on loopback, a plain HTTPS client (rustls trusting only the test CI). The download
//! itself is driven by the LPA's tests (esim_download).

use crate::support::smdp::{rsp_pki, rsp_pki_named, shipped_profiles, Smdp};
use crate::support::{simgate_bin, TempDir};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

const EID: &str = "89049032123451234512345678901235";

fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    let text = std::fs::read(path).expect("read a PEM file of the PKI");
    rustls_pemfile::certs(&mut text.as_slice())
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

/// A TLS client trusting only the CI of `ci_pem`, as an LPA does (SGP.22 §2.6.6).
fn tls_client(ci_pem: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(ci_pem) {
        roots.add(c).expect("the CI certificate is a trust anchor");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

struct Answer {
    status: u16,
    headers: String,
    body: Value,
    server_chain: Vec<Vec<u8>>,
}

/// One ES9+ POST over a fresh TLS connection to `localhost` (the DPtls certificate's
/// name), HTTP/1.1 with Connection: close.
fn post(
    smdp: &Smdp,
    client: &Arc<rustls::ClientConfig>,
    function: &str,
    body: &Value,
) -> Result<Answer, rustls::Error> {
    let port = smdp.address.rsplit(':').next().expect("host:port");
    let mut tcp = TcpStream::connect(&smdp.address).expect("connect to the SM-DP+");
    let name = ServerName::try_from("localhost").expect("a DNS name");
    let mut conn = rustls::ClientConnection::new(client.clone(), name).expect("client");
    while conn.is_handshaking() {
        match conn.complete_io(&mut tcp) {
            Ok(_) => {}
            Err(e) => {
                return Err(e
                    .into_inner()
                    .and_then(|i| i.downcast::<rustls::Error>().ok())
                    .map(|b| *b)
                    .unwrap_or(rustls::Error::HandshakeNotComplete))
            }
        }
    }
    let server_chain = conn
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.as_ref().to_vec())
        .collect();
    let body = body.to_string();
    let request = format!(
        "POST /gsma/rsp2/es9plus/{function} HTTP/1.1\r\nHost: localhost:{port}\r\n\
         User-Agent: gsma-rsp-lpad\r\nX-Admin-Protocol: gsma/rsp/v2.2.0\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    tls.write_all(request.as_bytes()).expect("send the request");
    let mut raw = Vec::new();
    // The server closes after answering (Connection: close); a missing close_notify
    // shows as UnexpectedEof once everything was read.
    let _ = tls.read_to_end(&mut raw);
    let text = String::from_utf8(raw).expect("an HTTP answer in UTF-8");
    let (headers, body) = text.split_once("\r\n\r\n").expect("headers, then a body");
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    Ok(Answer {
        status,
        headers: headers.to_string(),
        body: serde_json::from_str(body).unwrap_or(Value::Null),
        server_chain,
    })
}

fn status_code(a: &Answer) -> (String, String, String) {
    let st = &a.body["header"]["functionExecutionStatus"];
    let d = &st["statusCodeData"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (s(&st["status"]), s(&d["subjectCode"]), s(&d["reasonCode"]))
}

#[test]
fn smdp_answers_bad_requests_with_es9_status_codes_over_tls_with_the_dptls_certificate() {
    let dir = TempDir::new("smdp-pki");
    let pki = rsp_pki(dir.path(), EID);
    let smdp = Smdp::start(&pki, &shipped_profiles(), &[]);
    let client = tls_client(&pki.join("ci.pem"));

    // An SM-DP+ address that is not this server's: 8.8.1/3.8 (SGP.22 §5.6.1).
    let a = post(
        &smdp,
        &client,
        "initiateAuthentication",
        &json!({"smdpAddress": "smdp.example.com", "euiccChallenge": "AAAAAAAAAAAAAAAAAAAAAA==", "euiccInfo1": "vyAA"}),
    )
    .expect("TLS to the SM-DP+ with the test CI as the only root");
    assert_eq!(a.status, 200, "{}", a.headers);
    assert!(
        a.headers
            .to_ascii_lowercase()
            .contains("x-admin-protocol: gsma/rsp/v2"),
        "{}",
        a.headers
    );
    assert_eq!(
        status_code(&a),
        ("Failed".into(), "8.8.1".into(), "3.8".into())
    );
    // The server presents the DPtls certificate the PKI made.
    let dptls = pem_certs(&pki.join("dptls.pem"));
    assert_eq!(a.server_chain.first(), Some(&dptls[0].as_ref().to_vec()));

    // A transaction the server never opened: 8.10.1/3.9 (SGP.22 §5.6.2).
    let a = post(
        &smdp,
        &client,
        "getBoundProfilePackage",
        &json!({"transactionId": "0123456789ABCDEF0123456789ABCDEF", "prepareDownloadResponse": "vyEA"}),
    )
    .expect("a second connection");
    assert_eq!(
        status_code(&a),
        ("Failed".into(), "8.10.1".into(), "3.9".into())
    );

    let calls = smdp.events("call");
    let seen: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| {
            (
                c["function"].as_str().unwrap_or(""),
                c["subjectCode"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("initiateAuthentication", "8.8.1"),
            ("getBoundProfilePackage", "8.10.1")
        ]
    );
}

#[test]
fn smdp_certificate_is_refused_by_a_client_trusting_another_ci() {
    let dir = TempDir::new("smdp-pki");
    let other = TempDir::new("smdp-pki-other");
    let pki = rsp_pki(dir.path(), EID);
    let other = rsp_pki_named(other.path(), EID, "other");
    let smdp = Smdp::start(&pki, &shipped_profiles(), &[]);
    let client = tls_client(&other.join("ci.pem"));
    let err = post(&smdp, &client, "initiateAuthentication", &json!({}))
        .err()
        .expect("the handshake fails");
    assert!(
        matches!(err, rustls::Error::InvalidCertificate(_)),
        "{err:?}"
    );
    let failed = smdp.await_event(
        "the server's side of the refused handshake",
        std::time::Duration::from_secs(20),
        |l| l["event"] == "tls-failed",
    );
    assert!(failed["error"].as_str().is_some(), "{failed}");
    assert!(smdp.events("call").is_empty());
}

#[test]
fn smdp_refuses_a_profiles_file_with_a_bad_field_naming_file_and_field() {
    let dir = TempDir::new("smdp-pki");
    let pki = rsp_pki(dir.path(), EID);
    let bad = dir.path().join("profiles.toml");
    let shipped = std::fs::read_to_string(shipped_profiles()).expect("shipped profiles");
    std::fs::write(
        &bad,
        shipped.replacen("imsi = \"001010000000019\"", "imsi = \"0010x\"", 1),
    )
    .expect("write the bad profiles file");
    let out = std::process::Command::new(simgate_bin())
        .args(["emulate", "smdp", "--pki"])
        .arg(&pki)
        .arg("--profiles")
        .arg(&bad)
        .output()
        .expect("run simgate emulate smdp");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&bad.display().to_string()) && err.contains("profile[0].imsi"),
        "{err}"
    );
}
