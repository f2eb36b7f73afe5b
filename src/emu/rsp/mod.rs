//! The emulators' RSP crypto core (GSMA SGP.22 v2.x): what the test SM-DP+ and the
//! virtual eUICC both need to speak real Remote SIM Provisioning to each other and to
//! independent implementations. Pure functions over bytes and keys, no I/O but loading
//! PEM files.
//!
//! - [`cert`]: X.509 certificates of the RSP PKI — P-256 key, SKI/AKI, the subject's
//!   serialNumber (EID), role policies, chain checks.
//! - [`keys`]: PEM private keys, ECDSA P-256 with SHA-256 in the raw r‖s form of RSP
//!   messages (SGP.22 §2.6.5, BSI TR-03111), one-time keys and ECKA (ECDH).
//! - [`bsp`]: the BPP protection protocol (SCP03t, SGP.22 §2.6.4–2.6.6): the X9.63 key
//!   derivation, encrypt+MAC (tags 86/87), MAC only (88), and the verify+decrypt side.
//! - [`der`]: the strict DER reader/writer these are built on.
//!
//! Curve: NIST P-256 only (SGP.22 §2.6.1 allows brainpoolP256r1 too; the test PKI does not
//! use it).

pub mod bsp;
pub mod cert;
pub mod der;
pub mod keys;

pub use bsp::{Bsp, SessionKeys};
pub use cert::Certificate;
pub use keys::{OneTimeKey, SigningKey};

use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// SHA-256 (the hash of every RSP signature, of hashCc, SGP.22 §3.1.3.1, and of the
/// transaction-bound confirmation code).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Why an RSP crypto operation failed. A signature, MAC or chain that does not check out
/// is distinct from bytes that cannot be parsed, so callers map each to its own SGP.22
/// reason code.
#[derive(Debug, thiserror::Error)]
pub enum RspError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: Box<RspError>,
    },
    #[error("malformed: {0}")]
    Malformed(&'static str),
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    #[error("not a valid P-256 key or point")]
    BadKey,
    #[error("signature does not verify")]
    BadSignature,
    #[error("certificate not issued by the expected issuer (name or key identifier differs)")]
    WrongIssuer,
    #[error("BSP segment: MAC does not verify")]
    BadMac,
    #[error("BSP segment: bad padding after decryption")]
    BadPadding,
}
