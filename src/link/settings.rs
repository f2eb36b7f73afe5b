//! What the link is given (`LinkSettings`, from the configuration) and the MQTT options
//! made of it, for the agent and for the platform-side tools.

use super::encode;
use super::reconnect::DEFAULT_RECONNECT_MAX;
use super::tls::tls_config;
use super::LinkError;
use crate::config::BrokerUrl;
use crate::contract::{Health, Topics};
use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Settings the link needs, taken from the configuration.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// The broker, or the nodes of a cluster (src/link/nodes.rs); at least one.
    pub urls: Vec<String>,
    pub agent_id: String,
    pub keepalive: Duration,
    pub username: String,
    pub password: String,
    /// PEM CA bundle; None: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key (mutual TLS); both or neither.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Outbox entries kept before telemetry (then events) is shed.
    pub outbox_cap: u64,
    /// Bytes of queued messages kept before telemetry (then events) is shed.
    pub outbox_max_bytes: u64,
    /// Percent of the state directory's file system kept free while messages queue up
    /// (at least `store::outbox::DISK_RESERVE_FLOOR`).
    pub outbox_disk_reserve_percent: u8,
    /// Publishes in flight (unacknowledged) at once.
    pub window: u16,
    /// Usage telemetry is batched and sent at this interval.
    pub usage_interval: Duration,
    /// The longest wait between connect attempts while the broker is unreachable.
    pub reconnect_max: Duration,
    /// fleet size / the broker's fleet-wide CONNECT quota: a drop's first retry is
    /// spread over it (src/link/reconnect.rs); None: not configured.
    pub fleet_window: Option<Duration>,
}

impl LinkSettings {
    /// Publishes in flight at once: the setting, bounded to 1-1024.
    pub(super) fn window(&self) -> u16 {
        self.window.clamp(1, 1024)
    }

    /// Defaults for everything but the broker and the agent (platform-side tools).
    pub fn new(url: &str, agent_id: &str) -> LinkSettings {
        LinkSettings {
            urls: vec![url.to_string()],
            agent_id: agent_id.to_string(),
            keepalive: Duration::from_secs(300),
            username: String::new(),
            password: String::new(),
            ca_file: None,
            client_cert: None,
            outbox_cap: 100_000,
            outbox_max_bytes: crate::config::DEFAULT_OUTBOX_MAX_BYTES,
            outbox_disk_reserve_percent: crate::config::DEFAULT_DISK_RESERVE_PERCENT,
            window: 16,
            usage_interval: Duration::from_secs(900),
            reconnect_max: DEFAULT_RECONNECT_MAX,
            fleet_window: None,
        }
    }
}

/// rumqttc's limit on a packet, both ways. An inbound packet over it breaks the
/// connection before it is read; the driver then discards it through `drain`.
pub(super) const MAX_PACKET_BYTES: usize = 1024 * 1024;

/// The agent's MQTT options for one broker node.
pub(super) fn mqtt_options(
    settings: &LinkSettings,
    topics: &Topics,
    url: &BrokerUrl,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> MqttOptions {
    let window = settings.window();
    let mut opts = MqttOptions::new(settings.agent_id.clone(), url.host.clone(), url.port);
    opts.set_keep_alive(settings.keepalive);
    opts.set_clean_session(false);
    opts.set_manual_acks(true);
    // Twice the window plus room for health: see the module note on packet ids.
    opts.set_inflight(2 * window + 2);
    // rumqttc drops the connection on a packet over its limit, and with a persistent
    // session the broker redelivers it on every reconnect: a loop. So the transport
    // limit is generous (1 MiB) and the contract's own limit (MAX_INBOUND_BYTES) is
    // enforced after receipt, as a refusal the platform sees. Brokers should cap
    // what reaches the agent (mosquitto: message_size_limit) — see MQTT.md.
    opts.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    if !settings.username.is_empty() {
        opts.set_credentials(settings.username.clone(), settings.password.clone());
    }
    if let (true, Some(cfg)) = (url.tls, tls) {
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            cfg.clone(),
        )));
    }
    let will = encode(&Health::new(false, 0));
    opts.set_last_will(LastWill::new(topics.health(), will, QoS::AtLeastOnce, true));
    opts
}

/// How a platform-side tool (`simgate watch`, `simgate platform`) reaches a broker:
/// credentials and TLS files, applied the same way the agent applies its own.
#[derive(Debug, Clone, Default)]
pub struct ClientAccess {
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// rumqttc options for a platform-side tool with client id `client_id`.
pub fn client_options(
    url: &str,
    client_id: String,
    access: &ClientAccess,
) -> Result<MqttOptions, LinkError> {
    let url = BrokerUrl::parse(url).map_err(LinkError::Url)?;
    let mut opts = MqttOptions::new(client_id, url.host, url.port);
    opts.set_keep_alive(Duration::from_secs(30));
    if let Some(u) = &access.username {
        opts.set_credentials(u.clone(), access.password.clone().unwrap_or_default());
    }
    if url.tls {
        let cfg = tls_config(access.ca_file.as_deref(), access.client_cert.as_ref())?;
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(cfg),
        )));
    }
    Ok(opts)
}
