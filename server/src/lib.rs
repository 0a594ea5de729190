//! # quiver-server
//!
//! The `quiver` node: composes `quiver-engine` (storage) and `quiver-net` (protocol and
//! QUIC), and — with their issues — `quiver-raft` and the HTTP operations endpoint. This is
//! the only crate that knows them all.
//!
//! ## Layout
//! - `lib.rs` — [`ServerConfig`], [`Server::start`] and [`Server::run`] with clean shutdown.
//! - `connection.rs` — accepting connections, `Hello`, one task per request stream.
//! - `cluster/` — cluster mode: the Raft loop over the engine, peers, cluster status.
//! - `ctx.rs` — what every request path reads (store, commit watch, metrics, budget, Raft).
//! - `cmd.rs` — each request applied: a write through Raft or the engine, a read of the
//!   engine, streamed; requests go down to `subscribe.rs` and `persistent.rs`, never back.
//! - `frames.rs` — response frames: one answer against the budget, events in `Events`.
//! - `budget.rs` — the ceiling on memory held for clients that do not read their responses.
//! - `config_file.rs` — the optional TOML configuration file (below flags and environment).
//! - `tls.rs` — certificates: given, or a generated local CA in the data directory.
//! - `http.rs` — the HTTP operations endpoint: health, readiness, metrics, status.
//! - `metrics.rs` — the Prometheus metrics.
//! - `payload.rs` — `by_event_payload` predicates on JSON data.
//! - `subscribe.rs` — transient subscriptions: catch-up and live from one loop over the log.
//! - `persistent.rs` — persistent subscriptions: one task per consumer group.
//! - `cli.rs` — the client commands of the `quiver` binary (`append`, `read`, `status`, ...).
//! - `main.rs` — the `quiver` command line.
#![warn(missing_docs, unreachable_pub)]

pub mod budget;
pub mod cli;
pub mod cluster;
pub mod cmd;
pub mod config_file;
pub mod connection;
pub mod ctx;
pub mod frames;
pub mod http;
pub mod metrics;
pub mod payload;
pub mod peer_map;
pub mod persistent;
pub mod raft_log;
pub mod subscribe;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use quiver_engine::{Engine, EngineConfig};
use quiver_net::frame::FRAME_PAYLOAD_BYTES_DEFAULT;

use crate::connection::{close, Shared};
use crate::ctx::Ctx;

/// Default client address.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:7600";
/// Default HTTP operations address.
pub const HTTP_DEFAULT: &str = "127.0.0.1:7680";
/// Most connections served at once; more wait in the accept queue.
pub const CONNECTIONS_MAX: usize = 1024;

/// How a node is set up.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The store's directory.
    pub data_dir: PathBuf,
    /// Segment size in MiB.
    pub segment_mib: u64,
    /// The store's name.
    pub store_id: String,
    /// Client QUIC address.
    pub listen: SocketAddr,
    /// HTTP operations address; `None`: no HTTP endpoint.
    pub http: Option<SocketAddr>,
    /// PEM certificate chain and key; both absent: a generated local CA.
    pub tls_cert: Option<PathBuf>,
    /// See `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// A token clients must present; none: no authentication (loopback default).
    pub token: Option<String>,
    /// Largest frame payload accepted.
    pub frame_bytes_max: usize,
    /// How long a request may take to arrive.
    pub request_timeout: Duration,
    /// Most bytes held for clients that have not taken their responses (see `budget.rs`).
    pub slow_client_bytes_max: usize,
}

impl ServerConfig {
    /// Defaults for a store in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            data_dir: data_dir.into(),
            segment_mib: 64,
            store_id: "quiver".into(),
            listen: LISTEN_DEFAULT.parse().expect("a valid default address"),
            http: Some(HTTP_DEFAULT.parse().expect("a valid default address")),
            tls_cert: None,
            tls_key: None,
            token: None,
            frame_bytes_max: FRAME_PAYLOAD_BYTES_DEFAULT,
            request_timeout: Duration::from_secs(30),
            slow_client_bytes_max: budget::BYTES_MAX_DEFAULT,
        }
    }
}

/// A started node: the store is open and the endpoint bound.
pub struct Server {
    endpoint: quinn::Endpoint,
    http: Option<std::net::TcpListener>,
    shared: Arc<Shared>,
    /// Cluster mode: the Raft loop.
    node: Option<cluster::ClusterNode>,
}

impl Server {
    /// Opens the store (recovering it) and binds the endpoint. Needs a tokio runtime.
    pub fn start(config: &ServerConfig) -> Result<Server> {
        let engine_config = EngineConfig::default().segment_bytes_max(config.segment_mib << 20);
        let engine = Engine::open(&config.data_dir, engine_config)
            .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
        Server::over(engine, None, config, tls::CaKey::Random)
    }

