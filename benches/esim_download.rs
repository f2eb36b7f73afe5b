//! A profile download's cost (issue: simgate as the LPA): per download through a reader
//! (pcscd + vpcd, the virtual eUICC answering after 5 ms per APDU, as a T=0 SIM in a real
//! reader) and through the emulated modem (+CGLA and +CSIM), against the test SM-DP+ on
//! loopback: APDUs, bytes of command APDUs to the card, AT lines, HTTPS round trips and
//! connections, bytes each way, and wall time (median of RUNS).
//!
//!     cargo bench --bench esim_download --profile dev      # as root: private pcscd + vpcd
//!
//! Times are printed, never asserted: they depend on the machine.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use support::{smdp, Modem, Pcsc, TempDir};

const RUNS: usize = 5;
const BLANK_EID: &str = "89049032123451234512345678910062";
const MODEM_EID: &str = "89049032123451234512345678901235";

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn result(out: &std::process::Output) -> serde_json::Value {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|v| v.get("result").is_some())
        .unwrap_or_else(|| panic!("no result: {}", String::from_utf8_lossy(&out.stderr)))
}

fn row(what: &str, rs: &[serde_json::Value], lines: Option<u64>) {
    let n = |k: &str| rs[0][k].as_u64().unwrap_or(0);
    let h = |k: &str| rs[0]["https"][k].as_u64().unwrap_or(0);
    let ms = median(rs.iter().map(|r| r["ms"].as_u64().unwrap_or(0)).collect());
    println!(
        "{what:42} {:>6} {:>7} {:>6} {:>5} {:>4} {:>6} {:>7} {:>6} {:>6}",
        n("apdus"),
        n("bytes_to_card"),
        lines.map_or("-".to_string(), |l| l.to_string()),
        h("round_trips"),
        h("connections"),
        h("bytes_sent"),
        h("bytes_received"),
        n("bpp_bytes"),
        ms
    );
}

fn main() {
    println!(
        "{:42} {:>6} {:>7} {:>6} {:>5} {:>4} {:>6} {:>7} {:>6} {:>6}",
        "download", "APDUs", "to card", "AT", "HTTPS", "conn", "sent", "recvd", "BPP", "ms"
    );
    let dir = TempDir::new("bench-rsp");
    let pki = smdp::rsp_pki(&dir.path().join("pki"), BLANK_EID);
    let server = smdp::Smdp::start(&pki, &smdp::shipped_profiles(), &[]);
    let pcsc = Pcsc::start();
    for (label, matching) in [
        ("reader, 5 ms/APDU, small profile", "SIMGATE-TEST-1"),
        ("reader, 5 ms/APDU, 24 KB profile", "SIMGATE-TEST-BIG"),
    ] {
        let mut rs = Vec::new();
        for _ in 0..RUNS {
            let card = pcsc.insert_with(
                0,
                "euicc-blank.toml",
                &["--pki", &pki.display().to_string(), "--latency-ms", "5"],
            );
            let out = pcsc
                .simgate()
                .args(["esim", "download", "--yes", "--json", "--activation-code"])
                .arg(server.activation_code(matching))
                .arg("--ci-dir")
                .arg(&pki)
                .output()
                .unwrap();
            rs.push(result(&out));
            card.remove();
        }
        row(label, &rs, None);
    }

    let mdir = TempDir::new("bench-rsp-modem");
    let mpki = smdp::rsp_pki(&mdir.path().join("pki"), MODEM_EID);
    let mserver = smdp::Smdp::start(&mpki, &smdp::shipped_profiles(), &[]);
    for (label, family) in [
        ("modem +CGLA (generic-3gpp)", "generic-3gpp"),
        ("modem +CSIM (generic-csim)", "generic-csim"),
    ] {
        let mut rs = Vec::new();
        let mut at = Vec::new();
        for _ in 0..RUNS {
            let journal = mdir.path().join(format!("{family}.at"));
            let _ = std::fs::remove_file(&journal);
            let m = Modem::start_with(
                family,
                &[
                    "--esim",
                    "--pki",
                    &mpki.display().to_string(),
                    "--journal",
                    &journal.display().to_string(),
                ],
            );
            let out = Command::new(support::simgate_bin())
                .args(["esim", "download", "--yes", "--json", "--port", &m.port])
                .arg("--activation-code")
                .arg(mserver.activation_code("SIMGATE-TEST-1"))
                .arg("--ci-dir")
                .arg(&mpki)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            rs.push(result(&out));
            at.push(
                std::fs::read_to_string(&journal)
                    .map(|j| j.lines().count() as u64)
                    .unwrap_or(0),
            );
            drop(m);
        }
        row(label, &rs, Some(median(at)));
    }
}
