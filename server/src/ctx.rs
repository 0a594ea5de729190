//! What every request path reads: the store, the commit position watch, the metrics, the
//! budget for slow clients and, in a cluster, the Raft loop. Persistent groups are a service
//! built on it (`persistent.rs`), held beside it, not in it, so that the request modules
//! depend on this one and never on each other in a circle.

use std::sync::Arc;

use quiver_engine::Engine;

/// What a request handler needs.
pub struct Ctx {
    /// The store.
    pub engine: Engine,
    /// Its name.
    pub store_id: String,
    /// What the server counts.
    pub metrics: crate::metrics::Metrics,
    /// The engine's commit position, updated on every commit (subscriptions wait on it).
    pub commits: tokio::sync::watch::Receiver<u64>,
    /// Memory held for clients that do not take their responses, with its ceiling.
    pub budget: Arc<crate::budget::Budget>,
    /// Cluster mode: the Raft loop, through which every write goes and which gives reads
    /// their linearizable read index.
    pub cluster: Option<crate::cluster::ClusterHandle>,
    /// How long a write or a read barrier may wait for Raft.
    pub request_timeout: std::time::Duration,
}

/// How a connection's reads are served in a cluster (its `SetOptions`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReadMode {
    /// After a read index: every write acknowledged before the read began is seen.
    #[default]
    Linearizable,
    /// From this node's committed state as it is: possibly behind the leader, served even
    /// without one.
    Follower,
}
