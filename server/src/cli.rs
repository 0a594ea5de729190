//! The client commands of the `quiver` binary: `append`, `read`, `read-all`, `streams`,
//! `stream-meta`, `delete`, `snapshot`, `subscription`, `status`, `health` and `scavenge`.
//!
//! Each invocation connects with `quiver-client` on a small current-thread tokio runtime,
//! runs one command and prints human-readable text, or with `--output json` one JSON object
//! per line. Errors go to stderr, with an exit code scripts can branch on: see [`exit`].
//!
//! Payloads in JSON output: an event's `data` (and `metadata`) is embedded as JSON when the
//! event is a JSON event and the bytes parse as JSON; otherwise it is a string holding the
//! bytes in standard base64 (with padding; empty bytes are `""`). JSON given on the command
//! line or stdin is checked and stored exactly as written.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use quiver_client::{
    Client, ClientConfig, Error, EventData, ExpectedVersion, PayloadOp, PersistentDefinition,
    PersistentInfo, Point, ReadAllOptions, ReadStreamOptions, RecordedEvent, Strategy, StreamInfo,
    StreamMetadata, StreamVersion, SubscribeAllOptions, SubscribeStreamOptions, Subscription,
    SubscriptionMessage, SERVER_DEFAULT,
};
use serde_json::value::RawValue;
use serde_json::Value;
use uuid::Uuid;

/// The process exit codes of the client commands.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Any failure without a code of its own (connection, I/O, bad input on stdin, ...).
    pub const FAILURE: i32 = 1;
    /// A usage error: clap's, for flags and arguments (including JSON that does not parse).
    pub const USAGE: i32 = 2;
    /// The stream's version is not the one expected (`--expected`), or a subscription group
    /// of that name already exists.
    pub const CONFLICT: i32 = 3;
    /// The stream (snapshot, subscription group) does not exist, or the stream was deleted.
    pub const NOT_FOUND: i32 = 4;
    /// The server requires a token, or refused the one given.
    pub const UNAUTHENTICATED: i32 = 5;
}

/// Events read per `streams` request when paging through every stream.
const STREAMS_PAGE: u64 = 1000;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Text for people.
    Human,
    /// One JSON object per line.
    Json,
}

/// Flags every client command takes.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection")]
pub struct ConnArgs {
    /// Server address, HOST:PORT (QUIC over UDP); for a cluster, several separated by
    /// commas: a request refused by a node that is not the leader moves to the next.
    #[arg(long, env = "QUIVER_SERVER", default_value = SERVER_DEFAULT, value_name = "ADDR",
          value_parser = parse_server)]
    server: String,
    /// PEM file of the certificate authority to trust. Default: DATA_DIR/tls/ca.pem, where
    /// DATA_DIR is $QUIVER_DATA_DIR if set, else quiver-data (the CA `quiver serve`
    /// generates).
    #[arg(long, env = "QUIVER_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// In a cluster, let the node answer reads from what it has committed without asking the
    /// leader (cheaper, works without a leader; may miss writes acknowledged just before).
    #[arg(long, env = "QUIVER_FOLLOWER_READS")]
    follower_reads: bool,
    /// Token to present, when the server requires one.
    #[arg(long, env = "QUIVER_TOKEN", value_name = "T", hide_env_values = true)]
    token: Option<String>,
    /// `human` text, or `json`: one JSON object per line.
    #[arg(long, value_enum, default_value = "human", value_name = "human|json")]
    output: Output,
    /// Seconds to wait for the connection and for each answer.
    #[arg(long, env = "QUIVER_TIMEOUT", default_value_t = 30, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

/// The client commands (flattened into the `quiver` command line).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Append events to a stream, all in one atomic write.
    ///
    /// One event: --type and --data (JSON, checked, stored as a JSON event as written).
    /// Several: --stdin, one JSON object per line, {"type": ..., "data": <any JSON>,
    /// "id"?: uuid, "metadata"?: <any JSON>}; all lines are appended as ONE batch.
    ///
    /// Prints the versions and positions written; JSON: {"stream", "first_version",
    /// "last_version", "first_position", "last_position"}.
    Append(AppendArgs),
    /// Read a stream's events.
    ///
    /// Human output: one line per event, STREAM@VERSION, position, time, type, data.
    /// JSON output: one object per event, {"stream", "version", "position", "id", "type",
    /// "data", "metadata", "created_us"}; data and metadata are embedded JSON when the event
    /// is a JSON event and they parse, else a base64 string (empty: "").
    Read(ReadArgs),
    /// Read every stream's events in commit order ($all), optionally filtered.
    ///
    /// Output as for `read`: data and metadata are embedded JSON when the event is a JSON
    /// event and they parse, else a base64 string (empty: "").
    ReadAll(ReadAllArgs),
    /// List streams by name.
    ///
    /// JSON output: one object per stream, as `stream-meta` shows it.
    Streams(StreamsArgs),
    /// Show a stream's state and metadata, or replace its metadata with --set.
    ///
    /// JSON output: {"stream", "current_version", "soft_deleted", "hard_deleted",
    /// "max_count", "max_age_us", "truncate_before", "custom"}; absent values are null,
    /// custom is embedded JSON when it parses, else a base64 string.
    StreamMeta(StreamMetaArgs),
    /// Delete a stream: soft (hidden, may be recreated), or --hard (for ever).
    Delete(DeleteArgs),
    /// Store, fetch, list and delete snapshots.
    Snapshot(SnapshotArgs),
    /// Manage persistent subscriptions (server-side consumer groups).
    Subscription(SubscriptionArgs),
    /// Show the server's store id, commit position and stream count.
    Status(ConnOnly),
    /// Exit 0 and print "ok" if a Hello + Status round trip succeeds within --timeout.
    Health(ConnOnly),
    /// Reclaim the space of deleted and truncated events.
    Scavenge(ConnOnly),
    /// Follow $all (or one stream with --stream): print what is committed from --from on,
    /// then each new event as it commits, until interrupted or --count events were printed.
    ///
    /// Output as for `read`. Catch-up and live are one read of the log by position: no gap
    /// and no duplicate at the switch. Resume with --from LAST+1 (a position for $all, a
    /// version for a stream).
    Subscribe(SubscribeArgs),
    /// `quiver cluster add|remove|transfer-leader` (under `cluster` in the command line).
    #[command(skip)]
    Member(MemberCommand),
}

