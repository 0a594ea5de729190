//! # quiver
//!
//! The `quiver` binary. `quiver serve` runs a single node: it opens (and recovers) the store
//! in its data directory, serves clients over QUIC (TLS always; a local CA is generated into
//! the data directory on first start), and on SIGTERM or SIGINT stops accepting, finishes
//! requests in flight, flushes and exits (it runs as PID 1 in a container). `quiver verify`
//! checks every record of a stopped store against its checksum. The other commands
//! (`append`, `read`, `read-all`, `streams`, `stream-meta`, `delete`, `snapshot`, `status`,
//! `health`, `scavenge`) are clients of a running node: see `quiver_server::cli`.
//!
//! Configuration: flags > environment (`QUIVER_*`) > defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use quiver_engine::{Engine, EngineConfig};
use quiver_server::{Server, ServerConfig, HTTP_DEFAULT, LISTEN_DEFAULT};

#[derive(Parser)]
#[command(name = "quiver", version, about = "Quiver, an event store")]
struct Cli {
    /// TOML configuration file (keys: data_dir, listen, http, token, ...); flags and
    /// QUIVER_* environment variables override it.
    #[arg(long, global = true, env = "QUIVER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DbType {
    /// One node; a write is committed when it is durable here.
    Single,
    /// A Raft cluster (not available yet).
    Cluster,
}

#[derive(clap::Args)]
struct StoreArgs {
    /// Directory holding the store's segment files.
    #[arg(long, env = "QUIVER_DATA_DIR", default_value = "quiver-data")]
    data_dir: PathBuf,
    /// Segment files roll over at this many MiB.
    #[arg(long, env = "QUIVER_SEGMENT_MIB", default_value_t = 64)]
    segment_mib: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Serve {
        #[command(flatten)]
        store: StoreArgs,
        /// Name of this store.
        #[arg(long, env = "QUIVER_STORE_ID", default_value = "quiver")]
        store_id: String,
        /// `single` or `cluster`.
        #[arg(long, env = "QUIVER_DB_TYPE", value_enum, default_value = "single")]
        db_type: DbType,
        /// Client QUIC address (UDP).
        #[arg(long, env = "QUIVER_LISTEN", default_value = LISTEN_DEFAULT)]
        listen: SocketAddr,
        /// HTTP operations address (health, readiness, metrics, status); `off` for none.
        #[arg(long, env = "QUIVER_HTTP", default_value = HTTP_DEFAULT)]
        http: String,
        /// PEM certificate chain; with --tls-key. Default: a local CA generated in the data
        /// directory (DATA_DIR/tls/ca.pem is what clients trust).
        #[arg(long, env = "QUIVER_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key for --tls-cert.
        #[arg(long, env = "QUIVER_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Require clients to present this token. Default: no authentication, which is why
        /// the default address is loopback.
        #[arg(long, env = "QUIVER_TOKEN")]
        token: Option<String>,
        /// Seconds a request may take to arrive.
        #[arg(long, env = "QUIVER_TIMEOUT", default_value_t = 30)]
        timeout: u64,
        /// Most MiB held for clients that do not read their responses; past it the slowest
        /// reader is told and dropped.
        #[arg(long, env = "QUIVER_SLOW_CLIENT_BUDGET_MIB", default_value_t = 256,
              value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
        slow_client_budget_mib: u64,
    },
    /// Check every record of a store that is not running against its checksum.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
    },
    #[command(flatten)]
    Client(quiver_server::cli::Command),
}

fn main() -> anyhow::Result<()> {
    // The file goes in below flags and environment; it must be read before clap parses.
    let args: Vec<String> = std::env::args().collect();
    if let Some(path) = quiver_server::config_file::path_from(&args) {
        quiver_server::config_file::apply(std::path::Path::new(&path))?;
    }
    let command = match Cli::parse().command {
        // The client commands print their own errors and choose their exit codes.
        Command::Client(command) => std::process::exit(quiver_server::cli::run(command)),
        node => node,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match command {
        Command::Client(_) => unreachable!("client commands return above"),
        Command::Serve {
            store,
            store_id,
            db_type,
            listen,
            http,
            tls_cert,
            tls_key,
            token,
            timeout,
            slow_client_budget_mib,
        } => {
            if db_type == DbType::Cluster {
                bail!("QUIVER_DB_TYPE=cluster is not available yet: run a single node");
            }
            let config = ServerConfig {
                segment_mib: store.segment_mib,
                store_id,
                listen,
                http: match http.as_str() {
                    "off" => None,
                    addr => Some(addr.parse().with_context(|| format!("--http {addr}"))?),
                },
                tls_cert,
                tls_key,
                token,
                request_timeout: std::time::Duration::from_secs(timeout),
                slow_client_bytes_max: (slow_client_budget_mib as usize) << 20,
                ..ServerConfig::new(store.data_dir)
            };
            serve(config)
        }
        Command::Verify { store } => {
            let config = EngineConfig::default().segment_bytes_max(store.segment_mib << 20);
            let engine = Engine::open(&store.data_dir, config)
                .with_context(|| format!("opening the store in {}", store.data_dir.display()))?;
            let v = engine.verify().context("verification failed")?;
            println!(
                "ok: {} segments, {} records, {} events, commit index {}",
                v.segments,
                v.records,
                engine.commit_position(),
                engine.commit_index()
            );
            Ok(())
        }
    }
}

fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let started = std::time::Instant::now();
        let server = Server::start(&config)?;
        let engine = server.engine();
        let stats = engine.open_stats();
        tracing::info!(
            store_id = config.store_id,
            data_dir = %config.data_dir.display(),
            listen = %server.local_addr(),
            http = ?server.http_addr(),
            io = ?engine.io_mode(),
            events = engine.commit_position(),
            summaries_loaded = stats.summaries_loaded,
            records_replayed = stats.records_replayed,
            torn_bytes_cut = stats.torn_bytes_cut,
            open_ms = started.elapsed().as_millis() as u64,
            "quiver is serving (single node)"
        );
        server.run(shutdown_signal()).await?;
        tracing::info!("stopped cleanly");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
}
