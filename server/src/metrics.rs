//! Prometheus metrics: requests and their latency by kind, errors by code, events and bytes
//! appended, open connections, and the engine's own totals (group commits, bytes written,
//! commit position, data size), read from the engine when scraped.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use quiver_engine::Engine;

/// A request kind, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// e.g. `Append`.
    pub kind: String,
}

/// An error code, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// e.g. `WrongExpectedVersion`.
    pub code: String,
}

/// A persistent subscription group, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabel {
    /// The group's name.
    pub group: String,
}

type LatencyFamily = Family<KindLabel, Histogram, fn() -> Histogram>;

/// Per-group counters of persistent subscriptions; clones share the same counters, so the
/// group tasks count into what `/metrics` shows.
#[derive(Clone, Debug, Default)]
pub struct GroupCounters {
    /// Events delivered to a consumer (first deliveries and redeliveries).
    pub deliveries: Family<GroupLabel, Counter>,
    /// Deliveries of an event delivered before (after a retry nack, a timeout, a consumer
    /// leaving, or a replay).
    pub redeliveries: Family<GroupLabel, Counter>,
    /// Events acknowledged.
    pub acks: Family<GroupLabel, Counter>,
    /// Events refused (retry, park or skip).
    pub nacks: Family<GroupLabel, Counter>,
}

impl GroupCounters {
    /// The label for `group`.
    pub fn label(group: &str) -> GroupLabel {
        GroupLabel {
            group: group.to_string(),
        }
    }
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s in 16 doublings.
    Histogram::new(exponential_buckets(50e-6, 2.0, 16))
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<KindLabel, Counter>,
    latency: LatencyFamily,
    errors: Family<CodeLabel, Counter>,
    /// Events acknowledged as appended.
    pub events_appended: Counter,
    /// Payload bytes (data + metadata) acknowledged as appended.
    pub bytes_appended: Counter,
    /// Connections open now.
    pub connections: Gauge,
    /// Subscriptions open now.
    pub subscriptions: Gauge,
    /// Events delivered to subscriptions.
    pub subscription_deliveries: Counter,
    syncs: Counter,
    bytes_written: Counter,
    commit_position: Gauge,
    data_bytes: Gauge,
    /// Persistent subscription counters, shared with the groups.
    pub groups: GroupCounters,
    /// What the budget for slow clients counts, shared with it.
    pub budget: crate::budget::BudgetMetrics,
    budget_max: Gauge,
    group_lag: Family<GroupLabel, Gauge>,
    group_in_flight: Family<GroupLabel, Gauge>,
    group_parked: Family<GroupLabel, Gauge>,
    group_consumers: Family<GroupLabel, Gauge>,
    seen_syncs: AtomicU64,
    seen_bytes: AtomicU64,
    cluster: Option<ClusterMetrics>,
}

/// A counter that follows a total kept elsewhere (the Raft loop's, the peer endpoint's).
#[derive(Default)]
struct Mirror {
    counter: Counter,
    seen: AtomicU64,
}

impl Mirror {
    fn set(&self, total: u64) {
        let prev = self.seen.swap(total, Ordering::Relaxed);
        self.counter.inc_by(total.saturating_sub(prev));
    }
}

/// A peer node, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// Its node id.
    pub peer: String,
}

/// Cluster mode: Raft's and the peer links' numbers, read from the node when scraped.
#[derive(Default)]
struct ClusterMetrics {
    term: Gauge,
    leader: Gauge,
    is_leader: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    last_index: Gauge,
    voters: Gauge,
    learners: Gauge,
    follower_lag: Family<PeerLabel, Gauge>,
    append_rtt: Family<PeerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    peer_connected: Family<PeerLabel, Gauge>,
    leader_changes: Mirror,
    elections_started: Mirror,
    from_non_members: Mirror,
    messages_sent: Mirror,
    bytes_sent: Mirror,
    messages_received: Mirror,
    bytes_received: Mirror,
    messages_dropped: Mirror,
    connections_refused: Mirror,
    connections_accepted: Mirror,
    discovery_packets: Family<ResultLabel, Counter>,
    discovery_seen: std::sync::Mutex<std::collections::HashMap<&'static str, u64>>,
    discovered: Gauge,
}

