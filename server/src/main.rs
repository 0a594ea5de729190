//! # quiver
//!
//! The `quiver` binary. `quiver serve` runs a single node: it opens (and recovers) the store
//! in its data directory, serves clients over QUIC (TLS always; a local CA is generated into
//! the data directory on first start), and on SIGTERM or SIGINT stops accepting, finishes
//! requests in flight, flushes and exits (it runs as PID 1 in a container). `quiver verify`
//! checks every record of a stopped store against its checksum. The other commands
//! (`append`, `read`, `read-all`, `streams`, `stream-meta`, `delete`, `snapshot`, `status`,
//! `health`, `scavenge`) are clients of a running node: see `quiver_server::cli`.
//! `quiver serve --db-type cluster` runs a Raft node instead (`quiver_server::cluster`), and
//! `quiver cluster status` shows a node's view of its cluster.
//!
//! Configuration: flags > environment (`QUIVER_*`) > defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
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
    /// A node of a Raft cluster (docs/CLUSTER.md).
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

/// Cluster mode only (`--db-type cluster`).
#[derive(clap::Args)]
struct ClusterArgs {
    /// This node's id (not 0). Kept in DATA_DIR/node-id on first start; a later start with
    /// another id is refused. Default: the file's, else a random one.
    #[arg(long, env = "QUIVER_NODE_ID")]
    node_id: Option<String>,
    /// The voters of a new cluster and their peer addresses: id=host:port,... (the same
    /// list on every node).
    #[arg(long, env = "QUIVER_INITIAL_MEMBERS", value_name = "ID=ADDR,...")]
    initial_members: Option<String>,
    /// Peer address (UDP) for the other nodes.
    #[arg(long, env = "QUIVER_PEER_LISTEN",
          default_value = quiver_server::cluster::config::PEER_LISTEN_DEFAULT)]
    peer_listen: String,
    /// The cluster secret (at least 16 bytes; 32 random bytes recommended). Prefer the
    /// environment or --cluster-secret-file: a flag is visible in the process list.
    #[arg(long, env = "QUIVER_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// A file holding the cluster secret (a trailing line break is ignored).
    #[arg(long, env = "QUIVER_CLUSTER_SECRET_FILE", value_name = "FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// Form a new cluster of N voters by discovery (no --initial-members): wait until N
    /// fresh nodes of this store are found, then every one of them forms the same cluster.
    /// Without it (and without --initial-members) a fresh node only joins a formed cluster.
    #[arg(long, env = "QUIVER_CLUSTER_SIZE", value_name = "N")]
    cluster_size: Option<String>,
    /// Discovery's UDP port: announcements are broadcast to it and heard on it.
    #[arg(long, env = "QUIVER_DISCOVERY_PORT", value_name = "PORT")]
    discovery_port: Option<String>,
    /// Also announce to these discovery addresses (host:port,...), for networks where
    /// broadcast does not reach; packets are authenticated the same way.
    #[arg(long, env = "QUIVER_SEEDS", value_name = "ADDR,...")]
    seeds: Option<String>,
    /// Announce to the seeds only, not by broadcast.
    #[arg(long, env = "QUIVER_NO_BROADCAST")]
    no_broadcast: bool,
    /// As leader, add fresh nodes that discovery finds as learners, promoted to voters once
    /// caught up, while the cluster has fewer than --cluster-size voters.
    #[arg(long, env = "QUIVER_AUTO_JOIN")]
    auto_join: bool,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Show a node's role, term, leader, commit and applied index, members and peer links
    /// (from its HTTP endpoint's /status).
    Status {
        /// The node's HTTP operations address.
        #[arg(long, env = "QUIVER_HTTP", default_value = HTTP_DEFAULT)]
        http: SocketAddr,
        /// Print the JSON object instead.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
    #[command(flatten)]
    Member(quiver_server::cli::MemberCommand),
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
        /// Serve clients (or peers) on an address beyond loopback with no token. Without
        /// it such a start is refused: anyone who can reach the port could read and write.
        #[arg(long, env = "QUIVER_INSECURE")]
        insecure: bool,
        /// Seconds a request may take to arrive.
        #[arg(long, env = "QUIVER_TIMEOUT", default_value_t = 30)]
        timeout: u64,
        /// Most MiB held for clients that do not read their responses; past it the slowest
        /// reader is told and dropped.
        #[arg(long, env = "QUIVER_SLOW_CLIENT_BUDGET_MIB", default_value_t = 256,
              value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
        slow_client_budget_mib: u64,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// A cluster: its status (from a node), membership and leadership.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
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
        Command::Cluster {
            command: ClusterCommand::Member(m),
        } => std::process::exit(quiver_server::cli::run(
            quiver_server::cli::Command::Member(m),
        )),
        node => node,
    };
    let command = match command {
        Command::Cluster {
            command:
                ClusterCommand::Status {
                    http,
                    json,
                    timeout,
                },
        } => {
            use quiver_server::cluster::status_cli;
            let status = status_cli::fetch(http, std::time::Duration::from_secs(timeout))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status_cli::render(&status));
            }
            return Ok(());
        }
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
            insecure,
            timeout,
            slow_client_budget_mib,
            cluster,
        } => {
            let peer = (db_type == DbType::Cluster).then_some(cluster.peer_listen.as_str());
            check_exposure(listen, peer, token.as_deref(), insecure)?;
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
            match db_type {
                DbType::Single => serve(config),
                DbType::Cluster => serve_cluster(config, cluster),
            }
        }
        Command::Cluster { .. } => unreachable!("cluster commands return above"),
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

