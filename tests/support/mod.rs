//! The project's test rig: a private pcscd with one vpcd entry, simgate's virtual cards
//! plugged into it, a private mosquitto, and a subscriber — all real processes on free
//! loopback ports, so tests run in parallel without stepping on each other. Everything a
//! rig starts it stops on drop, also when the test fails.
//!
//! Missing system parts fail the test with the command that installs them.
//!
//! A file per part, every item reachable as `support::X`: `host` (scratch directories,
//! free ports), `process` (children, their lines), `pcsc` (pcscd, vpcd, virtual cards),
//! `broker` (mosquitto or RabbitMQ), `pki` (TLS and passwords for the broker),
//! `subscriber` (messages, checked against the schemas), `modem` (the emulator on a
//! pty), `agent` (the simgate binary and `simgate run`), and `browser`, `cluster`, `smdp`.

#![allow(dead_code)] // The benches each use a different part of the rig.

mod agent;
mod broker;
pub mod browser;
pub mod cluster;
mod host;
mod modem;
mod pcsc;
mod pki;
mod process;
pub mod smdp;
mod subscriber;

use host::which;
// Every item as `support::X`; the benches each use a different part of the rig.
#[allow(unused_imports)]
pub use self::{
    agent::{
        final_status, modem_agent, modem_agent_with, repo, run_args, send_command, simgate_bin,
        unix_now,
    },
    broker::{publish_at, Broker},
    host::{free_port, free_port_pair, is_root, TempDir},
    modem::Modem,
    pcsc::{Card, Pcsc},
    pki::{password_file, Pki},
    process::{signal, wait_for, Lines, Proc},
    subscriber::{parse_msg, subscribe_at, Msg, Sub},
};

pub const INSTALL_HINT: &str = "install the test stack with `make deps` \
    (apt-get install pkg-config libpcsclite-dev pcscd vsmartcard-vpcd mosquitto mosquitto-clients)";
