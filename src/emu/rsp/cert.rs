//! X.509 certificates of the RSP PKI (SGP.22 §4.5.2, RFC 5280): parsed just far enough to
//! check a chain (CI → EUM → eUICC, CI → DPauth/DPpb/DPtls) and to read what the RSP
//! protocol uses — the P-256 public key, the Subject/Authority Key Identifiers (the CI's
//! SKI is its PKID, SGP.22 §5.7.8 euiccCiPKIdListForVerification), the subject's
//! serialNumber (the EID of an eUICC certificate, SGP.22 §4.5.2.1.0.2) and the
//! certificate policies (the role OIDs of SGP.22 §4.5.2.1).
//!
//! Validity dates are not checked: an eUICC has no trusted clock (SGP.22 §4.5.2.0 lets it
//! ignore them), and the test PKI is made at test time.

use super::der::{self, Der};
use super::RspError;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use std::path::Path;

// RFC 5758 §3.2 / RFC 5480 §2.1.1: the object identifiers' DER contents.
const ECDSA_WITH_SHA256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02];
const ID_EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
const PRIME256V1: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
// RFC 5280 §4.2.1.2 / §4.2.1.1 / §4.2.1.4; X.520 serialNumber (2.5.4.5).
const SUBJECT_KEY_IDENTIFIER: &[u8] = &[0x55, 0x1D, 0x0E];
const AUTHORITY_KEY_IDENTIFIER: &[u8] = &[0x55, 0x1D, 0x23];
const CERTIFICATE_POLICIES: &[u8] = &[0x55, 0x1D, 0x20];
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1D, 0x11];
const SERIAL_NUMBER: &[u8] = &[0x55, 0x04, 0x05];

/// A parsed certificate. The DER it came from is kept: RSP messages carry certificates
/// as received (e.g. euiccCertificate in AuthenticateServerResponse, SGP.22 §5.7.13).
#[derive(Debug, Clone)]
pub struct Certificate {
    der: Vec<u8>,
    tbs: std::ops::Range<usize>,
    issuer: std::ops::Range<usize>,
    subject: std::ops::Range<usize>,
    signature: Signature,
    public_key: VerifyingKey,
    ski: Option<Vec<u8>>,
    aki: Option<Vec<u8>>,
    serial_number: Option<String>,
    policies: Vec<String>,
    registered_id: Option<Vec<u8>>,
}

fn bad(what: &'static str) -> RspError {
    RspError::Malformed(what)
}