fn serve_cluster(config: ServerConfig, args: ClusterArgs) -> anyhow::Result<()> {
    use quiver_server::cluster::{config as cc, formation, ClusterConfig};
    // Checked before anything is opened or bound: a node without a usable secret must not
    // start at all.
    let secret = cc::load_secret(
        args.cluster_secret.as_deref(),
        args.cluster_secret_file.as_deref(),
    )?;
    // Parsed here rather than by clap, so that a cluster variable in the environment of a
    // single node changes nothing there.
    let number = |name: &str, v: &Option<String>| -> anyhow::Result<Option<u64>> {
        v.as_deref()
            .map(|v| v.trim().parse::<u64>())
            .transpose()
            .with_context(|| format!("--{name} must be a number"))
    };
    let flag = number("node-id", &args.node_id)?;
    let size = number("cluster-size", &args.cluster_size)?
        .map(|n| u16::try_from(n).ok().filter(|n| (1..=64).contains(n)))
        .map(|n| n.context("--cluster-size must be 1 to 64"))
        .transpose()?
        .unwrap_or(0);
    let discovery_port = number("discovery-port", &args.discovery_port)?
        .map(|p| u16::try_from(p).context("--discovery-port must be a UDP port"))
        .transpose()?
        .unwrap_or(quiver_net::discovery::DISCOVERY_PORT_DEFAULT);
    let seeds = match args.seeds.as_deref() {
        Some(text) => parse_seeds(text, discovery_port)?,
        None => Vec::new(),
    };
    let peer_listen: SocketAddr = args
        .peer_listen
        .parse()
        .with_context(|| format!("--peer-listen {}", args.peer_listen))?;
    let (node_id, generated) = cc::node_id(&config.data_dir, flag)?;
    if generated {
        tracing::info!(node_id, "generated a node id, kept in the data directory");
    }
    // Who the members are: the flag, else what this node formed or joined before, else
    // what discovery finds.
    let known = match &args.initial_members {
        Some(text) => Some(text.clone()),
        None => formation::load(&config.data_dir)?,
    };
    let discover = args.initial_members.is_none() || !seeds.is_empty();
    if args.no_broadcast && discover && seeds.is_empty() {
        anyhow::bail!("--no-broadcast needs --seeds: discovery would reach no one");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let discovery = if discover {
            use quiver_net::discovery::{Announcement, Discovery, DiscoveryConfig, NodeState};
            let mut dc = DiscoveryConfig::new(discovery_port, secret.clone());
            dc.broadcast = !args.no_broadcast;
            dc.seeds = seeds.clone();
            let state = match &known {
                Some(text) => NodeState::Member {
                    voters: cc::parse_members(text)?.iter().map(|(id, _)| *id).collect(),
                },
                None => NodeState::Fresh {
                    proposal: Vec::new(),
                },
            };
            let me = Announcement {
                store_id: config.store_id.clone(),
                node_id,
                peer: peer_listen,
                client: Some(config.listen),
                cluster_size: size,
                state,
                relays: Vec::new(),
                timestamp_ms: 0,
                nonce: 0,
            };
            let d = Discovery::start(dc, me)
                .with_context(|| format!("binding the discovery port {discovery_port}"))?;
            tracing::info!(
                listen = %d.local_addr(),
                broadcast = !args.no_broadcast,
                seeds = ?seeds,
                "discovery is on"
            );
            Some(std::sync::Arc::new(d))
        } else {
            None
        };
        let text = match known {
            Some(text) => text,
            None => {
                let d = discovery
                    .as_ref()
                    .expect("discovery runs without a member list");
                let me = (node_id, peer_listen, Some(config.listen));
                tokio::select! {
                    m = formation::form(d, &config.data_dir, me, size) => m?.to_text(),
                    _ = shutdown_signal() => return Ok(()),
                }
            }
        };
        let members = cc::parse_members(&text)?;
        if !members.iter().any(|(id, _)| *id == node_id) {
            tracing::warn!(
                node_id,
                "this node is not among the initial members: it will not campaign, and waits \
                 to be added to the cluster"
            );
        }
        let mut cluster = ClusterConfig::new(node_id, members, peer_listen, secret);
        cluster.clients = cc::parse_member_clients(&text)?;
        // This node's own client address, unless the list says otherwise (an unspecified
        // IP or port 0 would tell clients nothing).
        if !config.listen.ip().is_unspecified() && config.listen.port() != 0 {
            cluster.clients.entry(node_id).or_insert(config.listen);
        }
        cluster.discovery = discovery;
        cluster.cluster_size = size;
        cluster.auto_join = args.auto_join;
        let server = Server::start_cluster(&config, &cluster)?;
        tracing::info!(
            node_id = cluster.node_id,
            peer_listen = %cluster.peer_listen,
            members = ?cluster.members,
            listen = %server.local_addr(),
            http = ?server.http_addr(),
            data_dir = %config.data_dir.display(),
            applied = server.engine().commit_index(),
            io = ?server.engine().io_mode(),
            "quiver is serving (cluster node)"
        );
        server.run(shutdown_signal()).await?;
        tracing::info!("stopped cleanly");
        Ok(())
    })
}

