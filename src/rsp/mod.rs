//! The Local Profile Assistant (GSMA SGP.22 v2.x §3.1.3): simgate downloads an operator's
//! profile from an SM-DP+ (ES9+, JSON over HTTPS) onto an eUICC (ES10b, STORE DATA through
//! a reader or a modem). No card cryptography here: TLS trusting the configured GSMA CI
//! roots, and SHA-256 for a confirmation code. The card-side encodings are
//! `card::es10b`; the engine is [`download`].

pub mod activation;
pub mod download;
pub mod es9;
pub mod tls;
