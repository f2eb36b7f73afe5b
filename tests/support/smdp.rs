//! The test SM-DP+ (`simgate emulate smdp`) as a process, and the RSP test PKI
//! (tests/rig/rsp-pki.sh) it and the virtual eUICC read their keys from.

use super::{repo, simgate_bin, wait_for, Lines, Proc, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Make the RSP test PKI in `dir` (created if needed) for the eUICC `eid` (32 digits):
/// ci, eum, euicc, dpauth, dppb, dptls — `.pem` certificates and `.key` PKCS#8 keys.
pub fn rsp_pki(dir: &Path, eid: &str) -> PathBuf {
    rsp_pki_named(dir, eid, "test")
}

/// Like [`rsp_pki`] under another CI (`other`: the "certificate from another CI" case).
pub fn rsp_pki_named(dir: &Path, eid: &str, ci_name: &str) -> PathBuf {
    let out = Command::new(repo().join("tests/rig/rsp-pki.sh"))
        .arg(dir)
        .arg(eid)
        .arg(ci_name)
        .output()
        .expect("run tests/rig/rsp-pki.sh (needs openssl: tests/rig/deps.sh installs it)");
    assert!(
        out.status.success(),
        "tests/rig/rsp-pki.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.to_path_buf()
}

/// The shipped profiles (devices/smdp/profiles.toml): matching IDs SIMGATE-TEST-1,
/// SIMGATE-TEST-CC (confirmation code 1234), SIMGATE-TEST-BIG, SIMGATE-TEST-T.
pub fn shipped_profiles() -> PathBuf {
    repo().join("devices/smdp/profiles.toml")
}

/// A running test SM-DP+ on a free loopback port, killed on drop.
#[derive(Debug)]
pub struct Smdp {
    pub proc: Proc,
    /// `127.0.0.1:PORT`: the SM-DP+ address of activation codes.
    pub address: String,
    pub lines: Lines,
    journal: PathBuf,
    _dir: TempDir,
}

impl Smdp {
    /// Start with the PKI in `pki` and the `profiles` file, plus more `emulate smdp`
    /// arguments (e.g. `["--fault", "bad-mac"]`); returns once it listens.
    pub fn start(pki: &Path, profiles: &Path, extra: &[&str]) -> Smdp {
        let dir = TempDir::new("smdp");
        let journal = dir.path().join("journal.jsonl");
        let mut proc = Proc::spawn(
            "simgate emulate smdp",
            Command::new(simgate_bin())
                .args(["emulate", "smdp", "--listen", "127.0.0.1:0", "--pki"])
                .arg(pki)
                .arg("--profiles")
                .arg(profiles)
                .arg("--journal")
                .arg(&journal)
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        );
        let mut lines = Lines::new(proc.child.stdout.take().expect("piped stdout"));
        let ready = lines.expect("smdp listening", Duration::from_secs(20), |l| {
            l.starts_with("smdp listening on https://")
        });
        let address = ready
            .trim_start_matches("smdp listening on https://")
            .trim()
            .to_string();
        Smdp {
            proc,
            address,
            lines,
            journal,
            _dir: dir,
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.address)
    }

    /// An SGP.22 §4.1 activation code for `matching_id` on this server.
    pub fn activation_code(&self, matching_id: &str) -> String {
        format!("LPA:1${}${matching_id}", self.address)
    }

    /// Everything journaled so far, one JSON object per line: `{"event": "call",
    /// "function", "status", "transactionId"?, "subjectCode"?, "reasonCode"?}`,
    /// `{"event": "bpp", "iccid", "segments86", "bytes"}`, `{"event": "cancelled",
    /// "transactionId", "reason"}`, `{"event": "notification", "kind", "seq", "iccid",
    /// "verified", "result"?}`, `{"event": "tls-failed", "error"}`. A request's lines
    /// are written before it is answered.
    pub fn journal(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.journal)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a journal line is JSON"))
            .collect()
    }

    /// The journal's lines of one `event` kind.
    pub fn events(&self, event: &str) -> Vec<serde_json::Value> {
        self.journal()
            .into_iter()
            .filter(|l| l["event"] == event)
            .collect()
    }

    /// Wait (bounded by `limit`) for a journal line matching `pred`, for a client that
    /// works in the background (a daemon sending notifications).
    pub fn await_event(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut found = None;
        wait_for(what, limit, || {
            found = self.journal().into_iter().find(|l| pred(l));
            found.is_some()
        });
        found.expect("wait_for returned with the line")
    }
}

/// An EID from 30 made-up digits and its two check digits (GSMA SGP.29 §2.2: the whole
/// number mod 97 is 1).
pub fn eid(prefix: &str) -> String {
    let rem = prefix
        .bytes()
        .fold(0u32, |r, b| (r * 10 + u32::from(b - b'0')) % 97);
    format!("{prefix}{:02}", 98 - (rem * 100) % 97)
}

/// Another Blank eUICC of `pki`'s EUM (tests/rig/rsp-pki.sh --euicc): its keys in
/// `dir/euicc-EID` and its card image (devices/cards/euicc-blank.toml with EID `eid`) as
/// `dir/blank-EID.toml`. Returns (image, keys), for `emulate card --image … --pki …`.
pub fn blank_euicc(pki: &Path, dir: &Path, eid: &str) -> (PathBuf, PathBuf) {
    let keys = dir.join(format!("euicc-{eid}"));
    if !keys.exists() {
        let out = Command::new(repo().join("tests/rig/rsp-pki.sh"))
            .arg("--euicc")
            .arg(pki)
            .arg(&keys)
            .arg(eid)
            .output()
            .expect("run tests/rig/rsp-pki.sh");
        assert!(
            out.status.success(),
            "tests/rig/rsp-pki.sh --euicc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let image = dir.join(format!("blank-{eid}.toml"));
    let blank = std::fs::read_to_string(repo().join("devices/cards/euicc-blank.toml"))
        .expect("read devices/cards/euicc-blank.toml");
    std::fs::write(
        &image,
        blank.replace("89049032123451234512345678910062", eid),
    )
    .expect("write the card image");
    (image, keys)
}
