//! A three-node RabbitMQ cluster on loopback (TESTRIG's recipe): three private nodes with
//! the MQTT plugin, one Erlang cookie, nodes 2 and 3 joined to node 1, and a policy that
//! mirrors the MQTT plugin's session queues on every node — without it, an agent whose
//! session queue lived on a dead node cannot subscribe on any other node until that node
//! returns (measured: MQTT.md, "Clusters"). Every node is killed on drop.

use super::broker::RABBITMQ_SERVER;
use super::{free_port, Lines, Proc, TempDir};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const RABBITMQCTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

/// One node: its process (None once killed), MQTT port and Erlang node name.
#[derive(Debug)]
pub struct Node {
    proc: Option<Proc>,
    pub port: u16,
    pub name: String,
    dir: TempDir,
}

#[derive(Debug)]
pub struct Cluster {
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// Three nodes, clustered, MQTT session queues mirrored on all. Takes about half a
    /// minute on a quiet machine (the nodes start side by side).
    pub fn start() -> Cluster {
        assert!(
            Path::new(RABBITMQ_SERVER).is_file(),
            "RabbitMQ not found ({RABBITMQ_SERVER}): install it with `make test-deps` \
             (apt-get install rabbitmq-server)"
        );
        let base = free_port();
        let mut started: Vec<(Node, Lines)> = (1..=3)
            .map(|i| Self::launch(&format!("sgc{base}-{i}@localhost")))
            .collect();
        for (node, lines) in started.iter_mut() {
            lines.expect(
                &format!("RabbitMQ node {} to open its MQTT listener", node.name),
                Duration::from_secs(180),
                |l| l.contains("started MQTT TCP listener"),
            );
        }
        let nodes: Vec<Node> = started.into_iter().map(|(n, _)| n).collect();
        let first = nodes[0].name.clone();
        for n in &nodes[1..] {
            for args in [
                vec!["stop_app"],
                vec!["reset"],
                vec!["join_cluster", first.as_str()],
                vec!["start_app"],
            ] {
                n.ctl(&args);
            }
        }
        // Classic mirrored queues (RabbitMQ 3.10): the plugin's per-client session
        // queues are named mqtt-subscription-<client id>qos<N>.
        nodes[0].ctl(&[
            "set_policy",
            "--apply-to",
            "queues",
            "mqtt-sessions",
            "^mqtt-subscription-",
            r#"{"ha-mode":"all","ha-sync-mode":"automatic"}"#,
        ]);
        Cluster { nodes }
    }

    fn launch(name: &str) -> (Node, Lines) {
        let dir = TempDir::new("rmq-node");
        let d = dir.path();
        let port = free_port();
        // One cookie for the three nodes and their rabbitmqctl (read from $HOME).
        let cookie = d.join(".erlang.cookie");
        std::fs::write(&cookie, "SIMGATETESTCLUSTERCOOKIE").expect("write the Erlang cookie");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))
                .expect("chmod the Erlang cookie");
        }
        let mut proc = super::broker::rabbitmq_node(d, name, port, "");
        let lines = Lines::new(proc.child.stdout.take().expect("piped stdout"));
        (
            Node {
                proc: Some(proc),
                port,
                name: name.to_string(),
                dir,
            },
            lines,
        )
    }

    /// Every node's URL, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }

    /// The index of the node with this URL.
    pub fn index_of(&self, url: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.url() == url)
    }

    /// kill -9 node `i`: its clients' connections drop, its retained messages die.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].proc.take() {
            p.kill9();
        }
    }
}

impl Node {
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// rabbitmqctl against this node; panics with its output when it fails.
    fn ctl(&self, args: &[&str]) {
        let out = Command::new(RABBITMQCTL)
            .env("HOME", self.dir.path())
            .args(["-n", &self.name])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {RABBITMQCTL}: {e}"));
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?} on {}: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