    /// A cluster node (`--db-type cluster`): opens the store as the Raft log, starts the
    /// Raft loop and its peer endpoint, and binds the client endpoint, whose writes go
    /// through Raft and whose reads are linearizable (docs/CLUSTER.md). Needs a tokio
    /// runtime.
    pub fn start_cluster(
        config: &ServerConfig,
        cluster: &cluster::ClusterConfig,
    ) -> Result<Server> {
        // `EngineLog::open` opens the engine with `commit_on_durable(false)` and the durable
        // floor its commit marks give.
        let engine_config = EngineConfig::default().segment_bytes_max(config.segment_mib << 20);
        let log =
            raft_log::EngineLog::open(&config.data_dir, engine_config).with_context(|| {
                format!(
                    "opening the store in {} as the Raft log",
                    config.data_dir.display()
                )
            })?;
        let engine = log.engine().clone();
        let node = cluster::ClusterNode::start(log, cluster)?;
        let ca = tls::CaKey::FromSecret(&cluster.secret);
        Server::over(engine, Some(node), config, ca)
    }

    fn over(
        engine: Engine,
        node: Option<cluster::ClusterNode>,
        config: &ServerConfig,
        ca: tls::CaKey<'_>,
    ) -> Result<Server> {
        let (chain, key) = tls::load_or_generate(
            &config.data_dir,
            config.tls_cert.as_deref(),
            config.tls_key.as_deref(),
            ca,
        )?;
        let endpoint = quiver_net::quic::server_endpoint(config.listen, chain, key)?;
        let http = match config.http {
            Some(addr) => Some(http::bind(addr).with_context(|| format!("binding HTTP {addr}"))?),
            None => None,
        };
        let (commit_tx, commits) = tokio::sync::watch::channel(engine.commit_position());
        engine.on_commit(move |position| {
            commit_tx.send_replace(position);
        });
        let metrics = match node {
            None => metrics::Metrics::new(config.slow_client_bytes_max),
            Some(_) => metrics::Metrics::for_cluster(config.slow_client_bytes_max),
        };
        let budget = budget::Budget::new(config.slow_client_bytes_max, metrics.budget.clone());
        let counters = metrics.groups.clone();
        // In a cluster, groups run on the leader and write their records through Raft.
        let persistent = match &node {
            None => persistent::Groups::load(engine.clone(), commits.clone(), counters),
            Some(n) => persistent::Groups::for_cluster(
                engine.clone(),
                commits.clone(),
                counters,
                n.handle(),
                config.request_timeout,
            ),
        };
        let ctx = Arc::new(Ctx {
            engine,
            store_id: config.store_id.clone(),
            metrics,
            commits,
            budget,
            cluster: node.as_ref().map(|n| n.handle()),
            request_timeout: config.request_timeout,
        });
        let shared = Arc::new(Shared {
            ctx,
            groups: Arc::new(persistent),
            frame_bytes_max: config.frame_bytes_max,
            // An empty token (`QUIVER_TOKEN=`) is no token: it would refuse every other one.
            token: config.token.clone().filter(|t| !t.is_empty()),
            request_timeout: config.request_timeout,
        });
        Ok(Server {
            endpoint,
            http,
            shared,
            node,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .expect("a bound endpoint has an address")
    }

    /// The bound HTTP operations address, if any.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The engine, for in-process callers and tests.
    pub fn engine(&self) -> &Engine {
        &self.shared.ctx.engine
    }

    /// Serves until `shutdown` completes, then stops accepting, lets requests in flight
    /// finish (bounded by the request timeout), closes connections and flushes the store.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let (stop_http, mut http_stopped) = tokio::sync::watch::channel(false);
        let http = self.http.map(|listener| {
            let (ctx, groups) = (self.shared.ctx.clone(), self.shared.groups.clone());
            let cluster = ctx.cluster.clone();
            let stop = async move {
                let _ = http_stopped.wait_for(|stop| *stop).await;
            };
            tokio::spawn(http::serve_with(listener, ctx, groups, cluster, stop))
        });
        let leadership = self.shared.ctx.cluster.clone().map(|c| {
            let (groups, timeout) = (self.shared.groups.clone(), self.shared.request_timeout);
            tokio::spawn(persistent::follow_leadership(c, groups, timeout))
        });
        let limit = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
        let mut tasks = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                p = limit.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            };
            let incoming = tokio::select! {
                _ = &mut shutdown => break,
                i = self.endpoint.accept() => i,
            };
            let Some(incoming) = incoming else { break };
            let shared = self.shared.clone();
            tasks.spawn(async move {
                let _permit = permit;
                match incoming.await {
                    Ok(conn) => connection::serve(conn, shared).await,
                    Err(e) => tracing::debug!(error = %e, "handshake failed"),
                }
            });
        }
        tracing::info!("shutting down: no new connections");
        if let Some(task) = leadership {
            task.abort();
        }
        self.endpoint.set_server_config(None);
        // Groups record their state and end their consumers' streams.
        self.shared.groups.shutdown().await;
        let drain = async { while tasks.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(
            self.shared.request_timeout.min(Duration::from_secs(2)),
            drain,
        )
        .await;
        self.endpoint
            .close(close::SHUTDOWN.into(), b"server shutting down");
        self.endpoint.wait_idle().await;
        let _ = stop_http.send(true);
        if let Some(h) = http {
            h.await
                .expect("the HTTP task does not panic")
                .context("HTTP endpoint")?;
        }
        if let Some(node) = self.node {
            tracing::info!("shutting down: stopping Raft");
            node.shutdown().await;
        }
        let engine = self.shared.ctx.engine.clone();
        tokio::task::spawn_blocking(move || engine.flush())
            .await
            .expect("flush does not panic")
            .context("flushing on shutdown")?;
        Ok(())
    }
}