/// Where `part` lies inside `whole` (both borrowed from the same buffer).
fn range_of(whole: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

impl Certificate {
    /// Parse one DER certificate; only P-256 keys signed with ecdsa-with-SHA256 are
    /// accepted (SGP.22 §2.6.1 with the NIST curve).
    pub fn from_der(bytes: &[u8]) -> Result<Certificate, RspError> {
        let cert = der::one(bytes)?;
        if cert.tag != 0x30 {
            return Err(bad("certificate is not a SEQUENCE"));
        }
        let (tbs, rest) = der::expect(cert.value, 0x30, "tbsCertificate missing")?;
        let (alg, rest) = der::expect(rest, 0x30, "signatureAlgorithm missing")?;
        let (sig, rest) = der::expect(rest, 0x03, "signatureValue missing")?;
        if !rest.is_empty() {
            return Err(bad("bytes after the certificate's signature"));
        }
        if oid_of_algorithm(&alg)? != ECDSA_WITH_SHA256 {
            return Err(RspError::Unsupported(
                "certificate not signed with ecdsa-with-SHA256",
            ));
        }
        let sig_bits = bit_string(&sig)?;
        let signature = Signature::from_der(sig_bits)
            .map_err(|_| bad("certificate signature not ECDSA-Sig-Value"))?;

        let mut fields = tbs.value;
        // version [0] EXPLICIT, absent for v1.
        if fields.first() == Some(&0xA0) {
            fields = der::read(fields)?.1;
        }
        let (_serial, f) = der::expect(fields, 0x02, "certificate serialNumber missing")?;
        let (_alg, f) = der::expect(f, 0x30, "tbsCertificate signature missing")?;
        let (issuer, f) = der::expect(f, 0x30, "certificate issuer missing")?;
        let (_validity, f) = der::expect(f, 0x30, "certificate validity missing")?;
        let (subject, f) = der::expect(f, 0x30, "certificate subject missing")?;
        let (spki, mut f) = der::expect(f, 0x30, "subjectPublicKeyInfo missing")?;
        let public_key = p256_key_of(&spki)?;

        let mut ski = None;
        let mut aki = None;
        let mut policies = Vec::new();
        let mut registered_id = None;
        while !f.is_empty() {
            let (d, rest) = der::read(f)?;
            f = rest;
            // extensions [3] EXPLICIT SEQUENCE OF Extension (RFC 5280 §4.1).
            if d.tag != 0xA3 {
                continue;
            }
            let list = der::one(d.value)?;
            for ext in der::all(list.value)? {
                let (id, rest) = der::expect(ext.value, 0x06, "extension without extnID")?;
                let rest = match rest.first() {
                    Some(0x01) => der::read(rest)?.1, // critical BOOLEAN
                    _ => rest,
                };
                let value = der::one(rest)?;
                if value.tag != 0x04 {
                    return Err(bad("extnValue not an OCTET STRING"));
                }
                match id.value {
                    SUBJECT_KEY_IDENTIFIER => {
                        let k = der::one(value.value)?;
                        ski = Some(k.value.to_vec());
                    }
                    AUTHORITY_KEY_IDENTIFIER => {
                        let seq = der::one(value.value)?;
                        // keyIdentifier [0] IMPLICIT KeyIdentifier.
                        aki = der::all(seq.value)?
                            .into_iter()
                            .find(|d| d.tag == 0x80)
                            .map(|d| d.value.to_vec());
                    }
                    CERTIFICATE_POLICIES => {
                        let seq = der::one(value.value)?;
                        for info in der::all(seq.value)? {
                            let (oid, _) = der::expect(info.value, 0x06, "policy without OID")?;
                            policies.push(oid_text(oid.value));
                        }
                    }
                    SUBJECT_ALT_NAME => {
                        let seq = der::one(value.value)?;
                        // GeneralName registeredID [8] IMPLICIT OBJECT IDENTIFIER.
                        registered_id = der::all(seq.value)?
                            .into_iter()
                            .find(|d| d.tag == 0x88)
                            .map(|d| d.value.to_vec());
                    }
                    _ => {}
                }
            }
        }
        let serial_number = attribute(&subject, SERIAL_NUMBER)?;

        Ok(Certificate {
            der: bytes.to_vec(),
            tbs: range_of(bytes, tbs.raw),
            issuer: range_of(bytes, issuer.raw),
            subject: range_of(bytes, subject.raw),
            signature,
            public_key,
            ski,
            aki,
            serial_number,
            policies,
            registered_id,
        })
    }

    /// Every certificate of a PEM file (a chain file holds several), in file order.
    pub fn load_pem(path: &Path) -> Result<Vec<Certificate>, RspError> {
        let text = std::fs::read(path).map_err(|source| RspError::Io {
            path: path.to_owned(),
            source,
        })?;
        let ders = rustls_pemfile::certs(&mut text.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| RspError::Io {
                path: path.to_owned(),
                source,
            })?;
        if ders.is_empty() {
            return Err(RspError::Pem {
                path: path.to_owned(),
                what: "no CERTIFICATE block",
            });
        }
        ders.iter()
            .map(|d| {
                Certificate::from_der(d.as_ref()).map_err(|e| RspError::File {
                    path: path.to_owned(),
                    source: Box::new(e),
                })
            })
            .collect()
    }

    /// The one certificate of a PEM file (the first if there are several).
    pub fn load_pem_one(path: &Path) -> Result<Certificate, RspError> {
        let mut all = Certificate::load_pem(path)?;
        Ok(all.swap_remove(0))
    }

    /// The certificate as DER, as it was read.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The tbsCertificate, the bytes its issuer signed.
    pub fn tbs(&self) -> &[u8] {
        &self.der[self.tbs.clone()]
    }

    /// The subject's P-256 public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.public_key
    }

    /// SubjectKeyIdentifier (RFC 5280 §4.2.1.2): a CI's SKI is its PKID (SGP.22 §4.5.2).
    pub fn ski(&self) -> Option<&[u8]> {
        self.ski.as_deref()
    }

    /// AuthorityKeyIdentifier's keyIdentifier: the issuer's SKI.
    pub fn aki(&self) -> Option<&[u8]> {
        self.aki.as_deref()
    }

    /// The subject's serialNumber attribute: an eUICC certificate's EID (SGP.22
    /// §4.5.2.1.0.2), 32 digits.
    pub fn subject_serial_number(&self) -> Option<&str> {
        self.serial_number.as_deref()
    }

    /// The certificate policies, as dotted OIDs (SGP.22 §4.5.2.1: the role, e.g.
    /// 2.23.146.1.2.1.2 for an eUICC).
    pub fn policies(&self) -> &[String] {
        &self.policies
    }

    /// The registeredID of the subjectAltName, as OID contents: an SM-DP+'s OID in its
    /// DPauth/DPpb certificates (SGP.22 §4.5.2.1.0.3), the smdpOid of EuiccCancelSession
    /// Signed and ProfileInstallationResultData.
    pub fn registered_id(&self) -> Option<&[u8]> {
        self.registered_id.as_deref()
    }

    /// Whether `issuer` signed this certificate: the issuer name equals the issuer's
    /// subject, the AuthorityKeyIdentifier (when both are present) equals the issuer's
    /// SKI, and the ECDSA signature over the tbsCertificate verifies with its key.
    pub fn verify_issued_by(&self, issuer: &Certificate) -> Result<(), RspError> {
        if self.der[self.issuer.clone()] != issuer.der[issuer.subject.clone()] {
            return Err(RspError::WrongIssuer);
        }
        if let (Some(aki), Some(ski)) = (self.aki(), issuer.ski()) {
            if aki != ski {
                return Err(RspError::WrongIssuer);
            }
        }
        issuer
            .public_key
            .verify(self.tbs(), &self.signature)
            .map_err(|_| RspError::BadSignature)
    }
}

