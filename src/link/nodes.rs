//! The broker's nodes as one agent sees them: which node it tries first, and where it
//! goes when that one is gone.
//!
//! A cluster is given as several URLs (`broker.urls`) or as one name that resolves to
//! several addresses. Every agent ranks the nodes by rendezvous hashing (Thaler and
//! Ravishankar, "A Name-Based Mapping Scheme for Rendezvous", 1996: the node with the
//! highest hash of (agent id, node) first): a fleet spreads evenly over the nodes, an
//! agent keeps its node across restarts, and when a node is gone only its own agents
//! move — each to its own second choice, so they spread over the survivors instead of
//! all landing on one neighbour. The same order is the failover order.
//!
//! A connect round tries the nodes in that order, one after the other at once while
//! they cannot be reached (a node that is gone costs no CONNECT, so trying the next is
//! free of the broker's connect quota); the waits of the reconnect policy
//! (src/link/reconnect.rs) come between rounds. Every round starts again at the
//! preferred node, after resolving the names again.

use crate::config::BrokerUrl;
use std::time::Duration;

/// One agent's nodes in its own order, and where its current round stands.
#[derive(Debug, Clone)]
pub(super) struct Nodes {
    agent_id: String,
    configured: Vec<BrokerUrl>,
    /// The nodes of this round, best first.
    order: Vec<BrokerUrl>,
    /// Index in `order` of the node of the next attempt.
    next: usize,
    /// The node of the last accepted connection.
    last: Option<BrokerUrl>,
}

/// How long resolving the names of a round may take before the names are used as they
/// are (the connect then resolves them itself).
const RESOLVE_LIMIT: Duration = Duration::from_secs(5);

impl Nodes {
    pub(super) fn new(agent_id: &str, configured: Vec<BrokerUrl>) -> Nodes {
        let order = rank(agent_id, configured.clone());
        Nodes {
            agent_id: agent_id.to_string(),
            configured,
            order,
            next: 0,
            last: None,
        }
    }

    /// Start a round: resolve the names again (a plain-MQTT name with several addresses
    /// becomes one node per address) and rank them. A name under TLS stays a name: the
    /// certificate is checked against it, and the connect tries its addresses in the
    /// resolver's order.
    pub(super) async fn start_round(&mut self) {
        let mut nodes = Vec::new();
        for url in &self.configured {
            let addrs = if url.tls || url.host.parse::<std::net::IpAddr>().is_ok() {
                Vec::new()
            } else {
                let lookup = tokio::net::lookup_host((url.host.as_str(), url.port));
                match tokio::time::timeout(RESOLVE_LIMIT, lookup).await {
                    Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
                    // Not resolvable now: the connect says why, in the usual log line.
                    _ => Vec::new(),
                }
            };
            let several = several_nodes(addrs);
            if several.len() > 1 {
                nodes.extend(several.into_iter().map(|ip| BrokerUrl {
                    tls: false,
                    host: ip.to_string(),
                    port: url.port,
                }));
            } else {
                nodes.push(url.clone());
            }
        }
        let mut distinct_nodes: Vec<BrokerUrl> = Vec::new();
        for n in nodes {
            if !distinct_nodes.contains(&n) {
                distinct_nodes.push(n);
            }
        }
        let nodes = distinct_nodes;
        self.order = rank(&self.agent_id, nodes);
        self.next = 0;
    }

    /// The node of the next attempt.
    pub(super) fn current(&self) -> &BrokerUrl {
        // `order` is never empty: the link starts only with at least one URL, and a
        // round keeps every configured URL (a name that does not resolve stays a name).
        &self.order[self.next.min(self.order.len() - 1)]
    }

    /// The attempt on the current node failed: move to the next one. False when every
    /// node of the round was tried (the round is over: wait, then start another).
    pub(super) fn failed_over(&mut self) -> bool {
        self.next += 1;
        self.next < self.order.len()
    }

    /// The broker accepted a connection on the current node. True when it is not the
    /// node of the last accepted connection (another node of a cluster, which does not
    /// hold what this agent published on the last one — its retained rows); for the
    /// first connection of this process, true on a cluster (where the agent was before
    /// is not known), false on a single broker (its session says).
    pub(super) fn accepted(&mut self) -> bool {
        let now = self.current().clone();
        let moved = match &self.last {
            Some(last) => *last != now,
            None => self.order.len() > 1,
        };
        self.last = Some(now);
        moved
    }
}

/// The nodes behind one name's addresses: several of one family (IPv4 first). One IPv4
/// and one IPv6 address are one dual-stack host, not two nodes: none then (the name is
/// kept, and the connect tries its addresses in the resolver's order).
fn several_nodes(addrs: Vec<std::net::IpAddr>) -> Vec<std::net::IpAddr> {
    let mut v4: Vec<std::net::IpAddr> = Vec::new();
    let mut v6: Vec<std::net::IpAddr> = Vec::new();
    for a in addrs {
        let family = if a.is_ipv4() { &mut v4 } else { &mut v6 };
        if !family.contains(&a) {
            family.push(a);
        }
    }
    match (v4.len() > 1, v6.len() > 1) {
        (true, _) => v4,
        (false, true) => v6,
        (false, false) => Vec::new(),
    }
}