/// Changes to a cluster's membership and leadership, sent to any node (a follower passes
/// the client on to the leader when given every node's address).
#[derive(Debug, Subcommand)]
#[allow(missing_docs)]
pub enum MemberCommand {
    /// Add node ID, whose peer endpoint is PEER_ADDR (IP:PORT), as a learner; the leader
    /// promotes it to voter once it has caught up. Start the node first, with
    /// --initial-members listing the current members (it waits to be added).
    Add {
        /// The new node's id (never used before in this cluster).
        id: u64,
        /// Its peer address.
        peer: SocketAddr,
        /// Its client address, told to clients looking for the leader.
        #[arg(long, value_name = "ADDR")]
        client: Option<SocketAddr>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Remove node ID from the cluster (its id is retired for good).
    Remove {
        /// The node's id.
        id: u64,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Hand leadership to voter ID, or to the most caught-up voter.
    TransferLeader {
        /// The voter to lead.
        id: Option<u64>,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

/// `quiver subscribe`.
#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// Follow this stream instead of $all.
    #[arg(long, value_name = "STREAM")]
    stream: Option<String>,
    /// Start at this position ($all) or version (--stream). Default: the beginning.
    #[arg(long, value_name = "N")]
    from: Option<u64>,
    /// Only events committed after subscribing.
    #[arg(long, conflicts_with = "from")]
    from_end: bool,
    /// $all only: events whose type starts with P.
    #[arg(long, value_name = "P", conflicts_with = "stream")]
    type_prefix: Option<String>,
    /// $all only: events of streams whose name starts with P.
    #[arg(long, value_name = "P", conflicts_with = "stream")]
    stream_prefix: Option<String>,
    /// $all only: events whose type matches this regular expression ('^Order(Placed|Paid)$').
    #[arg(long, value_name = "RE", conflicts_with_all = ["stream", "type_prefix"])]
    type_regex: Option<String>,
    /// $all only: events of streams whose name matches this regular expression.
    #[arg(long, value_name = "RE", conflicts_with_all = ["stream", "stream_prefix"])]
    stream_regex: Option<String>,
    /// Exit after printing N events.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Only JSON events whose data passes this test, e.g. 'total > 100' or
    /// 'customer.tier == "gold"' (operators == != < <= > >=; the value is JSON, or else taken
    /// as a string). Repeat to require several.
    #[arg(long = "where", value_name = "PATH OP VALUE", value_parser = parse_where)]
    where_: Vec<(String, PayloadOp, serde_json::Value)>,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Parses `--where PATH OP VALUE`.
fn parse_where(s: &str) -> Result<(String, PayloadOp, serde_json::Value), String> {
    const OPS: [(&str, PayloadOp); 6] = [
        ("==", PayloadOp::Eq),
        ("!=", PayloadOp::Ne),
        ("<=", PayloadOp::Le),
        (">=", PayloadOp::Ge),
        ("<", PayloadOp::Lt),
        (">", PayloadOp::Gt),
    ];
    let (at, text, op) = OPS
        .iter()
        .filter_map(|(text, op)| s.find(text).map(|at| (at, *text, *op)))
        .min_by_key(|(at, text, _)| (*at, std::cmp::Reverse(text.len())))
        .ok_or_else(|| format!("no operator in {s:?} (use == != < <= > >=)"))?;
    let path = s[..at].trim();
    let raw = s[at + text.len()..].trim();
    if path.is_empty() || raw.is_empty() {
        return Err(format!("expected PATH OP VALUE, got {s:?}"));
    }
    let value = serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::from(raw));
    Ok((path.to_string(), op, value))
}

/// `quiver append`.
#[derive(Debug, Args)]
pub struct AppendArgs {
    /// The stream to append to.
    stream: String,
    /// The event's type.
    #[arg(
        long = "type",
        value_name = "TYPE",
        required_unless_present = "stdin",
        conflicts_with = "stdin"
    )]
    event_type: Option<String>,
    /// The event's data: JSON, stored as a JSON event as written.
    #[arg(long, value_name = "JSON", value_parser = parse_json, required_unless_present = "stdin",
          conflicts_with = "stdin")]
    data: Option<String>,
    /// The event's id (a retry with the same id is idempotent). Default: a fresh one.
    #[arg(long, value_name = "UUID", conflicts_with = "stdin")]
    id: Option<Uuid>,
    /// The event's metadata: JSON.
    #[arg(long, value_name = "JSON", value_parser = parse_json, conflicts_with = "stdin")]
    metadata: Option<String>,
    /// Read the events from stdin, one JSON object per line (blank lines are skipped).
    #[arg(long)]
    stdin: bool,
    /// What the stream's version must be: any, no-stream, exists, or the version N of its
    /// last event.
    #[arg(long, value_name = "any|no-stream|exists|N", default_value = "any",
          value_parser = parse_expected)]
    expected: ExpectedVersion,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `quiver read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The stream to read.
    stream: String,
    /// Start at this version. Default: the first (or the last, with --backward).
    #[arg(long, value_name = "N")]
    from: Option<u64>,
    /// Newest first.
    #[arg(long)]
    backward: bool,
    /// Read at most N events.
    #[arg(long, value_name = "N")]
    max: Option<u64>,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `quiver read-all`.
#[derive(Debug, Args)]
pub struct ReadAllArgs {
    /// Start at this position. Default: the first (or the last, with --backward).
    #[arg(long, value_name = "POS")]
    from: Option<u64>,
    /// Newest first.
    #[arg(long)]
    backward: bool,
    /// Read at most N events.
    #[arg(long, value_name = "N")]
    max: Option<u64>,
    /// Only events whose type starts with P.
    #[arg(long, value_name = "P")]
    type_prefix: Option<String>,
    /// Only events of streams whose name starts with P.
    #[arg(long, value_name = "P")]
    stream_prefix: Option<String>,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `quiver streams`.
#[derive(Debug, Args)]
pub struct StreamsArgs {
    /// Only streams whose name starts with P.
    #[arg(long, value_name = "P", default_value = "")]
    prefix: String,
    /// Only streams whose name sorts after NAME (to page).
    #[arg(long, value_name = "NAME")]
    after: Option<String>,
    /// At most N streams. Default: all.
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `quiver stream-meta`.
#[derive(Debug, Args)]
pub struct StreamMetaArgs {
    /// The stream.
    stream: String,
    /// Replace the stream's metadata with the options given: any option not given is
    /// cleared. Then show it.
    #[arg(long)]
    set: bool,
    /// Keep only the newest N events.
    #[arg(long, value_name = "N", requires = "set")]
    max_count: Option<u64>,
    /// Hide events older than N seconds.
    #[arg(long, value_name = "N", requires = "set",
          value_parser = clap::value_parser!(u64).range(..=u64::MAX / 1_000_000))]
    max_age_secs: Option<u64>,
    /// Hide the versions below N.
    #[arg(long, value_name = "N", requires = "set")]
    truncate_before: Option<u64>,
    /// Custom metadata: JSON.
    #[arg(long, value_name = "JSON", requires = "set", value_parser = parse_json)]
    custom: Option<String>,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `quiver delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The stream to delete.
    stream: String,
    /// Delete for ever: reads and appends fail from now on.
    #[arg(long)]
    hard: bool,
    /// What the stream's version must be: any, no-stream, exists, or N.
    #[arg(long, value_name = "any|no-stream|exists|N", default_value = "any",
          value_parser = parse_expected)]
    expected: ExpectedVersion,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `quiver snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    command: SnapshotCommand,
}

/// `quiver snapshot put|get|list|delete`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Store a snapshot of STREAM at VERSION (replacing one stored there).
    ///
    /// JSON output: {"stream", "version", "bytes"}.
    Put(SnapshotPutArgs),
    /// Fetch the snapshot of STREAM at VERSION (with --latest: the newest at or below it).
    ///
    /// Human output: the snapshot's bytes exactly as stored, on stdout (with --latest, its
    /// version goes to stderr). JSON output: {"stream", "version", "data"} with the data
    /// embedded when it parses as JSON, else {"stream", "version", "data_base64"}.
    Get(SnapshotGetArgs),
    /// List the versions at which STREAM has snapshots.
    ///
    /// JSON output: one {"stream", "version"} per snapshot.
    List(SnapshotListArgs),
    /// Delete the snapshot of STREAM at VERSION.
    Delete(SnapshotDeleteArgs),
}

/// `quiver snapshot put`.
#[derive(Debug, Args)]
pub struct SnapshotPutArgs {
    /// The stream.
    stream: String,
    /// The stream version the snapshot reflects.
    version: u64,
    /// Read the snapshot's bytes from FILE.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "data",
        conflicts_with = "data"
    )]
    data_file: Option<PathBuf>,
    /// The snapshot's bytes: this string.
    #[arg(long, value_name = "STRING")]
    data: Option<String>,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `quiver snapshot get`.
#[derive(Debug, Args)]
pub struct SnapshotGetArgs {
    /// The stream.
    stream: String,
    /// The version.
    version: u64,
    /// The newest snapshot at or below VERSION.
    #[arg(long)]
    latest: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `quiver snapshot list`.
#[derive(Debug, Args)]
pub struct SnapshotListArgs {
    /// The stream.
    stream: String,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `quiver snapshot delete`.
#[derive(Debug, Args)]
pub struct SnapshotDeleteArgs {
    /// The stream.
    stream: String,
    /// The version.
    version: u64,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `quiver subscription`.
#[derive(Debug, Args)]
pub struct SubscriptionArgs {
    #[command(subcommand)]
    command: SubscriptionCommand,
}

/// `quiver subscription create|update|delete|list|info|replay-parked`.
#[derive(Debug, Subcommand)]
pub enum SubscriptionCommand {
    /// Create a group: on $all (optionally filtered) or, with --stream, on one stream.
    ///
    /// JSON output: the group's state, as `info` prints it.
    Create(GroupDefArgs),
    /// Change a group's settings (retries, timeout, strategy, max in flight). Its stream,
    /// filters and start cannot change; settings not given stay as they are.
    Update(GroupDefArgs),
    /// Delete a group: its consumers are disconnected, its checkpoint is dropped.
    Delete(GroupArgs),
    /// List the groups.
    ///
    /// JSON output: one object per group, as `info` prints it.
    List(ConnOnly),
    /// Show a group's definition, checkpoint, events in flight and parked events.
    ///
    /// JSON output: {"definition": {...}, "checkpoint", "next", "in_flight", "waiting",
    /// "parked": [positions], "consumers"}.
    Info(GroupArgs),
    /// Deliver a group's parked events again.
    ReplayParked(GroupArgs),
}

/// A group's definition on the command line.
#[derive(Debug, Args)]
pub struct GroupDefArgs {
    /// The group's name.
    group: String,
    /// Follow this stream instead of $all.
    #[arg(long, value_name = "STREAM")]
    stream: Option<String>,
    /// $all only: event types starting with this.
    #[arg(long, value_name = "PREFIX", conflicts_with = "stream")]
    type_prefix: Option<String>,
    /// $all only: stream names starting with this.
    #[arg(long, value_name = "PREFIX", conflicts_with = "stream")]
    stream_prefix: Option<String>,
    /// First position ($all) or version (--stream) to deliver. Default: 0.
    #[arg(long, value_name = "N")]
    start: Option<u64>,
    /// Retries after which an event is parked. Default: 10.
    #[arg(long, value_name = "N")]
    max_retries: Option<u32>,
    /// Milliseconds before an unacknowledged event is delivered again. Default: 30000.
    #[arg(long, value_name = "MS")]
    message_timeout_ms: Option<u64>,
    /// Share events round robin (the default), or pin each stream to one consumer.
    #[arg(long, value_name = "round-robin|pinned")]
    strategy: Option<StrategyArg>,
    /// Most events in flight for the group. Default: 100.
    #[arg(long, value_name = "N")]
    max_in_flight: Option<u32>,
    #[command(flatten)]
    conn: ConnArgs,
}

/// How a group shares events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    /// Each event to the next consumer in turn.
    RoundRobin,
    /// Each stream's events to one consumer.
    Pinned,
}

impl GroupDefArgs {
    /// A new group's definition.
    fn definition(&self) -> PersistentDefinition {
        let d = match &self.stream {
            Some(s) => PersistentDefinition::stream(&self.group, s),
            None => PersistentDefinition::all(&self.group),
        };
        self.apply(d)
    }

    /// `d` with the settings given on the command line.
    fn apply(&self, mut d: PersistentDefinition) -> PersistentDefinition {
        if let Some(s) = &self.stream {
            d.stream = s.clone();
        }
        if let Some(p) = &self.type_prefix {
            d = d.type_prefix(p);
        }
        if let Some(p) = &self.stream_prefix {
            d = d.stream_prefix(p);
        }
        if let Some(n) = self.start {
            d = d.start(n);
        }
        if let Some(n) = self.max_retries {
            d = d.max_retries(n);
        }
        if let Some(ms) = self.message_timeout_ms {
            d = d.message_timeout_ms(ms);
        }
        if let Some(n) = self.max_in_flight {
            d = d.max_in_flight(n);
        }
        match self.strategy {
            Some(StrategyArg::RoundRobin) => d.strategy(Strategy::RoundRobin),
            Some(StrategyArg::Pinned) => d.strategy(Strategy::Pinned),
            None => d,
        }
    }
}

/// A command on one group.
#[derive(Debug, Args)]
pub struct GroupArgs {
    /// The group's name.
    group: String,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Commands with no flags but the connection's.
#[derive(Debug, Args)]
pub struct ConnOnly {
    #[command(flatten)]
    conn: ConnArgs,
}

impl Command {
    fn conn(&self) -> &ConnArgs {
        match self {
            Command::Append(a) => &a.conn,
            Command::Read(a) => &a.conn,
            Command::ReadAll(a) => &a.conn,
            Command::Streams(a) => &a.conn,
            Command::StreamMeta(a) => &a.conn,
            Command::Delete(a) => &a.conn,
            Command::Snapshot(s) => match &s.command {
                SnapshotCommand::Put(a) => &a.conn,
                SnapshotCommand::Get(a) => &a.conn,
                SnapshotCommand::List(a) => &a.conn,
                SnapshotCommand::Delete(a) => &a.conn,
            },
            Command::Subscription(s) => match &s.command {
                SubscriptionCommand::Create(a) | SubscriptionCommand::Update(a) => &a.conn,
                SubscriptionCommand::Delete(a)
                | SubscriptionCommand::Info(a)
                | SubscriptionCommand::ReplayParked(a) => &a.conn,
                SubscriptionCommand::List(a) => &a.conn,
            },
            Command::Status(a) | Command::Health(a) | Command::Scavenge(a) => &a.conn,
            Command::Subscribe(a) => &a.conn,
            Command::Member(
                MemberCommand::Add { conn, .. }
                | MemberCommand::Remove { conn, .. }
                | MemberCommand::TransferLeader { conn, .. },
            ) => conn,
        }
    }
}

/// Runs one client command and returns the process exit code (see [`exit`]); errors are
/// printed to stderr.
pub fn run(command: Command) -> i32 {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return exit::FAILURE;
        }
    };
    let mut out = Out {
        w: std::io::BufWriter::new(std::io::stdout().lock()),
        json: command.conn().output == Output::Json,
    };
    let result = runtime
        .block_on(execute(command, &mut out))
        .and_then(|()| out.w.flush().map_err(Failure::io));
    match result {
        Ok(()) => exit::OK,
        Err(f) => {
            let _ = out.w.flush();
            if !f.message.is_empty() {
                eprintln!("error: {}", f.message);
            }
            f.code
        }
    }
}

/// Why a command failed: the exit code and what to tell the user.
#[derive(Debug)]
struct Failure {
    code: i32,
    message: String,
}

impl Failure {
    fn new(code: i32, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// Writing to stdout failed; a closed pipe (`quiver read s | head`) ends quietly.
    fn io(e: std::io::Error) -> Failure {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Failure::new(exit::OK, "")
        } else {
            Failure::new(exit::FAILURE, format!("writing the output: {e}"))
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let code = match &e {
            // The server's message names the stream and both versions.
            Error::WrongExpectedVersion { message, .. }
                if message.starts_with("wrong expected version") =>
            {
                return Failure::new(exit::CONFLICT, message.clone());
            }
            Error::WrongExpectedVersion { .. } => exit::CONFLICT,
            Error::NotFound(_) | Error::StreamDeleted(_) => exit::NOT_FOUND,
            Error::AlreadyExists(_) => exit::CONFLICT,
            Error::Unauthenticated(_) => exit::UNAUTHENTICATED,
            _ => exit::FAILURE,
        };
        // Each cause, once: `transport: sending the request: connection lost`.
        Failure::new(code, e.report())
    }
}

type Result<T, E = Failure> = std::result::Result<T, E>;

fn parse_json(s: &str) -> Result<String, String> {
    match serde_json::from_str::<&RawValue>(s) {
        Ok(_) => Ok(s.to_string()),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}

fn parse_expected(s: &str) -> Result<ExpectedVersion, String> {
    match s {
        "any" => Ok(ExpectedVersion::Any),
        "no-stream" => Ok(ExpectedVersion::NoStream),
        "exists" => Ok(ExpectedVersion::StreamExists),
        n => n
            .parse()
            .map(ExpectedVersion::Exact)
            .map_err(|_| "expected any, no-stream, exists or a version number".to_string()),
    }
}

/// `HOST:PORT`, or several separated by commas (the nodes of a cluster).
fn parse_server(s: &str) -> Result<String, String> {
    for one in s.split(',') {
        if one.parse::<SocketAddr>().is_ok() {
            continue;
        }
        match one.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => return Err("expected HOST:PORT, or several separated by commas".into()),
        }
    }
    Ok(s.to_string())
}

/// The CA `quiver serve` generates by default.
fn default_ca() -> PathBuf {
    let dir = std::env::var_os("QUIVER_DATA_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("quiver-data"), PathBuf::from);
    dir.join("tls").join("ca.pem")
}

fn client_config(conn: &ConnArgs) -> Result<ClientConfig> {
    let ca = conn.ca.clone().unwrap_or_else(default_ca);
    if !ca.exists() {
        return Err(Failure::new(
            exit::FAILURE,
            format!(
                "no CA file at {}: pass --ca FILE (or QUIVER_CA), or set QUIVER_DATA_DIR to \
                 the server's data directory",
                ca.display()
            ),
        ));
    }
    let mut config = ClientConfig::local(".")
        .ca_file(ca)
        .timeout(Duration::from_secs(conn.timeout));
    config = config
        .with_servers(&conn.server)
        .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?;
    if let Some(token) = &conn.token {
        config = config.token(token.clone());
    }
    config = config.follower_reads(conn.follower_reads);
    Ok(config)
}

async fn execute(command: Command, out: &mut Out<'_>) -> Result<()> {
    let conn = command.conn().clone();
    let config = client_config(&conn)?;
    if let Command::Health(_) = command {
        return health(config, conn.timeout, out).await;
    }
    // Input is read before connecting: the connection then lives only for the request.
    let events = match &command {
        Command::Append(a) => Some(append_events(a)?),
        _ => None,
    };
    let client = Client::connect(config).await?;
    let result = match command {
        Command::Append(a) => append(&client, a, events.unwrap_or_default(), out).await,
        command => one(&client, command, out).await,
    };
    // Tell the server we are gone, but do not wait for long on one that does not answer.
    let _ = tokio::time::timeout(Duration::from_secs(1), client.close()).await;
    result
}

async fn health(config: ClientConfig, timeout_secs: u64, out: &mut Out<'_>) -> Result<()> {
    let round_trip = async {
        let client = Client::connect(config).await?;
        let status = client.status().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), client.close()).await;
        status
    };
    match tokio::time::timeout(Duration::from_secs(timeout_secs), round_trip).await {
        Ok(Ok(_)) if out.json => out.line(&Obj::default().val("ok", true).end()),
        Ok(Ok(_)) => out.line("ok"),
        Ok(Err(e)) => {
            let f = Failure::from(e);
            Err(Failure::new(f.code, format!("unhealthy: {}", f.message)))
        }
        Err(_) => Err(Failure::new(
            exit::FAILURE,
            format!("unhealthy: no answer within {timeout_secs} s"),
        )),
    }
}

/// The events `append` sends: from its flags, or from stdin.
fn append_events(a: &AppendArgs) -> Result<Vec<EventData>> {
    if a.stdin {
        return events_from_lines(std::io::stdin().lock());
    }
    let (Some(event_type), Some(data)) = (&a.event_type, &a.data) else {
        return Err(Failure::new(exit::USAGE, "--type and --data, or --stdin"));
    };
    let mut event = EventData::json(event_type.clone(), data.clone().into_bytes());
    if let Some(id) = a.id {
        event = event.id(id);
    }
    if let Some(m) = &a.metadata {
        event = event.metadata(m.clone().into_bytes());
    }
    Ok(vec![event])
}

/// Parses JSON lines `{"type", "data", "id"?, "metadata"?}` into events.
fn events_from_lines(input: impl BufRead) -> Result<Vec<EventData>> {
    let mut events = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|e| Failure::new(exit::FAILURE, format!("reading stdin: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let event = event_from_line(&line)
            .map_err(|e| Failure::new(exit::FAILURE, format!("stdin line {}: {e}", i + 1)))?;
        events.push(event);
    }
    if events.is_empty() {
        return Err(Failure::new(exit::FAILURE, "no events on stdin"));
    }
    Ok(events)
}

fn event_from_line(line: &str) -> Result<EventData, String> {
    let fields: std::collections::BTreeMap<String, Box<RawValue>> = serde_json::from_str(line)
        .map_err(|e| format!("expected a JSON object {{\"type\", \"data\", ...}}: {e}"))?;
    let (mut event_type, mut data, mut id, mut metadata) = (None, None, None, None);
    for (key, value) in fields {
        match key.as_str() {
            "type" => {
                let t: String = serde_json::from_str(value.get())
                    .map_err(|_| "\"type\" must be a string".to_string())?;
                event_type = Some(t);
            }
            "data" => data = Some(value.get().to_string()),
            "id" => {
                let s: String = serde_json::from_str(value.get())
                    .map_err(|_| "\"id\" must be a UUID string".to_string())?;
                let uuid = Uuid::parse_str(&s).map_err(|e| format!("\"id\": {e}"))?;
                id = Some(uuid);
            }
            "metadata" => metadata = Some(value.get().to_string()),
            other => {
                return Err(format!(
                    "unknown key {other:?} (expected type, data, id, metadata)"
                ))
            }
        }
    }
    let event_type = event_type.ok_or("\"type\" is missing")?;
    let data = data.ok_or("\"data\" is missing")?;
    let mut event = EventData::json(event_type, data.into_bytes());
    if let Some(id) = id {
        event = event.id(id);
    }
    if let Some(m) = metadata {
        event = event.metadata(m.into_bytes());
    }
    Ok(event)
}

async fn append(
    client: &Client,
    a: AppendArgs,
    events: Vec<EventData>,
    out: &mut Out<'_>,
) -> Result<()> {
    let n = events.len() as u64;
    let r = client.append(&a.stream, a.expected, events).await?;
    let last = r.next_expected_version;
    let first = StreamVersion(last.get().saturating_sub(n - 1));
    if out.json {
        let o = Obj::default()
            .val("stream", a.stream.as_str())
            .val("first_version", first)
            .val("last_version", last)
            .val("first_position", r.position_first)
            .val("last_position", r.position_last);
        return out.line(&o.end());
    }
    let again = if r.idempotent {
        " (already stored: nothing written again)"
    } else {
        ""
    };
    out.line(&format!(
        "appended {n} event{} to {}: versions {first}..={last}, positions {}..={}{again}",
        if n == 1 { "" } else { "s" },
        a.stream,
        r.position_first,
        r.position_last
    ))
}

/// Every command but `append` and `health`, on a connected client.
async fn one(client: &Client, command: Command, out: &mut Out<'_>) -> Result<()> {
    match command {
        Command::Append(_) | Command::Health(_) => unreachable!("handled by execute"),
        Command::Read(a) => {
            let mut options = ReadStreamOptions::default();
            if let Some(from) = a.from {
                options = options.from(from);
            }
            if a.backward {
                options = options.backward();
            }
            if let Some(max) = a.max {
                options = options.max_count(max);
            }
            let mut events = client.read_stream(&a.stream, options).await?;
            while let Some(e) = events.next().await? {
                out.event(&e)?;
            }
            Ok(())
        }
        Command::Subscribe(a) => {
            if let Some(stream) = &a.stream {
                let mut options = SubscribeStreamOptions::default();
                if let Some(v) = a.from {
                    options = options.from(v);
                }
                if a.from_end {
                    options = options.from_end();
                }
                for (path, op, value) in a.where_ {
                    options = options.payload(path, op, value);
                }
                let sub = client.subscribe_stream(stream, options).await?;
                return print_events(sub, a.count, out).await;
            }
            let mut options = SubscribeAllOptions::default();
            if let Some(v) = a.from {
                options = options.from(v);
            }
            if a.from_end {
                options = options.from_end();
            }
            if let Some(p) = a.type_prefix {
                options = options.type_prefix(p);
            }
            if let Some(p) = a.stream_prefix {
                options = options.stream_prefix(p);
            }
            if let Some(r) = a.type_regex {
                options = options.type_regex(r);
            }
            if let Some(r) = a.stream_regex {
                options = options.stream_regex(r);
            }
            for (path, op, value) in a.where_ {
                options = options.payload(path, op, value);
            }
            let sub = client.subscribe_all(options).await?;
            print_events(sub, a.count, out).await
        }
        Command::ReadAll(a) => {
            let mut options = ReadAllOptions::default();
            if let Some(from) = a.from {
                options = options.from(from);
            }
            if a.backward {
                options = options.backward();
            }
            if let Some(max) = a.max {
                options = options.max_count(max);
            }
            if let Some(p) = a.type_prefix {
                options = options.type_prefix(p);
            }
            if let Some(p) = a.stream_prefix {
                options = options.stream_prefix(p);
            }
            let mut events = client.read_all(options).await?;
            while let Some(e) = events.next().await? {
                out.event(&e)?;
            }
            Ok(())
        }
        Command::Streams(a) => {
            let mut left = a.limit.map_or(u64::MAX, u64::from);
            let mut after = a.after;
            while left > 0 {
                let page = left.min(STREAMS_PAGE);
                let list = client
                    .list_streams(&a.prefix, after.as_deref(), page as u32)
                    .await?;
                for info in &list {
                    out.stream(info, false)?;
                }
                left -= list.len() as u64;
                if (list.len() as u64) < page {
                    break;
                }
                after = list.last().map(|i| i.name.clone());
            }
            Ok(())
        }
        Command::StreamMeta(a) => {
            if a.set {
                let metadata = StreamMetadata {
                    max_count: a.max_count,
                    max_age_us: a.max_age_secs.map(|s| s * 1_000_000),
                    truncate_before: a.truncate_before.map(StreamVersion),
                    custom: a.custom.map(String::into_bytes).unwrap_or_default().into(),
                };
                client.set_metadata(&a.stream, metadata).await?;
            }
            match client.stream_info(&a.stream).await? {
                Some(info) => out.stream(&info, true),
                None => Err(Failure::new(
                    exit::NOT_FOUND,
                    format!("stream {:?} not found", a.stream),
                )),
            }
        }
        Command::Delete(a) => {
            let kind = if a.hard {
                client.tombstone_stream(&a.stream, a.expected).await?;
                "hard"
            } else {
                client.delete_stream(&a.stream, a.expected).await?;
                "soft"
            };
            if out.json {
                let o = Obj::default()
                    .val("stream", a.stream.as_str())
                    .val("deleted", kind);
                return out.line(&o.end());
            }
            out.line(&format!("deleted {} ({kind})", a.stream))
        }
        Command::Snapshot(s) => snapshot(client, s.command, out).await,
        Command::Subscription(s) => subscription(client, s.command, out).await,
        Command::Status(_) => {
            let quiver_client::ServerStatus {
                store_id,
                commit_position: position,
                streams,
                ..
            } = client.status().await?;
            if out.json {
                let o = Obj::default()
                    .val("store_id", store_id)
                    .val("commit_position", position)
                    .val("streams", streams);
                return out.line(&o.end());
            }
            out.line(&format!(
                "store id:         {store_id}\ncommit position:  {position}\nstreams:          \
                 {streams}"
            ))
        }
        Command::Scavenge(_) => {
            let bytes = client.scavenge().await?;
            if out.json {
                return out.line(&Obj::default().val("bytes_reclaimed", bytes).end());
            }
            out.line(&format!("scavenged: {bytes} bytes reclaimed"))
        }
        Command::Member(MemberCommand::Add {
            id,
            peer,
            client: their_client,
            ..
        }) => {
            let index = client.cluster_add(id, peer, their_client).await?;
            if out.json {
                let o = Obj::default().val("added", id).val("index", index);
                return out.line(&o.end());
            }
            out.line(&format!(
                "node {id} added as a learner (entry {index}); the leader promotes it to voter \
                 once it has caught up"
            ))
        }
        Command::Member(MemberCommand::Remove { id, .. }) => {
            let index = client.cluster_remove(id).await?;
            if out.json {
                let o = Obj::default().val("removed", id).val("index", index);
                return out.line(&o.end());
            }
            out.line(&format!("node {id} removed (entry {index})"))
        }
        Command::Member(MemberCommand::TransferLeader { id, .. }) => {
            let to = client.cluster_transfer(id).await?;
            if out.json {
                return out.line(&Obj::default().val("transferring_to", to).end());
            }
            out.line(&format!("leadership is being handed to node {to}"))
        }
    }
}

/// Prints a subscription's events as they arrive, `count` of them or until it ends.
async fn print_events<P: Point>(
    mut sub: Subscription<P>,
    count: Option<u64>,
    out: &mut Out<'_>,
) -> Result<()> {
    let mut printed = 0u64;
    while count.is_none_or(|n| printed < n) {
        match sub.next().await? {
            Some(SubscriptionMessage::Event(e)) => {
                out.event(&e)?;
                // Live output: show each event as it arrives.
                out.flush()?;
                printed += 1;
            }
            Some(_) => {}
            None => break,
        }
    }
    Ok(())
}

async fn snapshot(client: &Client, command: SnapshotCommand, out: &mut Out<'_>) -> Result<()> {
    match command {
        SnapshotCommand::Put(a) => {
            let data = match (&a.data_file, a.data) {
                (Some(file), _) => std::fs::read(file).map_err(|e| {
                    Failure::new(exit::FAILURE, format!("reading {}: {e}", file.display()))
                })?,
                (None, Some(s)) => s.into_bytes(),
                (None, None) => {
                    return Err(Failure::new(
                        exit::USAGE,
                        "--data-file FILE or --data STRING",
                    ))
                }
            };
            let bytes = data.len();
            client.put_snapshot(&a.stream, a.version, data).await?;
            if out.json {
                let o = Obj::default()
                    .val("stream", a.stream.as_str())
                    .val("version", a.version)
                    .val("bytes", bytes);
                return out.line(&o.end());
            }
            out.line(&format!(
                "stored the snapshot of {} at version {} ({bytes} bytes)",
                a.stream, a.version
            ))
        }
        SnapshotCommand::Get(a) => {
            let found = if a.latest {
                client.latest_snapshot(&a.stream, a.version).await?
            } else {
                let data = client.get_snapshot(&a.stream, a.version).await?;
                data.map(|d| (StreamVersion(a.version), d))
            };
            let Some((version, data)) = found else {
                let which = if a.latest { "at or below" } else { "at" };
                return Err(Failure::new(
                    exit::NOT_FOUND,
                    format!(
                        "no snapshot of {:?} {which} version {}",
                        a.stream, a.version
                    ),
                ));
            };
            if out.json {
                let o = Obj::default()
                    .val("stream", a.stream.as_str())
                    .val("version", version);
                let o = match json_text(&data) {
                    Some(text) => o.raw("data", &text),
                    None => o.val("data_base64", base64(&data)),
                };
                return out.line(&o.end());
            }
            if a.latest {
                eprintln!("snapshot of {} at version {version}", a.stream);
            }
            out.w.write_all(&data).map_err(Failure::io)
        }
        SnapshotCommand::List(a) => {
            for version in client.list_snapshots(&a.stream).await? {
                if out.json {
                    let o = Obj::default()
                        .val("stream", a.stream.as_str())
                        .val("version", version);
                    out.line(&o.end())?;
                } else {
                    out.line(&version.to_string())?;
                }
            }
            Ok(())
        }
        SnapshotCommand::Delete(a) => {
            client.delete_snapshot(&a.stream, a.version).await?;
            if out.json {
                let o = Obj::default()
                    .val("stream", a.stream.as_str())
                    .val("version", a.version)
                    .val("deleted", true);
                return out.line(&o.end());
            }
            out.line(&format!(
                "deleted the snapshot of {} at version {}",
                a.stream, a.version
            ))
        }
    }
}

async fn subscription(
    client: &Client,
    command: SubscriptionCommand,
    out: &mut Out<'_>,
) -> Result<()> {
    match command {
        SubscriptionCommand::Create(a) => {
            client.create_persistent(&a.definition()).await?;
            let info = client.persistent_info(&a.group).await?;
            if out.json {
                return out.group(&info);
            }
            out.line(&format!("created the subscription group {}", a.group))
        }
        SubscriptionCommand::Update(a) => {
            let current = client.persistent_info(&a.group).await?.definition;
            client.update_persistent(&a.apply(current)).await?;
            let info = client.persistent_info(&a.group).await?;
            if out.json {
                return out.group(&info);
            }
            out.line(&format!("updated the subscription group {}", a.group))
        }
        SubscriptionCommand::Delete(a) => {
            client.delete_persistent(&a.group).await?;
            if out.json {
                let o = Obj::default()
                    .val("group", a.group.as_str())
                    .val("deleted", true);
                return out.line(&o.end());
            }
            out.line(&format!("deleted the subscription group {}", a.group))
        }
        SubscriptionCommand::List(_) => {
            for info in client.list_persistent().await? {
                if out.json {
                    out.group(&info)?;
                } else {
                    let d = &info.definition;
                    out.line(&format!(
                        "{}  on {}  checkpoint {}  in flight {}  parked {}  consumers {}",
                        d.name,
                        d.stream,
                        info.checkpoint,
                        info.in_flight,
                        info.parked.len(),
                        info.consumers
                    ))?;
                }
            }
            Ok(())
        }
        SubscriptionCommand::Info(a) => {
            let info = client.persistent_info(&a.group).await?;
            if out.json {
                return out.group(&info);
            }
            let d = &info.definition;
            let opt = |p: &Option<String>| p.clone().unwrap_or_else(|| "-".into());
            let strategy = match d.strategy {
                Strategy::RoundRobin => "round-robin",
                Strategy::Pinned => "pinned",
            };
            let parked: Vec<String> = info.parked.iter().map(|p| p.to_string()).collect();
            out.line(&format!(
                "group:            {}\nstream:           {}\ntype prefix:      {}\n\
                 stream prefix:    {}\nstart:            {}\nstrategy:         {strategy}\n\
                 max retries:      {}\nmessage timeout:  {} ms\nmax in flight:    {}\n\
                 checkpoint:       {}\nnext:             {}\nin flight:        {}\n\
                 waiting:          {}\nconsumers:        {}\nparked:           [{}]",
                d.name,
                d.stream,
                opt(&d.type_prefix),
                opt(&d.stream_prefix),
                d.start,
                d.max_retries,
                d.message_timeout_ms,
                d.max_in_flight,
                info.checkpoint,
                info.next,
                info.in_flight,
                info.waiting,
                info.consumers,
                parked.join(", ")
            ))
        }
        SubscriptionCommand::ReplayParked(a) => {
            client.replay_parked(&a.group).await?;
            if out.json {
                let o = Obj::default()
                    .val("group", a.group.as_str())
                    .val("replayed", true);
                return out.line(&o.end());
            }
            out.line(&format!("replaying the parked events of {}", a.group))
        }
    }
}

/// Standard output, buffered, and how to print to it.
struct Out<'a> {
    w: std::io::BufWriter<std::io::StdoutLock<'a>>,
    json: bool,
}

impl Out<'_> {
    fn line(&mut self, s: &str) -> Result<()> {
        writeln!(self.w, "{s}").map_err(Failure::io)
    }

    fn flush(&mut self) -> Result<()> {
        self.w.flush().map_err(Failure::io)
    }

    /// A persistent subscription group's state, as one JSON object.
    fn group(&mut self, info: &PersistentInfo) -> Result<()> {
        let json = serde_json::to_string(info)
            .map_err(|e| Failure::new(exit::FAILURE, format!("group state: {e}")))?;
        self.line(&json)
    }

    fn event(&mut self, e: &RecordedEvent) -> Result<()> {
        if self.json {
            let o = Obj::default()
                .val("stream", e.stream.as_str())
                .val("version", e.version)
                .val("position", e.position)
                .val("id", e.id.to_string())
                .val("type", e.event_type.as_str())
                .raw("data", &embed(e.json, &e.data))
                .raw("metadata", &embed(e.json, &e.metadata))
                .val("created_us", e.created_us);
            return self.line(&o.end());
        }
        let mut s = format!(
            "{}@{}  pos {}  {}  {}  {}",
            e.stream,
            e.version,
            e.position,
            timestamp(e.created_us),
            e.event_type,
            human(e.json, &e.data)
        );
        if !e.metadata.is_empty() {
            s.push_str("  metadata ");
            s.push_str(&human(e.json, &e.metadata));
        }
        self.line(&s)
    }

    /// A stream's state: one line in a list, or a block for `stream-meta`.
    fn stream(&mut self, i: &StreamInfo, detailed: bool) -> Result<()> {
        let m = &i.metadata;
        if self.json {
            let custom = if m.custom.is_empty() {
                "null".to_string()
            } else {
                json_text(&m.custom).unwrap_or_else(|| Value::from(base64(&m.custom)).to_string())
            };
            let o = Obj::default()
                .val("stream", i.name.as_str())
                .val("current_version", i.current_version)
                .val("soft_deleted", i.soft_deleted)
                .val("hard_deleted", i.hard_deleted)
                .val("max_count", m.max_count)
                .val("max_age_us", m.max_age_us)
                .val("truncate_before", m.truncate_before)
                .raw("custom", &custom);
            return self.line(&o.end());
        }
        let version = i
            .current_version
            .map_or_else(|| "none".to_string(), |v| v.to_string());
        let deleted = match (i.soft_deleted, i.hard_deleted) {
            (_, true) => "hard",
            (true, false) => "soft",
            _ => "no",
        };
        if !detailed {
            let mark = match deleted {
                "no" => String::new(),
                d => format!("  ({d}-deleted)"),
            };
            return self.line(&format!("{}  version {version}{mark}", i.name));
        }
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        let age = m.max_age_us.map_or_else(
            || "-".to_string(),
            |us| match us % 1_000_000 {
                0 => format!("{} s", us / 1_000_000),
                _ => format!("{} µs", us),
            },
        );
        let custom = if m.custom.is_empty() {
            "-".to_string()
        } else {
            human(true, &m.custom)
        };
        self.line(&format!(
            "stream:           {}\ncurrent version:  {version}\ndeleted:          {deleted}\n\
             max count:        {}\nmax age:          {age}\ntruncate before:  {}\n\
             custom:           {custom}",
            i.name,
            opt(m.max_count),
            opt(m.truncate_before.map(u64::from)),
        ))
    }
}

/// A JSON object with its keys in the order given.
#[derive(Default)]
struct Obj(String);

impl Obj {
    fn val(self, key: &str, value: impl Into<Value>) -> Obj {
        let value: Value = value.into();
        self.raw(key, &value.to_string())
    }

    /// Adds `json`, which must be valid JSON text on one line.
    fn raw(mut self, key: &str, json: &str) -> Obj {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        self.0.push_str(&Value::from(key).to_string());
        self.0.push(':');
        self.0.push_str(json);
        self
    }

    fn end(mut self) -> String {
        if self.0.is_empty() {
            self.0.push('{');
        }
        self.0.push('}');
        self.0
    }
}

/// The bytes as JSON text on one line, when they are JSON. Newlines can only be whitespace
/// in valid JSON (never inside strings), so they become spaces; keys keep their order.
fn json_text(bytes: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(bytes).ok()?;
    let raw: &RawValue = serde_json::from_str(s).ok()?;
    Some(raw.get().replace(['\n', '\r'], " "))
}

/// A payload in JSON output: the JSON itself for a JSON event that parses, else a base64
/// string.
fn embed(json: bool, bytes: &[u8]) -> String {
    json.then(|| json_text(bytes))
        .flatten()
        .unwrap_or_else(|| Value::from(base64(bytes)).to_string())
}

/// A payload for people: JSON on one line, else the text quoted, else its size.
fn human(json: bool, bytes: &[u8]) -> String {
    if let Some(text) = json.then(|| json_text(bytes)).flatten() {
        return text;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("<{} bytes of binary>", bytes.len()),
    }
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// µs since the Unix epoch as UTC, `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn timestamp(us: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us);
    humantime::format_rfc3339_micros(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_tests_parse() {
        let (p, op, v) = parse_where("total >= 100").unwrap();
        assert_eq!(
            (p.as_str(), op, v),
            ("total", PayloadOp::Ge, serde_json::json!(100))
        );
        let (p, op, v) = parse_where(r#"customer.tier=="gold""#).unwrap();
        assert_eq!(
            (p.as_str(), op, v),
            ("customer.tier", PayloadOp::Eq, serde_json::json!("gold"))
        );
        let (_, op, v) = parse_where("name != ada").unwrap();
        assert_eq!(
            (op, v),
            (PayloadOp::Ne, serde_json::json!("ada")),
            "bare words are strings"
        );
        assert!(parse_where("total").is_err());
        assert!(parse_where("> 3").is_err());
    }

    #[test]
    fn timestamps_are_utc() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            timestamp(951_782_400_000_001),
            "2000-02-29T00:00:00.000001Z"
        );
        assert_eq!(
            timestamp(1_709_251_199_999_999),
            "2024-02-29T23:59:59.999999Z"
        );
    }

    #[test]
    fn json_is_embedded_as_written_on_one_line() {
        assert_eq!(
            embed(true, b" {\"b\": 1,\n \"a\": [2]}\n").as_str(),
            "{\"b\": 1,  \"a\": [2]}"
        );
        assert_eq!(embed(true, b"{nope"), "\"e25vcGU=\"");
        assert_eq!(embed(false, b"{}"), "\"e30=\"");
        assert_eq!(embed(true, b""), "\"\"");
        let o = Obj::default()
            .val("k", 1u64)
            .raw("d", "[1]")
            .val("s", "x\"y");
        assert_eq!(o.end(), r#"{"k":1,"d":[1],"s":"x\"y"}"#);
    }

    #[test]
    fn expected_versions_and_stdin_lines_parse() {
        assert_eq!(parse_expected("any"), Ok(ExpectedVersion::Any));
        assert_eq!(parse_expected("no-stream"), Ok(ExpectedVersion::NoStream));
        assert_eq!(parse_expected("exists"), Ok(ExpectedVersion::StreamExists));
        assert_eq!(parse_expected("7"), Ok(ExpectedVersion::Exact(7)));
        assert!(parse_expected("-1").is_err());
        let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        let lines = format!(
            "{{\"type\":\"A\",\"data\":{{\"z\":1,\"a\":2}}}}\n\n\
             {{\"type\":\"B\",\"data\":\"s\",\"id\":\"{id}\",\"metadata\":{{\"m\":true}}}}\n"
        );
        let events = events_from_lines(lines.as_bytes()).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(&events[0].data[..], br#"{"z":1,"a":2}"#);
        assert!(events[0].json && events[0].metadata.is_empty());
        assert_eq!(events[1].id.to_string(), id);
        assert_eq!(&events[1].metadata[..], br#"{"m":true}"#);
        for bad in [
            "{\"data\":1}",
            "{\"type\":1,\"data\":1}",
            "[1]",
            "{\"type\":\"A\"}",
        ] {
            let e = events_from_lines(bad.as_bytes()).unwrap_err();
            assert!(e.message.starts_with("stdin line 1: "), "{}", e.message);
        }
        let e = events_from_lines("{\"type\":\"A\",\"data\":1,\"x\":0}".as_bytes()).unwrap_err();
        assert!(e.message.contains("unknown key \"x\""), "{}", e.message);
        assert!(events_from_lines("\n".as_bytes()).is_err());
        assert!(parse_json("{\"a\":1}").is_ok());
        assert!(parse_json("{nope").unwrap_err().contains("not valid JSON"));
    }
}