/// The OID of an AlgorithmIdentifier (its parameters are ignored).
fn oid_of_algorithm<'a>(alg: &Der<'a>) -> Result<&'a [u8], RspError> {
    let (oid, _) = der::expect(alg.value, 0x06, "AlgorithmIdentifier without OID")?;
    Ok(oid.value)
}

/// A BIT STRING's bytes; DER keys and signatures have no unused bits.
fn bit_string<'a>(d: &Der<'a>) -> Result<&'a [u8], RspError> {
    match d.value.split_first() {
        Some((0, bits)) => Ok(bits),
        _ => Err(bad("BIT STRING with unused bits")),
    }
}

/// RFC 5480 §2: SubjectPublicKeyInfo { id-ecPublicKey, prime256v1 } with an uncompressed
/// or compressed point.
fn p256_key_of(spki: &Der<'_>) -> Result<VerifyingKey, RspError> {
    let (alg, rest) = der::expect(spki.value, 0x30, "SubjectPublicKeyInfo algorithm missing")?;
    let (oid, params) = der::expect(
        alg.value,
        0x06,
        "SubjectPublicKeyInfo algorithm without OID",
    )?;
    let curve = der::one(params)?;
    if oid.value != ID_EC_PUBLIC_KEY || curve.tag != 0x06 || curve.value != PRIME256V1 {
        return Err(RspError::Unsupported("public key not on NIST P-256"));
    }
    let key = der::one(rest)?;
    if key.tag != 0x03 {
        return Err(bad("subjectPublicKey not a BIT STRING"));
    }
    VerifyingKey::from_sec1_bytes(bit_string(&key)?).map_err(|_| RspError::BadKey)
}

