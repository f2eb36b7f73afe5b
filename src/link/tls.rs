//! The rustls client configuration: `ring` as the crypto provider, the CA file's roots
//! or the system's, an optional client certificate.

use super::LinkError;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Build the rustls client configuration: `ring` as the crypto provider (see
/// Cargo.toml), the CA file's roots or the system's, and an optional client certificate.
pub(super) fn tls_config(
    ca_file: Option<&Path>,
    client_cert: Option<&(PathBuf, PathBuf)>,
) -> Result<rustls::ClientConfig, LinkError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(ca) => {
            let certs = read_certs("CA file", ca)?;
            if certs.is_empty() {
                return Err(LinkError::Tls(format!(
                    "CA file {}: no PEM certificate in it",
                    ca.display()
                )));
            }
            for c in certs {
                roots.add(c)?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(LinkError::Tls(
                    "no system trust roots found; set broker.ca_file".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match client_cert {
        Some((cert, key)) => {
            let chain = read_certs("client certificate", cert)?;
            let file = |source| LinkError::TlsFile {
                what: "client key",
                path: key.clone(),
                source,
            };
            let mut rd = std::io::BufReader::new(std::fs::File::open(key).map_err(file)?);
            let key_der = rustls_pemfile::private_key(&mut rd)
                .map_err(file)?
                .ok_or_else(|| {
                    LinkError::Tls(format!("client key {}: no PEM private key", key.display()))
                })?;
            builder.with_client_auth_cert(chain, key_der)?
        }
        None => builder.with_no_client_auth(),
    })
}

fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, LinkError> {
    let file = |source| LinkError::TlsFile {
        what,
        path: path.to_path_buf(),
        source,
    };
    let mut rd = std::io::BufReader::new(std::fs::File::open(path).map_err(file)?);
    rustls_pemfile::certs(&mut rd)
        .collect::<Result<Vec<_>, _>>()
        .map_err(file)
}
