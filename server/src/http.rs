//! The HTTP operations endpoint: `/health/live` (the process answers), `/health/ready` (the
//! store accepts writes now), `/metrics` (Prometheus text) and `/status` (JSON).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::ctx::Ctx;
use crate::persistent::Groups;

/// The status document.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    /// Server version.
    pub version: &'static str,
    /// The store's name.
    pub store_id: String,
    /// `leader` on a single node.
    pub role: &'static str,
    /// Events committed (the next position in `$all`).
    pub commit_position: u64,
    /// Raft index of the last entry.
    pub last_index: u64,
    /// Streams that have events or are deleted.
    pub streams: u64,
    /// Bytes of log in segment files.
    pub data_bytes: u64,
    /// Whether appends are served without waiting.
    pub writable: bool,
    /// The node's view of its cluster (cluster mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterStatus>,
}

/// What the handlers read: the server's context and, in cluster mode, the Raft loop.
#[derive(Clone)]
struct HttpState {
    ctx: Arc<Ctx>,
    groups: Arc<Groups>,
    cluster: Option<crate::cluster::ClusterHandle>,
}

fn status(ctx: &Ctx, cluster: Option<&crate::cluster::ClusterHandle>) -> Status {
    let e = &ctx.engine;
    let cluster = cluster.map(|c| c.status());
    Status {
        version: env!("CARGO_PKG_VERSION"),
        store_id: ctx.store_id.clone(),
        role: match &cluster {
            None => "leader",
            Some(c) if c.role == "leader" => "leader",
            Some(c) if c.role == "failed" => "failed",
            Some(_) => "follower",
        },
        commit_position: e.commit_position(),
        last_index: e.last_index_term().0,
        streams: e.stream_count(),
        data_bytes: e.data_bytes(),
        // Cluster mode does not serve client appends yet.
        writable: e.is_writable() && cluster.is_none(),
        cluster,
    }
}

/// The router; separate from [`serve`] so tests can drive it without a socket.
pub fn router(ctx: Arc<Ctx>, groups: Arc<Groups>) -> Router {
    router_with(ctx, groups, None)
}

/// The router of a node, in cluster mode when `cluster` is given.
pub fn router_with(
    ctx: Arc<Ctx>,
    groups: Arc<Groups>,
    cluster: Option<crate::cluster::ClusterHandle>,
) -> Router {
    Router::new()
        .route("/health/live", get(|| async { "ok\n" }))
        .route(
            "/health/ready",
            get(|State(st): State<HttpState>| async move {
                let ready = match &st.cluster {
                    None => st.ctx.engine.is_writable(),
                    Some(c) => c.is_ready(),
                };
                if ready {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(st): State<HttpState>| async move {
                let ctx = &st.ctx;
                if let Some(c) = &st.cluster {
                    ctx.metrics.update_cluster(&c.status(), &c.peer_stats());
                }
                let groups = st.groups.list().await;
                let body = ctx.metrics.render(&ctx.engine, &groups);
                let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
                ([(header::CONTENT_TYPE, kind)], body).into_response()
            }),
        )
        .route(
            "/status",
            get(|State(st): State<HttpState>| async move {
                Json(status(&st.ctx, st.cluster.as_ref()))
            }),
        )
        .with_state(HttpState {
            ctx,
            groups,
            cluster,
        })
}

/// Binds the endpoint's socket (before the runtime serves it, so a taken port fails start).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves the endpoint on `listener` until `shutdown` completes.
pub async fn serve(
    listener: std::net::TcpListener,
    ctx: Arc<Ctx>,
    groups: Arc<Groups>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, ctx, groups, None, shutdown).await
}

/// [`serve`], in cluster mode when `cluster` is given.
pub async fn serve_with(
    listener: std::net::TcpListener,
    ctx: Arc<Ctx>,
    groups: Arc<Groups>,
    cluster: Option<crate::cluster::ClusterHandle>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    axum::serve(listener, router_with(ctx, groups, cluster))
        .with_graceful_shutdown(shutdown)
        .await
}
