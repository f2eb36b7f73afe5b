//! A private broker per test on a free loopback port: mosquitto, or a RabbitMQ node with
//! its MQTT plugin; publishing to it and subscribing with mosquitto's clients.

use super::{free_port, signal, subscribe_at, which, Lines, Proc, Sub, TempDir, INSTALL_HINT};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Debian's RabbitMQ start script (the one /usr/sbin/rabbitmq-server wraps to switch to
/// the rabbitmq user).
pub(crate) const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// Which broker a [`Broker`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Mosquitto,
    /// RabbitMQ with its MQTT plugin (MQTT 3.1.1): the second broker, a clustering one
    /// (MQTT.md, "Brokers"). Debian's rabbitmq-server, a private node per Broker.
    RabbitMq,
}

/// A private broker on a free loopback port: mosquitto unless made with
/// [`Broker::rabbitmq`].
#[derive(Debug)]
pub struct Broker {
    proc: Proc,
    pub port: u16,
    pub dir: TempDir,
    extra: String,
    pub kind: BrokerKind,
}

impl Broker {
    pub fn start() -> Broker {
        Self::start_with("")
    }

    /// `extra` is appended to the generated mosquitto.conf.
    pub fn start_with(extra: &str) -> Broker {
        Self::start_on(free_port(), extra)
    }

    /// A broker on a given port (one a client was already told about).
    pub fn start_on(port: u16, extra: &str) -> Broker {
        assert!(which("mosquitto"), "mosquitto not found: {INSTALL_HINT}");
        let dir = TempDir::new("broker");
        let (proc, port) = Self::launch(&dir, port, extra);
        Broker {
            proc,
            port,
            dir,
            extra: extra.to_string(),
            kind: BrokerKind::Mosquitto,
        }
    }

    /// A private RabbitMQ node with the MQTT plugin on a free loopback port: anonymous
    /// clients allowed (the guest user, vhost `/`), no AMQP listener. `extra` is appended
    /// to its rabbitmq.conf.
    pub fn rabbitmq(extra: &str) -> Broker {
        assert!(
            Path::new(RABBITMQ_SERVER).is_file(),
            "RabbitMQ not found ({RABBITMQ_SERVER}): install it with `make test-deps` \
             (apt-get install rabbitmq-server)"
        );
        let dir = TempDir::new("rabbitmq");
        let port = free_port();
        let proc = Self::launch_rabbitmq(&dir, port, extra);
        Broker {
            proc,
            port,
            dir,
            extra: extra.to_string(),
            kind: BrokerKind::RabbitMq,
        }
    }

    fn launch_rabbitmq(dir: &TempDir, port: u16, extra: &str) -> Proc {
        let mut proc = rabbitmq_node(
            dir.path(),
            &format!("simgate-{port}@localhost"),
            port,
            extra,
        );
        let mut lines = Lines::new(proc.child.stdout.take().expect("piped stdout"));
        lines.expect(
            "RabbitMQ to open its MQTT listener",
            Duration::from_secs(90),
            |l| l.contains("started MQTT TCP listener"),
        );
        proc
    }