/// The nodes in `agent_id`'s order: highest rendezvous weight first (ties, which need
/// equal 64-bit hashes, by the URL).
pub(super) fn rank(agent_id: &str, mut nodes: Vec<BrokerUrl>) -> Vec<BrokerUrl> {
    nodes.sort_by_cached_key(|n| {
        let name = n.to_string();
        (std::cmp::Reverse(weight(agent_id, &name)), name)
    });
    nodes
}

/// The rendezvous weight of (agent, node): FNV-1a over both (a stable hash: the choice
/// must not change with the compiler, as std's hasher may), finished with splitmix64's
/// mixer so that nearby inputs give unrelated weights.
fn weight(agent_id: &str, node: &str) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    // The separator keeps ("ab","c") and ("a","bc") apart: agent ids have no newline.
    for b in agent_id.bytes().chain([b'\n']).chain(node.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u16) -> BrokerUrl {
        BrokerUrl {
            tls: false,
            host: format!("10.0.0.{i}"),
            port: 1883,
        }
    }

    fn cluster(n: u16) -> Vec<BrokerUrl> {
        (1..=n).map(node).collect()
    }

    #[test]
    fn a_fleet_spreads_evenly_and_an_agent_keeps_its_node() {
        let mut per_node = [0u32; 3];
        for a in 0..3000 {
            let id = format!("gw-{a:05}");
            let first = rank(&id, cluster(3))[0].clone();
            // The configured order does not matter, only the agent and the nodes.
            let mut reversed = cluster(3);
            reversed.reverse();
            assert_eq!(rank(&id, reversed)[0], first, "{id}");
            per_node[usize::from(first.host.as_bytes()[7] - b'1')] += 1;
        }
        // 1000 each expected; a fair split stays well within ±15%.
        assert!(
            per_node.iter().all(|n| (850..=1150).contains(n)),
            "{per_node:?}"
        );
    }

    #[test]
    fn a_dead_nodes_agents_spread_over_the_survivors_and_no_other_agent_moves() {
        let mut moved_to = [0u32; 4];
        for a in 0..3000 {
            let id = format!("gw-{a:05}");
            let before = rank(&id, cluster(3));
            let survivors: Vec<BrokerUrl> =
                cluster(3).into_iter().filter(|n| *n != node(1)).collect();
            let after = rank(&id, survivors);
            if before[0] == node(1) {
                // Its failover order without the dead node is its own second choice.
                assert_eq!(after[0], before[1], "{id}");
                moved_to[usize::from(after[0].host.as_bytes()[7] - b'0')] += 1;
            } else {
                assert_eq!(after[0], before[0], "{id} moved although its node lives");
            }
        }
        assert!(moved_to[2] > 400 && moved_to[3] > 400, "{moved_to:?}");
    }

    #[tokio::test]
    async fn a_round_fails_over_through_every_node_once_then_starts_at_the_preferred_one() {
        let mut nodes = Nodes::new("gw-1", cluster(3));
        nodes.start_round().await;
        let order = rank("gw-1", cluster(3));
        assert_eq!(nodes.current(), &order[0]);
        assert!(nodes.failed_over());
        assert_eq!(nodes.current(), &order[1]);
        assert!(nodes.accepted(), "the first connection is on a new node");
        assert!(!nodes.accepted(), "the same node again");
        assert!(nodes.failed_over());
        assert!(
            !nodes.failed_over(),
            "three nodes, three attempts per round"
        );
        nodes.start_round().await;
        assert_eq!(nodes.current(), &order[0]);
        assert!(
            nodes.accepted(),
            "back on the preferred node: another node than the last"
        );
    }

    #[test]
    fn several_addresses_of_one_family_are_nodes_and_a_dual_stack_host_is_one() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let cluster = vec![
            ip("10.0.0.1"),
            ip("10.0.0.2"),
            ip("fd00::1"),
            ip("10.0.0.1"),
        ];
        assert_eq!(several_nodes(cluster), vec![ip("10.0.0.1"), ip("10.0.0.2")]);
        assert_eq!(
            several_nodes(vec![ip("fd00::1"), ip("fd00::2")]),
            vec![ip("fd00::1"), ip("fd00::2")]
        );
        assert!(several_nodes(vec![ip("127.0.0.1"), ip("::1")]).is_empty());
        assert!(several_nodes(vec![ip("10.0.0.1")]).is_empty());
    }

    #[tokio::test]
    async fn a_name_of_one_host_stays_a_name() {
        // localhost: 127.0.0.1 and, where IPv6 is configured, ::1 — one host.
        let url = BrokerUrl::parse("mqtt://localhost:1999").unwrap();
        let mut nodes = Nodes::new("gw-1", vec![url.clone()]);
        nodes.start_round().await;
        assert_eq!((nodes.order.len(), nodes.current()), (1, &url));
        // Under TLS the name stays: the certificate is checked against it.
        let tls = BrokerUrl::parse("mqtts://localhost:1999").unwrap();
        let mut nodes = Nodes::new("gw-1", vec![tls.clone()]);
        nodes.start_round().await;
        assert_eq!((nodes.order.len(), nodes.current()), (1, &tls));
    }
}
