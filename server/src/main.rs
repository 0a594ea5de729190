//! # quiver
//!
//! The `quiver` binary. `quiver serve` runs a node: today a single node that opens (and
//! recovers) the store in its data directory and holds it until SIGTERM or SIGINT, when it
//! flushes and exits cleanly (it runs as PID 1 in a container). `quiver verify` checks every
//! record of a stopped store against its checksum.
//!
//! The network protocol, the client commands and the cluster arrive with their issues; this
//! crate composes `quiver-engine`, `quiver-raft` and `quiver-net` and is the only place that
//! knows all three.
//!
//! Configuration: flags > environment (`QUIVER_*`) > defaults.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use quiver_engine::{Engine, EngineConfig};

#[derive(Parser)]
#[command(name = "quiver", version, about = "Quiver, an event store")]
struct Cli {
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
        /// Name of this store (logged; keys the cluster later).
        #[arg(long, env = "QUIVER_STORE_ID", default_value = "quiver")]
        store_id: String,
        /// `single` or `cluster`.
        #[arg(long, env = "QUIVER_DB_TYPE", value_enum, default_value = "single")]
        db_type: DbType,
    },
    /// Check every record of a store that is not running against its checksum.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn open(store: &StoreArgs) -> anyhow::Result<Engine> {
    let config = EngineConfig::default().segment_bytes_max(store.segment_mib << 20);
    Engine::open(&store.data_dir, config)
        .with_context(|| format!("opening the store in {}", store.data_dir.display()))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().command {
        Command::Serve {
            store,
            store_id,
            db_type,
        } => {
            if db_type == DbType::Cluster {
                bail!("QUIVER_DB_TYPE=cluster is not available yet: run a single node");
            }
            serve(&store, &store_id)
        }
        Command::Verify { store } => {
            let engine = open(&store)?;
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

fn serve(store: &StoreArgs, store_id: &str) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    // Register before opening so a signal during recovery is not lost.
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    let started = std::time::Instant::now();
    let engine = open(store)?;
    let stats = engine.open_stats();
    tracing::info!(
        store_id,
        data_dir = %store.data_dir.display(),
        io = ?engine.io_mode(),
        events = engine.commit_position(),
        last_index = engine.last_index_term().0,
        summaries_loaded = stats.summaries_loaded,
        records_replayed = stats.records_replayed,
        torn_bytes_cut = stats.torn_bytes_cut,
        open_ms = started.elapsed().as_millis() as u64,
        "quiver is serving (single node)"
    );
    let signal = signals.forever().next();
    tracing::info!(?signal, "shutting down");
    engine.flush().context("flushing on shutdown")?;
    drop(engine);
    tracing::info!("stopped cleanly");
    Ok(())
}
