//! Identification cost per card kind: APDUs (what the code controls) and time on the rig
//! (what the person at the station feels), with and without an emulated reader latency,
//! and two readers served at once against one.
//!
//!     cargo bench --bench cards --profile dev      # as root: a private pcscd + vpcd
//!
//! Times are printed, never asserted: they depend on the machine. APDU budgets are
//! asserted in tests/card_engine.rs.

#[path = "../tests/support/mod.rs"]
mod support;

use simgate::card::{euicc, identify, Options};
use simgate::emu::vcard::{CardImage, VirtualCard};
use std::time::Duration;
use support::Pcsc;

/// The card kinds of the issue, by image.
const KINDS: &[(&str, &str)] = &[
    ("physical UICC (USIM)", "usim.toml"),
    ("legacy GSM SIM", "gsm-sim.toml"),
    ("eUICC, standard ISD-R", "euicc.toml"),
    ("eUICC, vendor ISD-R", "euicc-vendor-aid.toml"),
    ("eUICC, no logical channels", "euicc-no-channels.toml"),
    ("blank eUICC", "euicc-blank.toml"),
];

const RUNS: usize = 7;

fn image(name: &str) -> VirtualCard {
    let path = support::repo().join("devices/cards").join(name);
    VirtualCard::new(CardImage::load(&path).unwrap_or_else(|e| panic!("{e}")))
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// `simgate read --json` of `readers` (all with a card when empty): each row's
/// identification time, in ms, measured inside simgate.
fn read_ms(pcsc: &Pcsc, reader: Option<&str>) -> Vec<u64> {
    let mut cmd = pcsc.simgate();
    cmd.env("RUST_LOG", "warn").args(["read", "--json"]);
    if let Some(r) = reader {
        cmd.args(["--reader", r]);
    }
    let out = cmd.output().expect("run simgate read");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON rows");
    rows.as_array()
        .expect("an array")
        .iter()
        .map(|r| r["ms"].as_u64().expect("ms"))
        .collect()
}

/// lpac's APDUs for the same operation on a T=0 card, counted from its source
/// (estkme-group/lpac@8f68d5c: euicc/euicc.c euicc_init opens a logical channel and
/// SELECTs the ISD-R, driver/apdu/pcsc.c; every ES10 call is one STORE DATA and a GET
/// RESPONSE per 256 bytes; euicc_fini closes the channel): 3 + 2 per ES10 call. lpac
/// verifies nothing and lists no notifications unless asked: the second figure is the
/// same work as simgate's (the operation, `profile list`, `notification list`).
const LPAC: &[(&str, u32, u32)] = &[
    // chip info (GetEUICCData, GetEuiccConfiguredAddresses, GetRAT, GetEUICCInfo2) +
    // profile list, against simgate's one listing.
    ("esim list", 11, 16),
    ("esim enable (verified)", 5, 15),
    ("esim delete (verified)", 5, 15),
    ("esim nickname (verified)", 5, 15),
    ("esim notifications", 5, 5),
];

/// APDUs per eSIM operation on the virtual eUICC in memory (T=0: GET RESPONSE after
/// every ES10 answer).
fn esim_in_memory() {
    use simgate::card::esim::{self, Action, Isdr};
    use simgate::card::Iccid;
    let iccid = |s: &str| Iccid::from_digits(s).expect("an ICCID");
    let mut card = image("euicc.toml");
    fn isdr(c: &mut VirtualCard) -> Isdr<&mut VirtualCard> {
        Isdr::select_basic(c, euicc::shipped_aids()).expect("ISD-R")
    }
    let list = esim::list(isdr(&mut card)).expect("list").0.apdus;
    let mut apply = |action: Action| {
        esim::apply(isdr(&mut card), &action)
            .expect("operation")
            .0
            .apdus
    };
    let enable = apply(Action::Enable {
        iccid: iccid("8949440000000000024"),
        refresh: false,
    });
    let nickname = apply(Action::Nickname {
        iccid: iccid("8949440000000000016"),
        nickname: "spare".into(),
    });
    let delete = apply(Action::Delete {
        iccid: iccid("8949440000000000016"),
    });
    let (_, _, notifications) =
        esim::with_isdr(isdr(&mut card), |i| i.notifications()).expect("notifications");
    let ours = [list, enable, delete, nickname, notifications];
    println!("\nAPDUs per eSIM operation (in memory, euicc.toml, T=0), against lpac's");
    println!(
        "{:28} {:>7} {:>10} {:>17}",
        "operation", "simgate", "lpac (op)", "lpac (same work)"
    );
    for ((op, lpac, same), n) in LPAC.iter().zip(ours) {
        println!("{op:28} {n:>7} {lpac:>10} {same:>17}");
    }
}

/// `simgate esim list` and `enable` through an emulated Quectel EC25's +CGLA on a pty:
/// AT lines (what the code controls) and ms (inside simgate, after the modem is
/// recognised), median of `RUNS`.
fn esim_through_a_modem() {
    let modem = support::Modem::start_with("quectel-ec2x", &["--esim"]);
    let run = |args: &[&str]| -> (u64, u64) {
        let out = std::process::Command::new(support::simgate_bin())
            .env("RUST_LOG", "warn")
            .arg("esim")
            .args(args)
            .args(["--port", &modem.port, "--json"])
            .output()
            .expect("run simgate esim --port");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        (
            v["at_lines"].as_u64().expect("at_lines"),
            v["ms"].as_u64().expect("ms"),
        )
    };
    let list: Vec<(u64, u64)> = (0..RUNS).map(|_| run(&["list"])).collect();
    let switch: Vec<(u64, u64)> = (0..RUNS)
        .map(|i| {
            let to = if i % 2 == 0 {
                "89883030000000000437"
            } else {
                "89883030000000000429"
            };
            run(&["enable", to])
        })
        .collect();
    println!(
        "\neSIM operations through an emulated modem's +CGLA (median of {RUNS}, inside simgate)"
    );
    for (op, v) in [
        ("esim list", list),
        ("esim enable (verified, radio cycle)", switch),
    ] {
        let lines = v[0].0;
        let ms = median(v.into_iter().map(|(_, ms)| ms).collect());
        println!("{op:36} {lines:>3} AT lines {ms:>5} ms");
    }
}

/// `simgate esim list` and `enable` through real pcscd + vpcd, 5 ms per APDU: the time a
/// user waits, process start included.
fn esim_on_the_rig(pcsc: &Pcsc) {
    let card = pcsc.insert_with(0, "euicc.toml", &["--latency-ms", "5"]);
    let r0 = pcsc.reader(0);
    let run = |args: &[&str]| {
        let t = std::time::Instant::now();
        let out = pcsc
            .simgate()
            .env("RUST_LOG", "warn")
            .args(["esim"])
            .args(args)
            .args(["--reader", &r0])
            .output()
            .expect("run simgate esim");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed().as_millis() as u64
    };
    let list: Vec<u64> = (0..RUNS).map(|_| run(&["list", "--json"])).collect();
    let switch: Vec<u64> = (0..RUNS)
        .map(|i| {
            let to = if i % 2 == 0 {
                "8949440000000000024"
            } else {
                "8949440000000000016"
            };
            run(&["enable", to, "--json"])
        })
        .collect();
    println!(
        "\neSIM operations on the rig, 5 ms per APDU (median of {RUNS}, process start included)"
    );
    println!("esim list                     {:>5} ms", median(list));
    println!("esim enable (verified)        {:>5} ms", median(switch));
    card.remove();
    support::wait_for("card out", Duration::from_secs(10), || {
        let out = pcsc.simgate().args(["readers", "--json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v[0]["card_present"] == false
    });
}

fn main() {
    println!(
        "APDUs per card kind (in memory, shipped ISD-R list of {} AIDs)",
        euicc::shipped_aids().len()
    );
    println!(
        "budgeted: ICCID, kind, ISD-R, EID, profiles; +subscriber: IMSI, SPN; total: on the wire"
    );
    println!("vendor AIDs by ATR (default) | vendor AIDs always");
    println!(
        "{:30} {:>8} {:>11} {:>6} | {:>8}",
        "kind", "budgeted", "+subscriber", "total", "budgeted"
    );
    for (kind, file) in KINDS {
        let mut card = image(file);
        let by_atr = Options {
            vendor_aids: simgate::card::atr::declares_euicc(&card.atr()),
            ..Options::default()
        };
        let id = identify(&mut card, &by_atr).expect(file);
        let always = identify(&mut image(file), &Options::default()).expect(file);
        println!(
            "{kind:30} {:>8} {:>11} {:>6} | {:>8}",
            id.apdus, id.apdus_subscriber, id.apdus_total, always.apdus
        );
    }

    esim_in_memory();
    esim_through_a_modem();

    let pcsc = Pcsc::start();
    esim_on_the_rig(&pcsc);
    for latency in [0u64, 5] {
        println!("\nidentification time on the rig, {latency} ms per APDU (median of {RUNS}, inside simgate)");
        for (kind, file) in KINDS {
            let card = pcsc.insert_with(0, file, &["--latency-ms", &latency.to_string()]);
            let r0 = pcsc.reader(0);
            let ms: Vec<u64> = (0..RUNS).map(|_| read_ms(&pcsc, Some(&r0))[0]).collect();
            println!("{kind:30} {:>5} ms", median(ms));
            card.remove();
            support::wait_for("card out", Duration::from_secs(10), || {
                let out = pcsc.simgate().args(["readers", "--json"]).output().unwrap();
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                v[0]["card_present"] == false
            });
        }
    }

    let latency = "20";
    println!("\ntwo readers at once against one ({latency} ms per APDU, eUICC in each)");
    let _a = pcsc.insert_with(0, "euicc.toml", &["--latency-ms", latency]);
    let _b = pcsc.insert_with(1, "euicc.toml", &["--latency-ms", latency]);
    let r0 = pcsc.reader(0);
    let one: Vec<u64> = (0..RUNS).map(|_| read_ms(&pcsc, Some(&r0))[0]).collect();
    let both: Vec<u64> = (0..RUNS)
        .map(|_| read_ms(&pcsc, None).into_iter().max().expect("two rows"))
        .collect();
    let (one, both) = (median(one), median(both));
    println!("one reader:               {one:>5} ms");
    println!("two readers at once:      {both:>5} ms (slower of the two)");
    println!(
        "speedup over one by one:  {:.2}x",
        2.0 * one as f64 / both.max(1) as f64
    );
}