/// `host:port,...`; a seed without a port is on the discovery port.
fn parse_seeds(text: &str, port: u16) -> anyhow::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        // An IP or host name without a port is on the discovery port.
        let with_port = match item.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port).to_string(),
            Err(_) if !item.contains(':') => format!("{item}:{port}"),
            Err(_) => item.to_string(),
        };
        let addr = with_port
            .to_socket_addrs()
            .with_context(|| format!("--seeds: `{item}`"))?
            .next()
            .with_context(|| format!("--seeds: `{item}` resolves to no address"))?;
        out.push(addr);
    }
    Ok(out)
}

/// Refuses to serve beyond loopback with no token unless told `--insecure`: anyone who can
/// reach such a port could read and write every stream. (Peers authenticate with the
/// cluster secret; a peer address beyond loopback means the client port is meant to be
/// reached too.)
fn check_exposure(
    listen: SocketAddr,
    peer: Option<&str>,
    token: Option<&str>,
    insecure: bool,
) -> anyhow::Result<()> {
    if token.is_some_and(|t| !t.is_empty()) {
        return Ok(());
    }
    let beyond = |addr: &SocketAddr| !addr.ip().is_loopback();
    let peer: Option<SocketAddr> = peer.and_then(|p| p.parse().ok());
    let exposed: Vec<String> = [Some(listen), peer]
        .into_iter()
        .flatten()
        .filter(beyond)
        .map(|a| a.to_string())
        .collect();
    if exposed.is_empty() {
        return Ok(());
    }
    if insecure {
        tracing::warn!(
            addresses = ?exposed,
            "serving beyond loopback with no token (--insecure): anyone who reaches these \
             addresses can read and write"
        );
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve on {} with no token: anyone who can reach it could read and write \
         every stream. Set a token (--token or QUIVER_TOKEN; clients then give the same), \
         listen on loopback only (127.0.0.1), or say --insecure (QUIVER_INSECURE=true) if \
         the network is yours alone",
        exposed.join(" and ")
    )
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
}