/// The value of the first `attr` in a Name (RDNSequence), as text.
fn attribute(name: &Der<'_>, attr: &[u8]) -> Result<Option<String>, RspError> {
    for rdn in der::all(name.value)? {
        for atv in der::all(rdn.value)? {
            let (oid, rest) = der::expect(atv.value, 0x06, "attribute without type")?;
            if oid.value == attr {
                let v = der::one(rest)?;
                return Ok(Some(String::from_utf8_lossy(v.value).into_owned()));
            }
        }
    }
    Ok(None)
}

/// X.690 §8.19: an OID's contents as dotted text.
pub fn oid_text(bytes: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut n = 0u64;
    for b in bytes {
        n = n << 7 | u64::from(b & 0x7F);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (n / 40).min(2);
                arcs.push(first);
                arcs.push(n - first * 40);
            } else {
                arcs.push(n);
            }
            n = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_read_as_dotted_text() {
        assert_eq!(
            oid_text(&[0x67, 0x81, 0x12, 0x01, 0x02, 0x01, 0x02]),
            "2.23.146.1.2.1.2"
        );
        assert_eq!(oid_text(ECDSA_WITH_SHA256), "1.2.840.10045.4.3.2");
    }

    fn sgp26(name: &str) -> Certificate {
        let path = format!(
            "{}/tests/fixtures/rsp/sgp26/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        Certificate::from_der(&std::fs::read(path).unwrap()).unwrap()
    }

    // GSMA's own test certificates: an independent check of the parsing and the chain.
    #[test]
    fn sgp26_dp_certificates_chain_to_the_test_ci() {
        let ci = sgp26("CERT_CI_ECDSA_NIST.der");
        let pkid = hex::decode("F54172BDF98A95D65CBEB88A38A1C11D800A85C3").unwrap();
        assert_eq!(ci.ski(), Some(&pkid[..]));
        assert_eq!(ci.policies(), ["2.23.146.1.2.1.0"]);
        ci.verify_issued_by(&ci).unwrap();
        for (name, role) in [
            ("CERT_S_SM_DPauth_ECDSA_NIST.der", "2.23.146.1.2.1.4"),
            ("CERT_S_SM_DPpb_ECDSA_NIST.der", "2.23.146.1.2.1.5"),
        ] {
            let dp = sgp26(name);
            assert_eq!(dp.aki(), Some(&pkid[..]));
            assert_eq!(dp.policies(), [role]);
            assert_eq!(dp.subject_serial_number(), None);
            assert_eq!(
                dp.registered_id().map(oid_text).as_deref(),
                Some("2.999.10")
            );
            dp.verify_issued_by(&ci).unwrap();
            assert!(matches!(
                ci.verify_issued_by(&dp),
                Err(RspError::WrongIssuer)
            ));
        }
    }

    #[test]
    fn a_certificate_with_a_bent_tbs_fails_its_signature() {
        let ci = sgp26("CERT_CI_ECDSA_NIST.der");
        let mut der = sgp26("CERT_S_SM_DPauth_ECDSA_NIST.der").der().to_vec();
        // A byte of the public key's X coordinate, inside the signed part.
        let at = der
            .windows(4)
            .position(|w| w == [0x04, 0x4d, 0xfe, 0xd4])
            .unwrap()
            + 10;
        der[at] ^= 0x01;
        match Certificate::from_der(&der) {
            Ok(cert) => assert!(matches!(
                cert.verify_issued_by(&ci),
                Err(RspError::BadSignature)
            )),
            Err(e) => assert!(matches!(e, RspError::BadKey), "{e}"),
        }
    }
}