    fn launch(dir: &TempDir, port: u16, extra: &str) -> (Proc, u16) {
        // mosquitto drops root for user `mosquitto`: its persistence must be writable.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777));
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest stderr\nlog_type all\npersistence true\npersistence_location {}/\n{extra}\n",
                dir.path().display()
            ),
        )
        .expect("write mosquitto.conf");
        let mut proc = Proc::spawn(
            "mosquitto",
            Command::new("mosquitto")
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let mut lines = Lines::new(proc.child.stderr.take().expect("piped stderr"));
        lines.expect(
            "mosquitto to open its listener",
            Duration::from_secs(10),
            |l| l.contains("running"),
        );
        (proc, port)
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The broker's process id (its CPU time, in the fleet benchmark).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Stop the broker (kill -9: an outage, not a clean shutdown).
    pub fn stop(&mut self) {
        self.proc.kill9();
    }

    /// Stop the broker politely (SIGTERM): it saves its persistence, so subscribers'
    /// persistent sessions and their queued messages survive the restart. For the agent
    /// this is the same outage as kill -9: its TCP connection drops.
    pub fn stop_graceful(&mut self) {
        signal(self.proc.pid(), "TERM");
        // RabbitMQ's orderly shutdown (queues, the Raft log of client ids) takes longer.
        let limit = match self.kind {
            BrokerKind::Mosquitto => 10,
            BrokerKind::RabbitMq => 60,
        };
        self.proc.wait(Duration::from_secs(limit));
    }

    /// Publish with mosquitto_pub (QoS 1); `args` adds options (payload: `-m`/`-f`).
    pub fn publish(&self, topic: &str, args: &[&str]) {
        publish_at(self.port, topic, args);
    }

    /// Stop it politely (its persistence saved: sessions, queued and retained
    /// messages) and start it again on the same port with that persistence: a broker
    /// that keeps its sessions across a restart. For the agent it is an outage.
    pub fn restart_graceful(&mut self) {
        self.stop_graceful();
        self.resume();
    }

    /// Start it again after a stop, on the same port with the same persistence.
    pub fn resume(&mut self) {
        self.proc = match self.kind {
            BrokerKind::Mosquitto => Self::launch(&self.dir, self.port, &self.extra).0,
            BrokerKind::RabbitMq => Self::launch_rabbitmq(&self.dir, self.port, &self.extra),
        };
    }

    /// Start it again on the same port with the same persistence.
    pub fn restart(&mut self) {
        self.proc.kill9();
        self.resume();
    }

    /// A subscriber printing `retain topic payload` per message; returns once the
    /// broker acknowledged the subscription.
    pub fn subscribe(&self, topic: &str) -> Sub {
        self.subscribe_with(topic, &[])
    }

    /// A subscriber with extra mosquitto_sub options: `-c -i ID` for a persistent
    /// session (it reconnects by itself and gets what was queued for it), TLS and
    /// credentials.
    pub fn subscribe_with(&self, topic: &str, extra: &[&str]) -> Sub {
        subscribe_at(self.port, topic, extra)
    }
}

/// Publish with mosquitto_pub (QoS 1) to the broker on loopback `port`.
pub fn publish_at(port: u16, topic: &str, args: &[&str]) {
    let st = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
        ])
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("cannot run mosquitto_pub: {e}; {INSTALL_HINT}"));
    assert!(st.success(), "mosquitto_pub to {topic} failed: {st}");
}

/// A RabbitMQ node named `name` with its MQTT listener on `port` (`extra`: more
/// rabbitmq.conf lines), all its files in `d`; its stdout piped (the test awaits its
/// listener there). The node's distribution port must be free too; the name keeps
/// nodes apart. The Erlang cookie is read from `d` ($HOME).
pub(crate) fn rabbitmq_node(d: &std::path::Path, name: &str, port: u16, extra: &str) -> Proc {
    std::fs::write(
        d.join("rabbitmq.conf"),
        format!(
            "listeners.tcp = none\nmqtt.listeners.tcp.default = 127.0.0.1:{port}\n\
             mqtt.allow_anonymous = true\nloopback_users = none\n{extra}\n"
        ),
    )
    .expect("write rabbitmq.conf");
    std::fs::write(d.join("enabled_plugins"), "[rabbitmq_mqtt].\n").expect("write enabled_plugins");
    let dist = free_port();
    Proc::spawn(
        "rabbitmq-server",
        Command::new(RABBITMQ_SERVER)
            .env("HOME", d)
            .env("RABBITMQ_NODENAME", name)
            .env("RABBITMQ_NODE_PORT", dist.to_string())
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .env("RABBITMQ_LOGS", "-")
            // The script then execs the Erlang VM instead of waiting on it as a child:
            // the process the test holds is the broker, and kill -9 is real.
            .env("RUNNING_UNDER_SYSTEMD", "true")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )
}
