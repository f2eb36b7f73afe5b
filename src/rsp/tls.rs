//! TLS to an SM-DP+ (GSMA SGP.22 §2.6.6, SGP.14): the server's certificate (CERT.DPtls)
//! must chain to a GSMA CI root the operator configured — never to the web's roots —
//! and carry the SM-DP+'s name. The CI roots are a directory of certificates (PEM or
//! DER), one CI each.

use std::path::Path;
use std::sync::Arc;

/// The CI roots of `dir`: every `.pem`, `.crt` and `.der` file; an error names the file.
pub fn ci_roots(dir: &Path) -> Result<rustls::RootCertStore, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "{}: cannot read the CI certificate directory: {e} (set [esim] ci_dir)",
            dir.display()
        )
    })?;
    let mut store = rustls::RootCertStore::empty();
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("pem" | "crt" | "der")
            )
        })
        .collect();
    files.sort();
    for f in &files {
        let bytes = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let ders: Vec<rustls::pki_types::CertificateDer<'static>> = if bytes.starts_with(b"-----") {
            rustls_pemfile::certs(&mut bytes.as_slice())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: not a PEM certificate: {e}", f.display()))?
        } else {
            vec![rustls::pki_types::CertificateDer::from(bytes)]
        };
        if ders.is_empty() {
            return Err(format!("{}: holds no certificate", f.display()));
        }
        for d in ders {
            store
                .add(d)
                .map_err(|e| format!("{}: not a usable CI certificate: {e}", f.display()))?;
        }
    }
    if store.is_empty() {
        return Err(format!(
            "{}: no CI certificate (.pem, .crt or .der) in it: an SM-DP+ cannot be trusted without one",
            dir.display()
        ));
    }
    Ok(store)
}

/// A client configuration trusting the CIs of `dir` only; TLS 1.2 and 1.3 with ring
/// (SGP.22 §2.6.6 requires TLS 1.2 with ECDHE-ECDSA suites, which both cover).
pub fn client_config(dir: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = ci_roots(dir)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// A TLS failure in words: an unknown issuer is a certificate from a CI not configured.
pub fn explain(e: &std::io::Error) -> String {
    let inner = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .cloned();
    match inner {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => {
            "the server's certificate does not chain to a configured CI ([esim] ci_dir)".into()
        }
        Some(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. },
        )) => "the server's certificate is for another name than the SM-DP+ address".into(),
        Some(rustls::Error::InvalidCertificate(c)) => {
            format!("the server's certificate is refused: {c:?}")
        }
        Some(other) => other.to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_certificates_is_refused_by_name() {
        let d = std::env::temp_dir().join(format!("simgate-ci-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let e = ci_roots(&d).unwrap_err();
        assert!(e.contains("no CI certificate"), "{e}");
        std::fs::write(
            d.join("x.pem"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = ci_roots(&d).unwrap_err();
        assert!(e.contains("x.pem"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
        assert!(ci_roots(Path::new("/nonexistent/ci"))
            .unwrap_err()
            .contains("ci_dir"));
    }
}
