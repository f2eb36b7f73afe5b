//! The integration tests: one binary (linking rustls, ring, sled and tokio once, not per
//! file), one module per area, on the real stack (tests/support: pcscd + vpcd, mosquitto,
//! ptys).

#[path = "../support/mod.rs"]
mod support;

mod architecture;
mod card_engine;
mod card_vectors;
mod chaos;
mod cluster;
mod config_cli;
mod daemon_cards;
mod daemon_modem;
mod daemon_mqtt;
mod esim;
mod esim_download;
mod euicc_download;
mod journal;
mod link_order;
mod link_outbox;
mod link_storms;

mod logs;
mod messaging;
mod modem_budget;
mod modem_cli;
mod modem_dialects;
mod modem_faults;
mod modem_identify;
mod modem_lock;
mod modem_transcripts;
mod modem_vectors;
mod monitoring;
mod pin;
mod platform_link;
mod platform_modem;
mod presence;
mod provision;
mod provision_station;
mod reader_cli;
mod reader_reset;
mod rules;
mod service_notify;
mod smdp;
mod station;
mod swap;
mod terminal;
mod web;