/// A discovery packet's fate, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `accepted`, `malformed`, `forged`, `other_store`, `stale`, `replayed`, `sent` or
    /// `send_error`.
    pub result: String,
}

impl ClusterMetrics {
    fn register(&self, r: &mut Registry) {
        let gauges: [(&str, &str, &Gauge); 8] = [
            ("raft_term", "The node's current Raft term", &self.term),
            (
                "raft_leader",
                "The leader's node id (0: none known)",
                &self.leader,
            ),
            ("raft_is_leader", "1 on the leader, else 0", &self.is_leader),
            (
                "raft_commit_index",
                "Highest log index known committed",
                &self.commit_index,
            ),
            (
                "raft_applied_index",
                "Highest log index applied here",
                &self.applied_index,
            ),
            (
                "raft_last_index",
                "Last index in this node's log",
                &self.last_index,
            ),
            (
                "raft_voters",
                "Voters of the membership in effect",
                &self.voters,
            ),
            (
                "raft_learners",
                "Learners of the membership in effect",
                &self.learners,
            ),
        ];
        for (name, help, g) in gauges {
            r.register(name, help, g.clone());
        }
        r.register(
            "raft_follower_lag",
            "On the leader: entries each member's log lags the commit index",
            self.follower_lag.clone(),
        );
        r.register(
            "raft_append_rtt_seconds",
            "On the leader: the last append round trip to each member",
            self.append_rtt.clone(),
        );
        r.register(
            "peer_connected",
            "1 while the outgoing link to a member is connected and authenticated",
            self.peer_connected.clone(),
        );
        let counters: [(&str, &str, &Mirror); 10] = [
            (
                "raft_leader_changes",
                "Times this node saw a new leader",
                &self.leader_changes,
            ),
            (
                "raft_elections_started",
                "Times this node became a (pre-)candidate",
                &self.elections_started,
            ),
            (
                "raft_messages_from_non_members",
                "Messages dropped because their sender was removed from the cluster",
                &self.from_non_members,
            ),
            (
                "peer_messages_sent",
                "Raft messages sent to peers",
                &self.messages_sent,
            ),
            (
                "peer_sent_bytes",
                "Frame bytes sent to peers",
                &self.bytes_sent,
            ),
            (
                "peer_messages_received",
                "Raft messages received from peers",
                &self.messages_received,
            ),
            (
                "peer_received_bytes",
                "Frame bytes received from peers",
                &self.bytes_received,
            ),
            (
                "peer_messages_dropped",
                "Messages to peers dropped (queue full, too large, connection lost)",
                &self.messages_dropped,
            ),
            (
                "peer_connections_refused",
                "Incoming peer connections refused (authentication or handshake failed)",
                &self.connections_refused,
            ),
            (
                "peer_connections_accepted",
                "Incoming peer connections authenticated",
                &self.connections_accepted,
            ),
        ];
        for (name, help, m) in counters {
            r.register(name, help, m.counter.clone());
        }
        r.register(
            "discovery_packets",
            "Discovery packets by fate: accepted, dropped (malformed, forged, other_store, \
             stale, replayed), sent, send_error",
            self.discovery_packets.clone(),
        );
        r.register(
            "discovery_nodes_not_members",
            "Nodes of this store that discovery hears and that are not members",
            self.discovered.clone(),
        );
    }

