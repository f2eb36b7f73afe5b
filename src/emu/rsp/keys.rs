//! Keys of the RSP roles: static signing keys read from PEM (DPauth, DPpb, the eUICC's
//! own), ECDSA in the form RSP messages carry, and one-time keys with ECKA.
//!
//! SGP.22 §2.6.5: signatures inside RSP structures are ECDSA with SHA-256, encoded as
//! the plain concatenation r‖s (32 + 32 bytes, BSI TR-03111 §5.2.2), in a [APPLICATION 55]
//! (tag 5F37) OCTET STRING. X.509 certificates keep the DER ECDSA-Sig-Value
//! ([`super::cert`]).

use super::RspError;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, VerifyingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::DecodePrivateKey;
use p256::{PublicKey, SecretKey};
use rustls::pki_types::PrivateKeyDer;
use std::path::Path;

/// A static P-256 private key for ECDSA.
#[derive(Debug, Clone)]
pub struct SigningKey(p256::ecdsa::SigningKey);

impl SigningKey {
    /// The first private key of a PEM file: PKCS#8 (`BEGIN PRIVATE KEY`, what the test
    /// PKI writes) or SEC1 (`BEGIN EC PRIVATE KEY`, as GSMA's SGP.26 test keys come).
    pub fn load_pem(path: &Path) -> Result<SigningKey, RspError> {
        let text = std::fs::read(path).map_err(|source| RspError::Io {
            path: path.to_owned(),
            source,
        })?;
        let key = rustls_pemfile::private_key(&mut text.as_slice())
            .map_err(|source| RspError::Io {
                path: path.to_owned(),
                source,
            })?
            .ok_or_else(|| RspError::Pem {
                path: path.to_owned(),
                what: "no PRIVATE KEY block",
            })?;
        let secret = match &key {
            PrivateKeyDer::Pkcs8(k) => SecretKey::from_pkcs8_der(k.secret_pkcs8_der()).ok(),
            PrivateKeyDer::Sec1(k) => SecretKey::from_sec1_der(k.secret_sec1_der()).ok(),
            _ => {
                return Err(RspError::Pem {
                    path: path.to_owned(),
                    what: "an RSA private key, not P-256",
                })
            }
        }
        .ok_or_else(|| RspError::Pem {
            path: path.to_owned(),
            what: "private key is not a P-256 key",
        })?;
        Ok(SigningKey(secret.into()))
    }

    /// A key from its 32-byte private scalar (test vectors).
    pub fn from_scalar(bytes: &[u8]) -> Result<SigningKey, RspError> {
        p256::ecdsa::SigningKey::from_slice(bytes)
            .map(SigningKey)
            .map_err(|_| RspError::BadKey)
    }

    /// ECDSA with SHA-256 over `data`, as r‖s. Deterministic (RFC 6979): no randomness to
    /// fail, and a repeated message signs the same.
    pub fn sign(&self, data: &[u8]) -> [u8; 64] {
        let sig: Signature = self.0.sign(data);
        sig.to_bytes().into()
    }

    /// The matching public key.
    pub fn public_key(&self) -> VerifyingKey {
        *self.0.verifying_key()
    }
}

/// Verify an r‖s signature (64 bytes) over `data` with `key`.
pub fn verify(key: &VerifyingKey, data: &[u8], signature: &[u8]) -> Result<(), RspError> {
    let sig = Signature::from_slice(signature).map_err(|_| RspError::BadSignature)?;
    key.verify(data, &sig).map_err(|_| RspError::BadSignature)
}

/// A one-time key pair (otSK/otPK.DP.ECKA or .EUICC.ECKA, SGP.22 §3.1.3.2 / §3.1.3.3),
/// kept in memory between the message that sends its public half and the ECKA.
#[derive(Debug, Clone)]
pub struct OneTimeKey(SecretKey);

impl OneTimeKey {
    /// A fresh key from the OS's random source.
    pub fn generate() -> OneTimeKey {
        OneTimeKey(SecretKey::random(&mut rand_core::OsRng))
    }

    /// A key from its 32-byte private scalar (test vectors).
    pub fn from_scalar(bytes: &[u8]) -> Result<OneTimeKey, RspError> {
        SecretKey::from_slice(bytes)
            .map(OneTimeKey)
            .map_err(|_| RspError::BadKey)
    }

    /// The public key as an uncompressed point 04‖X‖Y (65 bytes), the content of the
    /// [APPLICATION 73] (tag 5F49) fields otPK.DP.ECKA / otPK.EUICC.ECKA.
    pub fn public_point(&self) -> Vec<u8> {
        self.0
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    /// ECKA (BSI TR-03111 §4.3.1, ECDH): the shared secret's X coordinate with the peer's
    /// public point (the 5F49 content), the input of the BSP key derivation.
    pub fn ecka(&self, peer_point: &[u8]) -> Result<[u8; 32], RspError> {
        let peer = PublicKey::from_sec1_bytes(peer_point).map_err(|_| RspError::BadKey)?;
        let shared = p256::ecdh::diffie_hellman(self.0.to_nonzero_scalar(), peer.as_affine());
        Ok((*shared.raw_secret_bytes()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_with_its_key_and_fails_on_other_data() {
        let key = SigningKey::from_scalar(&[7u8; 32]).unwrap();
        let sig = key.sign(b"serverSigned1");
        assert_eq!(sig.len(), 64);
        verify(&key.public_key(), b"serverSigned1", &sig).unwrap();
        assert!(matches!(
            verify(&key.public_key(), b"serverSigned2", &sig),
            Err(RspError::BadSignature)
        ));
        let mut bent = sig;
        bent[10] ^= 1;
        assert!(verify(&key.public_key(), b"serverSigned1", &bent).is_err());
        assert!(verify(&key.public_key(), b"serverSigned1", &sig[..63]).is_err());
    }

    #[test]
    fn both_sides_of_ecka_agree() {
        let dp = OneTimeKey::generate();
        let euicc = OneTimeKey::generate();
        assert_eq!(dp.public_point().len(), 65);
        assert_eq!(dp.public_point()[0], 0x04);
        let a = dp.ecka(&euicc.public_point()).unwrap();
        let b = euicc.ecka(&dp.public_point()).unwrap();
        assert_eq!(a, b);
        assert!(dp.ecka(&[0x04; 65]).is_err());
    }

    #[test]
    fn sgp26_dpauth_key_loads_from_sec1_pem_and_matches_its_certificate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rsp/sgp26");
        let key = SigningKey::load_pem(&dir.join("SK_S_SM_DPauth_ECDSA_NIST.pem")).unwrap();
        let der = std::fs::read(dir.join("CERT_S_SM_DPauth_ECDSA_NIST.der")).unwrap();
        let cert = super::super::Certificate::from_der(&der).unwrap();
        assert_eq!(&key.public_key(), cert.public_key());
        let sig = key.sign(b"data");
        verify(cert.public_key(), b"data", &sig).unwrap();
    }
}