    fn update(&self, s: &crate::cluster::ClusterStatus, p: &quiver_net::peer_quic::PeerStats) {
        let g = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        g(&self.term, s.term);
        g(&self.leader, s.leader.unwrap_or(0));
        g(&self.is_leader, u64::from(s.role == "leader"));
        g(&self.commit_index, s.commit);
        g(&self.applied_index, s.applied);
        g(&self.last_index, s.last_index);
        g(&self.voters, s.voters.len() as u64);
        g(&self.learners, s.learners.len() as u64);
        let label = |id: u64| PeerLabel {
            peer: id.to_string(),
        };
        self.follower_lag.clear();
        self.append_rtt.clear();
        for f in &s.followers {
            g(&self.follower_lag.get_or_create(&label(f.id)), f.lag);
            if let Some(us) = f.append_rtt_us {
                let seconds = us as f64 / 1e6;
                self.append_rtt.get_or_create(&label(f.id)).set(seconds);
            }
        }
        self.peer_connected.clear();
        for l in &p.peers {
            g(
                &self.peer_connected.get_or_create(&label(l.id)),
                u64::from(l.connected),
            );
        }
        self.leader_changes.set(s.leader_changes);
        self.elections_started.set(s.elections_started);
        self.from_non_members.set(s.messages_from_non_members);
        self.messages_sent.set(p.messages_sent);
        self.bytes_sent.set(p.bytes_sent);
        self.messages_received.set(p.messages_received);
        self.bytes_received.set(p.bytes_received);
        self.messages_dropped.set(p.messages_dropped);
        self.connections_refused.set(p.connections_refused);
        self.connections_accepted.set(p.connections_accepted);
        self.discovered.set(s.discovered.len() as i64);
        if let Some(d) = &s.discovery {
            let mut seen = self
                .discovery_seen
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (result, total) in [
                ("accepted", d.accepted),
                ("malformed", d.malformed),
                ("forged", d.forged),
                ("other_store", d.other_store),
                ("stale", d.stale),
                ("replayed", d.replayed),
                ("sent", d.sent),
                ("send_error", d.send_errors),
            ] {
                let prev = seen.insert(result, total).unwrap_or(0);
                let label = ResultLabel {
                    result: result.to_string(),
                };
                self.discovery_packets
                    .get_or_create(&label)
                    .inc_by(total.saturating_sub(prev));
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(crate::budget::BYTES_MAX_DEFAULT)
    }
}

impl Metrics {
    /// Registers every metric under the `quiver_` prefix; `budget_bytes_max` is the ceiling
    /// on memory held for slow clients, shown as a metric.
    pub fn new(budget_bytes_max: usize) -> Metrics {
        Metrics::build(budget_bytes_max, false)
    }

    /// [`Metrics::new`] for a cluster node: Raft's and the peer links' numbers too
    /// (`quiver_raft_*`, `quiver_peer_*`), brought up to date by [`Metrics::update_cluster`].
    pub fn for_cluster(budget_bytes_max: usize) -> Metrics {
        Metrics::build(budget_bytes_max, true)
    }

    fn build(budget_bytes_max: usize, cluster: bool) -> Metrics {
        let mut registry = Registry::with_prefix("quiver");
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            errors: Family::default(),
            events_appended: Counter::default(),
            bytes_appended: Counter::default(),
            connections: Gauge::default(),
            subscriptions: Gauge::default(),
            subscription_deliveries: Counter::default(),
            syncs: Counter::default(),
            bytes_written: Counter::default(),
            commit_position: Gauge::default(),
            data_bytes: Gauge::default(),
            groups: GroupCounters::default(),
            budget: Default::default(),
            budget_max: Gauge::default(),
            group_lag: Family::default(),
            group_in_flight: Family::default(),
            group_parked: Family::default(),
            group_consumers: Family::default(),
            seen_syncs: AtomicU64::new(0),
            seen_bytes: AtomicU64::new(0),
            cluster: cluster.then(ClusterMetrics::default),
            registry: Registry::default(),
        };
        if let Some(c) = &m.cluster {
            c.register(&mut registry);
        }
        registry.register("requests", "Requests handled, by kind", m.requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its answer, by kind",
            m.latency.clone(),
        );
        registry.register("errors", "Error answers, by code", m.errors.clone());
        registry.register(
            "events_appended",
            "Events durably appended",
            m.events_appended.clone(),
        );
        registry.register(
            "appended_bytes",
            "Event data and metadata bytes durably appended",
            m.bytes_appended.clone(),
        );
        registry.register(
            "connections",
            "Client connections open",
            m.connections.clone(),
        );
        registry.register(
            "subscriptions",
            "Subscriptions open",
            m.subscriptions.clone(),
        );
        registry.register(
            "subscription_deliveries",
            "Events delivered to subscriptions",
            m.subscription_deliveries.clone(),
        );
        registry.register(
            "engine_syncs",
            "Group commits (one fdatasync each)",
            m.syncs.clone(),
        );
        registry.register(
            "engine_written_bytes",
            "Bytes written by group commits",
            m.bytes_written.clone(),
        );
        registry.register(
            "commit_position",
            "Events committed: the next event's position in $all",
            m.commit_position.clone(),
        );
        registry.register(
            "data_bytes",
            "Bytes of log in segment files",
            m.data_bytes.clone(),
        );
        m.budget_max.set(budget_bytes_max as i64);
        registry.register(
            "slow_client_budget_bytes",
            "Most bytes held for clients that have not taken their responses",
            m.budget_max.clone(),
        );
        registry.register(
            "slow_client_held_bytes",
            "Bytes held now for responses their clients have not taken",
            m.budget.held_bytes.clone(),
        );
        registry.register(
            "slow_client_holders",
            "Responses holding bytes now while their clients do not take them",
            m.budget.holders.clone(),
        );
        registry.register(
            "slow_readers_dropped",
            "Readers dropped, slowest first, to keep the held bytes within the budget",
            m.budget.dropped.clone(),
        );
        registry.register(
            "persistent_lag",
            "Positions between a $all group's checkpoint and the commit position",
            m.group_lag.clone(),
        );
        registry.register(
            "persistent_in_flight",
            "Events a group delivered and is waiting to hear about",
            m.group_in_flight.clone(),
        );
        registry.register(
            "persistent_parked",
            "Parked events per group",
            m.group_parked.clone(),
        );
        registry.register(
            "persistent_deliveries",
            "Events a group delivered to consumers",
            m.groups.deliveries.clone(),
        );
        registry.register(
            "persistent_redeliveries",
            "Deliveries of events delivered before",
            m.groups.redeliveries.clone(),
        );
        registry.register(
            "persistent_acks",
            "Events acknowledged",
            m.groups.acks.clone(),
        );
        registry.register("persistent_nacks", "Events refused", m.groups.nacks.clone());
        registry.register(
            "persistent_consumers",
            "Consumers connected per group",
            m.group_consumers.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Brings the cluster metrics up to date (before [`Metrics::render`]); nothing on a
    /// single node.
    pub fn update_cluster(
        &self,
        status: &crate::cluster::ClusterStatus,
        peers: &quiver_net::peer_quic::PeerStats,
    ) {
        if let Some(c) = &self.cluster {
            c.update(status, peers);
        }
    }

    /// Counts one answered request and its duration.
    pub fn request(&self, kind: &str, seconds: f64) {
        let label = KindLabel {
            kind: kind.to_string(),
        };
        self.requests.get_or_create(&label).inc();
        self.latency.get_or_create(&label).observe(seconds);
    }

    /// Counts one error answer.
    pub fn error(&self, code: &str) {
        self.errors
            .get_or_create(&CodeLabel {
                code: code.to_string(),
            })
            .inc();
    }

    /// The Prometheus text exposition, with the engine's totals brought up to date.
    pub fn render(&self, engine: &Engine, groups: &[quiver_client::PersistentInfo]) -> String {
        self.group_lag.clear();
        self.group_in_flight.clear();
        self.group_parked.clear();
        self.group_consumers.clear();
        for g in groups {
            let label = GroupLabel {
                group: g.definition.name.clone(),
            };
            if g.definition.stream == "$all" {
                let lag = engine.commit_position().saturating_sub(g.checkpoint);
                self.group_lag.get_or_create(&label).set(lag as i64);
            }
            self.group_in_flight
                .get_or_create(&label)
                .set(g.in_flight as i64);
            self.group_parked
                .get_or_create(&label)
                .set(g.parked.len() as i64);
            self.group_consumers
                .get_or_create(&label)
                .set(g.consumers as i64);
        }
        let c = engine.counters();
        let prev = self.seen_syncs.swap(c.syncs, Ordering::Relaxed);
        self.syncs.inc_by(c.syncs.saturating_sub(prev));
        let prev = self.seen_bytes.swap(c.bytes_written, Ordering::Relaxed);
        self.bytes_written
            .inc_by(c.bytes_written.saturating_sub(prev));
        self.commit_position.set(engine.commit_position() as i64);
        self.data_bytes.set(engine.data_bytes() as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
