//! # quiver-client
//!
//! The Rust client for Quiver, over QUIC. It depends on `quiver-net` only, never on the
//! engine or the server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), quiver_client::Error> {
//! use quiver_client::{Client, ClientConfig, EventData, ExpectedVersion, ReadStreamOptions};
//!
//! // Trusts the CA a local server generated in ./quiver-data/tls/ca.pem.
//! let client = Client::connect(ClientConfig::local("quiver-data")).await?;
//! let event = EventData::json("AccountOpened", r#"{"owner":"ada"}"#);
//! client.append("account-1", ExpectedVersion::NoStream, vec![event]).await?;
//! let mut read = client.read_stream("account-1", ReadStreamOptions::default()).await?;
//! while let Some(event) = read.next().await? {
//!     println!("{} {}", event.version, event.event_type);
//! }
//! # Ok(()) }
//! ```
//!
//! The guide — connecting (a connection string, the environment), appending with optimistic
//! concurrency, reading, subscribing, persistent groups, snapshots, errors, a cluster, and a
//! table for those coming from the KurrentDB client — is `docs/CLIENT.md` in the repository.
//!
//! ## Layout
//! - `lib.rs` — [`Client`], its options and results.
//! - `connstr.rs` — [`ClientConfig::from_url`], [`ClientConfig::from_env`], server lists.
//! - `error.rs` — [`Error`].
//! - `point.rs` — [`StreamVersion`] and [`Position`], never one for the other.
//! - `persistent.rs` — persistent subscriptions: definitions, [`PersistentSubscription`].
#![warn(missing_docs, unreachable_pub)]

mod connstr;
mod error;
mod persistent;
mod point;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use quiver_net::message::{self, Expected, Match, Request, Response};
use quiver_net::quic::read_frame;
use quiver_net::{Text, PROTOCOL_VERSION};

pub use bytes::Bytes;
pub use connstr::{ConfigError, PORT_DEFAULT};
pub use error::{Cause, Error};
pub use persistent::{
    Delivery, NackAction, PersistentDefinition, PersistentInfo, PersistentSubscription, Strategy,
};
pub use point::{Point, Position, StreamVersion};
/// The server's error codes, as [`Error::Server`] carries them.
pub use quiver_net::ErrorCode;
pub use uuid::Uuid;

/// Default server address.
///
/// ```
/// use quiver_client::{ClientConfig, SERVER_DEFAULT};
/// // Where a local configuration looks unless told otherwise.
/// assert_eq!(ClientConfig::local("quiver-data").server.to_string(), SERVER_DEFAULT);
/// ```
pub const SERVER_DEFAULT: &str = "127.0.0.1:7600";

/// Largest response payload read. A response may pass the largest request by its own
/// headers: a stored event or snapshot can be nearly 64 MiB, and its `Events` or
/// `SnapshotReply` wrapping adds a few bytes (docs/PROTOCOL.md, limits).
///
/// ```
/// use quiver_client::RESPONSE_PAYLOAD_BYTES_MAX;
/// // Room for a response carrying an event as large as a request may be (64 MiB), with
/// // 1 KiB of the response's own headers around it.
/// assert_eq!(RESPONSE_PAYLOAD_BYTES_MAX, (64 << 20) + 1024);
/// ```
pub const RESPONSE_PAYLOAD_BYTES_MAX: usize = quiver_net::frame::FRAME_PAYLOAD_BYTES_MAX + 1024;

/// How to reach a server.
///
/// ```
/// use std::time::Duration;
/// use quiver_client::ClientConfig;
/// // A three-node cluster, its CA shipped with the service, a token and a short deadline.
/// let config = ClientConfig::local("quiver-data")
///     .with_servers("10.0.0.1:7600,10.0.0.2:7600,10.0.0.3:7600")?
///     .ca_file("/etc/quiver/ca.pem")
///     .token("s3cret")
///     .timeout(Duration::from_secs(5));
/// assert_eq!(config.server.to_string(), "10.0.0.1:7600");
/// assert_eq!(config.others.len(), 2);
/// # Ok::<(), quiver_client::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Server address: the one tried first.
    pub server: SocketAddr,
    /// Other nodes of the same cluster. A request refused by a node that is not the leader,
    /// or by one that cannot serve, or that cannot reach its node, moves on to the next
    /// address (see [`Client`]).
    pub others: Vec<SocketAddr>,
    /// Name the server's certificate must carry.
    pub server_name: String,
    /// PEM file of the certificate authority to trust.
    pub ca_file: PathBuf,
    /// Token, when the server requires one.
    pub token: Option<String>,
    /// Deadline for each request.
    pub timeout: Duration,
    /// In a cluster, let any node answer reads from what it has committed, without asking
    /// the leader first (`SetOptions`): cheaper and possible without a leader, but a read
    /// may miss writes acknowledged just before it. Off: reads are linearizable.
    pub follower_reads: bool,
    /// How to reconnect when the connection is gone.
    pub retry: RetryPolicy,
    /// Also trust the system's certificate authorities (the operating system's store), for
    /// servers whose certificates a public CA signed; the CA file is then optional.
    pub system_roots: bool,
}

impl ClientConfig {
    /// A server on this machine whose data directory is `data_dir`: trusts the CA it
    /// generated there.
    ///
    /// ```
    /// use std::path::Path;
    /// use std::time::Duration;
    /// use quiver_client::ClientConfig;
    /// // The server `quiver serve --data-dir /var/lib/quiver` runs on this machine.
    /// let config = ClientConfig::local("/var/lib/quiver");
    /// assert_eq!(config.ca_file, Path::new("/var/lib/quiver/tls/ca.pem"));
    /// assert_eq!(config.server.to_string(), "127.0.0.1:7600");
    /// assert_eq!(config.timeout, Duration::from_secs(30));
    /// assert!(config.token.is_none() && !config.follower_reads);
    /// ```
    pub fn local(data_dir: impl AsRef<Path>) -> Self {
        ClientConfig {
            server: SERVER_DEFAULT.parse().expect("a valid default address"),
            others: Vec::new(),
            server_name: "localhost".into(),
            ca_file: data_dir.as_ref().join("tls").join("ca.pem"),
            token: None,
            timeout: Duration::from_secs(30),
            follower_reads: false,
            retry: RetryPolicy::default(),
            system_roots: false,
        }
    }

    /// Also trusts the system's certificate authorities (see [`ClientConfig::system_roots`]).
    ///
    /// ```
    /// use quiver_client::ClientConfig;
    /// // A server whose certificate a public CA signed: no CA file to ship with the client.
    /// let config = ClientConfig::local("quiver-data")
    ///     .server("203.0.113.7:7600".parse().unwrap())
    ///     .server_name("events.example.com")
    ///     .system_roots(true);
    /// assert!(config.system_roots);
    /// ```
    pub fn system_roots(mut self, on: bool) -> Self {
        self.system_roots = on;
        self
    }

    /// Sets how to reconnect (see [`RetryPolicy`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use quiver_client::{ClientConfig, RetryPolicy};
    /// // A nightly batch job: fail at once rather than wait out a restart.
    /// let config = ClientConfig::local("quiver-data")
    ///     .retry(RetryPolicy { tries: 1, ..RetryPolicy::default() });
    /// assert_eq!(config.retry.tries, 1);
    /// assert_eq!(config.retry.delay_min, Duration::from_millis(50));
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Sets the server address.
    ///
    /// ```
    /// use quiver_client::ClientConfig;
    /// // A second local server, started with `--listen 127.0.0.1:7610`.
    /// let config = ClientConfig::local("quiver-data-2").server("127.0.0.1:7610".parse().unwrap());
    /// assert_eq!(config.server.port(), 7610);
    /// ```
    pub fn server(mut self, addr: SocketAddr) -> Self {
        self.server = addr;
        self
    }

    /// Sets every address of a cluster: the first is tried first. The nodes must all present
    /// certificates for [`ClientConfig::server_name`] signed by the one CA trusted.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use quiver_client::ClientConfig;
    /// let nodes: Vec<SocketAddr> = ["10.0.0.1:7600", "10.0.0.2:7600", "10.0.0.3:7600"]
    ///     .iter()
    ///     .map(|a| a.parse().unwrap())
    ///     .collect();
    /// let config = ClientConfig::local("quiver-data").servers(nodes);
    /// assert_eq!(config.server.to_string(), "10.0.0.1:7600");
    /// assert_eq!(config.others.len(), 2);
    /// ```
    pub fn servers(mut self, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        let mut addrs = addrs.into_iter();
        if let Some(first) = addrs.next() {
            self.server = first;
        }
        self.others = addrs.filter(|a| *a != self.server).collect();
        self
    }

    fn addresses(&self) -> Vec<SocketAddr> {
        std::iter::once(self.server)
            .chain(self.others.iter().copied())
            .collect()
    }

    /// Sets the CA file to trust.
    ///
    /// ```
    /// use quiver_client::ClientConfig;
    /// // The CA of a server on another machine, copied here.
    /// let config = ClientConfig::local("quiver-data").ca_file("/etc/quiver/ca.pem");
    /// assert_eq!(config.ca_file, std::path::Path::new("/etc/quiver/ca.pem"));
    /// ```
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = path.into();
        self
    }

    /// Sets the token to present.
    ///
    /// ```
    /// use quiver_client::ClientConfig;
    /// // A server started with a token: present it on every connection.
    /// let config = ClientConfig::local("quiver-data").token("s3cret");
    /// assert_eq!(config.token.as_deref(), Some("s3cret"));
    /// ```
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Opts in to follower reads (see [`ClientConfig::follower_reads`]).
    ///
    /// ```
    /// use quiver_client::ClientConfig;
    /// // A reporting service: reads may lag a little, but keep working during an election.
    /// let config = ClientConfig::local("quiver-data").follower_reads(true);
    /// assert!(config.follower_reads);
    /// assert!(!ClientConfig::local("quiver-data").follower_reads);
    /// ```
    pub fn follower_reads(mut self, on: bool) -> Self {
        self.follower_reads = on;
        self
    }

    /// Sets the per-request deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// use quiver_client::ClientConfig;
    /// // An HTTP handler with a budget of its own: give up on the store after 2 s.
    /// let config = ClientConfig::local("quiver-data").timeout(Duration::from_secs(2));
    /// assert_eq!(config.timeout, Duration::from_secs(2));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// What the writer expects a stream's version to be.
///
/// ```
/// use quiver_client::{ExpectedVersion, StreamVersion};
/// // Opening an account: its stream must not exist yet.
/// let open = ExpectedVersion::NoStream;
/// // A withdrawal decided on the account as read up to version 4: nobody may have written
/// // since (else the append fails with `Error::WrongExpectedVersion`).
/// let withdraw = ExpectedVersion::Exact(4);
/// // The same two, from where a read of the account ended (`None`: nothing was read).
/// assert_eq!(ExpectedVersion::from(None), open);
/// assert_eq!(ExpectedVersion::from(Some(StreamVersion(4))), withdraw);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist.
    NoStream,
    /// The stream must exist.
    StreamExists,
    /// The stream's last version must be this.
    Exact(u64),
}

/// `None` (nothing read: the stream is new) expects no stream; `Some(v)` expects exactly
/// version `v`: what a loader that read a stream up to its last version passes on.
///
/// ```
/// use quiver_client::{ExpectedVersion, StreamVersion};
/// assert_eq!(ExpectedVersion::from(None), ExpectedVersion::NoStream);
/// assert_eq!(ExpectedVersion::from(Some(StreamVersion(4))), ExpectedVersion::Exact(4));
/// ```
impl From<Option<StreamVersion>> for ExpectedVersion {
    fn from(last: Option<StreamVersion>) -> Self {
        last.map_or(ExpectedVersion::NoStream, ExpectedVersion::from)
    }
}

/// Exactly this version: what the next write after one that returned
/// [`WriteResult::next_expected_version`] expects.
///
/// ```
/// use quiver_client::{ExpectedVersion, StreamVersion};
/// assert_eq!(ExpectedVersion::from(StreamVersion(7)), ExpectedVersion::Exact(7));
/// ```
impl From<StreamVersion> for ExpectedVersion {
    fn from(v: StreamVersion) -> Self {
        ExpectedVersion::Exact(v.0)
    }
}

impl ExpectedVersion {
    fn wire(self) -> Expected {
        match self {
            ExpectedVersion::Any => Expected::Any,
            ExpectedVersion::NoStream => Expected::NoStream,
            ExpectedVersion::StreamExists => Expected::StreamExists,
            ExpectedVersion::Exact(v) => Expected::Exact(v),
        }
    }
}

/// An event to append.
///
/// ```
/// use quiver_client::EventData;
/// let deposit = EventData::json("Deposited", r#"{"amount":50}"#)
///     .metadata(r#"{"user":"ada"}"#);
/// assert!(deposit.json);
/// assert_eq!(deposit.event_type, "Deposited");
/// assert_eq!(&deposit.data[..], br#"{"amount":50}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventData {
    /// Its id: retrying an append with the same ids is idempotent.
    pub id: Uuid,
    /// Its type.
    pub event_type: String,
    /// True for JSON data.
    pub json: bool,
    /// The payload.
    pub data: Bytes,
    /// User metadata.
    pub metadata: Bytes,
}

impl EventData {
    /// A JSON event with a fresh id.
    ///
    /// ```
    /// use quiver_client::EventData;
    /// let opened = EventData::json("AccountOpened", r#"{"owner":"ada"}"#);
    /// let again = EventData::json("AccountOpened", r#"{"owner":"ada"}"#);
    /// assert!(opened.json);
    /// // Each gets an id of its own: two appends of these store two events.
    /// assert_ne!(opened.id, again.id);
    /// ```
    pub fn json(event_type: impl Into<String>, data: impl Into<Bytes>) -> Self {
        EventData {
            id: Uuid::new_v4(),
            event_type: event_type.into(),
            json: true,
            data: data.into(),
            metadata: Bytes::new(),
        }
    }

    /// A JSON event serialized from `value`, with a fresh id.
    ///
    /// ```
    /// # use quiver_client::EventData;
    /// #[derive(serde::Serialize)]
    /// struct Deposited { amount: u64 }
    /// let e = EventData::from_json("Deposited", &Deposited { amount: 5 }).unwrap();
    /// assert_eq!(&e.data[..], br#"{"amount":5}"#);
    /// ```
    pub fn from_json<T: serde::Serialize + ?Sized>(
        event_type: impl Into<String>,
        value: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(EventData::json(event_type, serde_json::to_vec(value)?))
    }

    /// A binary event with a fresh id.
    ///
    /// ```
    /// use quiver_client::EventData;
    /// // A scanned receipt, stored as it is.
    /// let scan: Vec<u8> = vec![0x89, b'P', b'N', b'G'];
    /// let receipt = EventData::binary("ReceiptScanned", scan);
    /// assert!(!receipt.json);
    /// assert_eq!(receipt.data.len(), 4);
    /// ```
    pub fn binary(event_type: impl Into<String>, data: impl Into<Bytes>) -> Self {
        EventData {
            json: false,
            ..EventData::json(event_type, data)
        }
    }

    /// Sets the id (to make a retry recognisable).
    ///
    /// ```
    /// use quiver_client::{EventData, Uuid};
    /// // The id the payment command carried: if the append times out and is sent again, the
    /// // event is stored once (the second append answers `idempotent`).
    /// let payment = Uuid::parse_str("7d444840-9dc0-11d1-b245-5ffdce74fad2").unwrap();
    /// let paid = EventData::json("OrderPaid", r#"{"amount":120}"#).id(payment);
    /// assert_eq!(paid.id, payment);
    /// ```
    pub fn id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// Sets the metadata.
    ///
    /// ```
    /// use quiver_client::EventData;
    /// // Who asked for the deposit and why, kept apart from what happened.
    /// let deposit = EventData::json("Deposited", r#"{"amount":50}"#)
    ///     .metadata(r#"{"user":"ada","correlation":"order-17"}"#);
    /// assert_eq!(&deposit.metadata[..], br#"{"user":"ada","correlation":"order-17"}"#);
    /// ```
    pub fn metadata(mut self, metadata: impl Into<Bytes>) -> Self {
        self.metadata = metadata.into();
        self
    }

    fn wire(self) -> message::NewEvent {
        message::NewEvent {
            id: *self.id.as_bytes(),
            event_type: Text::from(self.event_type),
            content_type: u8::from(self.json),
            data: self.data,
            metadata: self.metadata,
        }
    }
}

/// A stored event.
///
/// ```
/// use quiver_client::{Bytes, Position, RecordedEvent, StreamVersion, Uuid};
/// // A projection's handler, tested with an event made as a read would deliver it.
/// #[derive(serde::Deserialize)]
/// struct Deposited { amount: u64 }
/// fn apply(balance: u64, event: &RecordedEvent) -> Result<u64, quiver_client::Error> {
///     Ok(match event.event_type.as_str() {
///         "Deposited" => balance + event.json::<Deposited>()?.amount,
///         _ => balance,
///     })
/// }
/// let event = RecordedEvent {
///     stream: "account-1".into(),
///     version: StreamVersion(1),
///     position: Position(1_207),
///     id: Uuid::new_v4(),
///     event_type: "Deposited".into(),
///     json: true,
///     data: Bytes::from_static(br#"{"amount":50}"#),
///     metadata: Bytes::new(),
///     created_us: 1_700_000_000_000_000,
/// };
/// assert_eq!(apply(25, &event).unwrap(), 75);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Its stream.
    pub stream: String,
    /// Version in the stream.
    pub version: StreamVersion,
    /// Position in `$all`.
    pub position: Position,
    /// Its id.
    pub id: Uuid,
    /// Its type.
    pub event_type: String,
    /// True for JSON data.
    pub json: bool,
    /// The payload.
    pub data: Bytes,
    /// User metadata.
    pub metadata: Bytes,
    /// When the server accepted it, µs since the Unix epoch.
    pub created_us: u64,
}

impl RecordedEvent {
    /// The event's data decoded from JSON as a `T`.
    ///
    /// ```
    /// # fn demo(event: quiver_client::RecordedEvent) -> Result<(), quiver_client::Error> {
    /// #[derive(serde::Deserialize)]
    /// struct Deposited { amount: u64 }
    /// let deposited: Deposited = event.json()?;
    /// # Ok(()) }
    /// ```
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.data).map_err(|e| {
            let what = format!(
                "event {} of '{}' (version {}, type {}) as JSON",
                self.id, self.stream, self.version, self.event_type
            );
            Error::decode(what, e)
        })
    }
}

/// What an append did.
///
/// ```
/// use quiver_client::{ExpectedVersion, Position, StreamVersion, WriteResult};
/// // What an append of two events to a new account answers.
/// let written = WriteResult {
///     next_expected_version: StreamVersion(1),
///     position_first: Position(300),
///     position_last: Position(301),
///     idempotent: false,
/// };
/// // The next write to the account expects it where this one left it.
/// let next = ExpectedVersion::from(written.next_expected_version);
/// assert_eq!(next, ExpectedVersion::Exact(1));
/// // The events of one append take consecutive positions in `$all`.
/// assert_eq!(written.position_last - written.position_first, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteResult {
    /// The (last) stream's version after the append: what the next write expects.
    pub next_expected_version: StreamVersion,
    /// Position of the first event.
    pub position_first: Position,
    /// Position of the last event.
    pub position_last: Position,
    /// True when these event ids were already stored: nothing was written again.
    pub idempotent: bool,
}

/// Where and how a stream read goes ([`Client::read_stream`]).
///
/// ```
/// use quiver_client::ReadStreamOptions;
/// // The newest ten events, newest first.
/// let newest = ReadStreamOptions::default().backward().max_count(10);
/// // From version 5 on.
/// let rest = ReadStreamOptions::default().from(5);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadStreamOptions {
    /// First version to read; `None`: the first (the last, backward).
    pub from: Option<StreamVersion>,
    /// Newest first.
    pub backward: bool,
    /// At most this many events.
    pub max_count: u64,
    /// A stream never written reads as empty instead of `Error::NotFound` (what a loader of
    /// an aggregate usually wants). A hard-deleted stream is still `Error::StreamDeleted`.
    pub missing_as_empty: bool,
}

impl Default for ReadStreamOptions {
    fn default() -> Self {
        ReadStreamOptions {
            from: None,
            backward: false,
            max_count: u64::MAX,
            missing_as_empty: false,
        }
    }
}

impl ReadStreamOptions {
    /// A stream never written reads as empty (see [`ReadStreamOptions::missing_as_empty`]).
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// use quiver_client::ReadStreamOptions;
    /// let events = client
    ///     .read_stream("account-new", ReadStreamOptions::default().missing_as_empty(true))
    ///     .await?
    ///     .collect()
    ///     .await?;
    /// assert!(events.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn missing_as_empty(mut self, on: bool) -> Self {
        self.missing_as_empty = on;
        self
    }

    /// Starts at this version.
    ///
    /// ```
    /// use quiver_client::{ReadStreamOptions, StreamVersion};
    /// assert_eq!(ReadStreamOptions::default().from(3).from, Some(StreamVersion(3)));
    /// ```
    pub fn from(mut self, at: impl Into<StreamVersion>) -> Self {
        self.from = Some(at.into());
        self
    }

    /// Reads newest first.
    ///
    /// ```
    /// assert!(quiver_client::ReadStreamOptions::default().backward().backward);
    /// ```
    pub fn backward(mut self) -> Self {
        self.backward = true;
        self
    }

    /// Reads at most `n` events.
    ///
    /// ```
    /// assert_eq!(quiver_client::ReadStreamOptions::default().max_count(2).max_count, 2);
    /// ```
    pub fn max_count(mut self, n: u64) -> Self {
        self.max_count = n;
        self
    }
}

/// Where and how a read of `$all` goes ([`Client::read_all`]), and which events it keeps.
///
/// ```
/// use quiver_client::ReadAllOptions;
/// // Every account event from position 1,000 on.
/// let accounts = ReadAllOptions::default().from(1_000).stream_prefix("account-");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadAllOptions {
    /// First position to read; `None`: the first (the last, backward).
    pub from: Option<Position>,
    /// Newest first.
    pub backward: bool,
    /// At most this many events.
    pub max_count: u64,
    /// Only event types starting with this.
    pub type_prefix: Option<String>,
    /// Only streams whose names start with this.
    pub stream_prefix: Option<String>,
}

impl Default for ReadAllOptions {
    fn default() -> Self {
        ReadAllOptions {
            from: None,
            backward: false,
            max_count: u64::MAX,
            type_prefix: None,
            stream_prefix: None,
        }
    }
}

impl ReadAllOptions {
    /// Starts at this position.
    ///
    /// ```
    /// use quiver_client::{Position, ReadAllOptions};
    /// assert_eq!(ReadAllOptions::default().from(9).from, Some(Position(9)));
    /// ```
    pub fn from(mut self, at: impl Into<Position>) -> Self {
        self.from = Some(at.into());
        self
    }

    /// Reads newest first.
    ///
    /// ```
    /// assert!(quiver_client::ReadAllOptions::default().backward().backward);
    /// ```
    pub fn backward(mut self) -> Self {
        self.backward = true;
        self
    }

    /// Reads at most `n` events.
    ///
    /// ```
    /// assert_eq!(quiver_client::ReadAllOptions::default().max_count(2).max_count, 2);
    /// ```
    pub fn max_count(mut self, n: u64) -> Self {
        self.max_count = n;
        self
    }

    /// Keeps event types with this prefix.
    ///
    /// ```
    /// let deposits = quiver_client::ReadAllOptions::default().type_prefix("Deposit");
    /// ```
    pub fn type_prefix(mut self, p: impl Into<String>) -> Self {
        self.type_prefix = Some(p.into());
        self
    }

    /// Keeps streams with this prefix.
    ///
    /// ```
    /// let accounts = quiver_client::ReadAllOptions::default().stream_prefix("account-");
    /// ```
    pub fn stream_prefix(mut self, p: impl Into<String>) -> Self {
        self.stream_prefix = Some(p.into());
        self
    }
}

/// Where a read starts on the wire.
fn read_from(at: Option<u64>, backward: bool) -> message::ReadFrom {
    match (at, backward) {
        (Some(v), _) => message::ReadFrom::At(v),
        (None, false) => message::ReadFrom::Start,
        (None, true) => message::ReadFrom::End,
    }
}

/// A stream's state.
///
/// ```
/// use quiver_client::{StreamInfo, StreamMetadata, StreamVersion};
/// // A line of an admin listing, from what `Client::stream_info` or `list_streams` reports.
/// fn describe(info: &StreamInfo) -> String {
///     match (info.hard_deleted, info.soft_deleted, info.current_version) {
///         (true, _, _) => format!("{}: closed for ever", info.name),
///         (_, true, _) => format!("{}: deleted, may be written again", info.name),
///         (_, _, Some(v)) => format!("{}: at version {v}", info.name),
///         (_, _, None) => format!("{}: no events", info.name),
///     }
/// }
/// let info = StreamInfo {
///     name: "account-1".into(),
///     current_version: Some(StreamVersion(4)),
///     soft_deleted: false,
///     hard_deleted: false,
///     metadata: StreamMetadata::default(),
/// };
/// assert_eq!(describe(&info), "account-1: at version 4");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// Its name.
    pub name: String,
    /// Version of its last event.
    pub current_version: Option<StreamVersion>,
    /// Soft-deleted (may be recreated).
    pub soft_deleted: bool,
    /// Hard-deleted (for ever).
    pub hard_deleted: bool,
    /// Max count, max age (µs), truncate-before and custom metadata.
    pub metadata: StreamMetadata,
}

/// Stream metadata.
///
/// ```
/// use quiver_client::StreamMetadata;
/// // A session stream that keeps its newest 1,000 events and nothing older than a day
/// // (set with `Client::set_metadata`).
/// let metadata = StreamMetadata {
///     max_count: Some(1_000),
///     max_age_us: Some(24 * 60 * 60 * 1_000_000),
///     ..StreamMetadata::default()
/// };
/// assert!(metadata.truncate_before.is_none());
/// assert!(metadata.custom.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamMetadata {
    /// Keep the newest N events.
    pub max_count: Option<u64>,
    /// Hide events older than this many µs.
    pub max_age_us: Option<u64>,
    /// Hide versions below this.
    pub truncate_before: Option<StreamVersion>,
    /// Opaque user metadata.
    pub custom: Bytes,
}

fn info(i: message::StreamInfo) -> StreamInfo {
    StreamInfo {
        name: i.stream.as_str().to_string(),
        current_version: i.current_version.map(StreamVersion),
        soft_deleted: i.deleted == 1,
        hard_deleted: i.deleted == 2,
        metadata: StreamMetadata {
            max_count: i.metadata.max_count,
            max_age_us: i.metadata.max_age_us,
            truncate_before: i.metadata.truncate_before.map(StreamVersion),
            custom: i.metadata.custom,
        },
    }
}

/// A connection to a Quiver server. Requests may run concurrently on one client: each is its
/// own QUIC stream.
/// Clones are cheap and share one connection.
///
/// ```no_run
/// # async fn demo() -> Result<(), quiver_client::Error> {
/// use quiver_client::{Client, ClientConfig, EventData, ExpectedVersion};
/// let client = Client::connect(ClientConfig::local("quiver-data")).await?;
/// // A clone shares the connection: hand one to each task.
/// let orders = client.clone();
/// let placing = tokio::spawn(async move {
///     let placed = EventData::json("OrderPlaced", r#"{"total":120}"#);
///     orders.append("order-17", ExpectedVersion::NoStream, vec![placed]).await
/// });
/// let opened = EventData::json("AccountOpened", r#"{"owner":"ada"}"#);
/// client.append("account-1", ExpectedVersion::NoStream, vec![opened]).await?;
/// placing.await.expect("the task ran")?;
/// client.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    endpoint: quinn::Endpoint,
    conn: Arc<tokio::sync::Mutex<quinn::Connection>>,
    max_frame: Arc<AtomicUsize>,
    timeout: Duration,
    /// Index in `addresses` of the node in use.
    at: Arc<AtomicUsize>,
    /// The nodes to try: those given, then those learned from `ClusterMembers`.
    addresses: Arc<std::sync::Mutex<Vec<SocketAddr>>>,
    /// The connection (stable id) the client last moved away from.
    moved_from: Arc<AtomicUsize>,
    /// Client addresses of cluster members, by node id, as last learned.
    members: Arc<std::sync::Mutex<std::collections::HashMap<u64, SocketAddr>>>,
    /// Asks the membership follower ([`follow_membership`]) to ask now: after a reconnect.
    refresh: Arc<tokio::sync::Notify>,
    /// Dropped with the last clone the caller holds: the membership follower then ends
    /// (it holds a clone of its own, with a sender of its own).
    alive: Arc<tokio::sync::watch::Sender<()>>,
    config: ClientConfig,
}

/// How often a client of a cluster asks for the membership, to know the nodes it may move
/// to when the ones it uses leave (and after each reconnect).
const MEMBERSHIP_REFRESH: Duration = Duration::from_secs(3);

/// Keeps the nodes `client` moves among in step with the cluster's membership: the
/// addresses it was given, then every member's client address as the cluster reports it
/// (members removed are dropped again). So a client, or a subscription, outlives the
/// replacement of every node it was given. Asks over the live connection only, never
/// reconnects by itself, and ends when the first answer says the server is a single node
/// or when the caller's last clone of the client is dropped.
async fn follow_membership(client: Client, mut closed: tokio::sync::watch::Receiver<()>) {
    loop {
        let live = client.conn.lock().await.close_reason().is_none();
        if live {
            match client.open_once(&Request::ClusterMembers).await {
                Ok((Response::Members { members, .. }, _, _)) => client.learn(&members),
                Ok((
                    Response::Error {
                        code: ErrorCode::InvalidRequest,
                        ..
                    },
                    _,
                    _,
                )) => return,
                _ => {}
            }
        }
        tokio::select! {
            _ = closed.changed() => return,
            _ = client.refresh.notified() => {}
            _ = tokio::time::sleep(MEMBERSHIP_REFRESH) => {}
        }
    }
}

/// A cluster member, as [`Client::cluster_members`] reports it.
///
/// ```
/// use quiver_client::ClusterMember;
/// // The voters a client can be pointed at, from what `Client::cluster_members` reports.
/// fn reachable_voters(members: &[ClusterMember]) -> Vec<u64> {
///     members.iter().filter(|m| m.voter && m.client.is_some()).map(|m| m.id).collect()
/// }
/// let members = [
///     ClusterMember { id: 1, voter: true, client: Some("10.0.0.1:7600".parse().unwrap()) },
///     ClusterMember { id: 2, voter: true, client: None },
///     ClusterMember { id: 3, voter: false, client: Some("10.0.0.3:7600".parse().unwrap()) },
/// ];
/// assert_eq!(reachable_voters(&members), [1]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMember {
    /// Its node id.
    pub id: u64,
    /// A voter (else a learner).
    pub voter: bool,
    /// Where its clients connect, if the node asked knows.
    pub client: Option<SocketAddr>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a client reconnects when its connection is gone (a server restarted, a node died, a
/// network blip): before a request, and when a subscription resubscribes. Each try goes to
/// the next address; the wait between tries starts at `delay_min` and doubles up to
/// `delay_max`.
///
/// ```
/// use std::time::Duration;
/// use quiver_client::{ClientConfig, RetryPolicy};
/// // Keep trying for about a minute: a subscriber that should outlast a long restart.
/// let patient = RetryPolicy { tries: 40, delay_max: Duration::from_secs(2), ..RetryPolicy::default() };
/// let config = ClientConfig::local("quiver-data").retry(patient);
/// assert_eq!(config.retry.tries, 40);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries before giving up (at least 1).
    pub tries: u32,
    /// The first wait.
    pub delay_min: Duration,
    /// The longest wait.
    pub delay_max: Duration,
}

impl Default for RetryPolicy {
    /// 6 tries, 50 ms doubling up to 2 s: about 3 s of waiting, plus each try's connect time.
    fn default() -> Self {
        RetryPolicy {
            tries: 6,
            delay_min: Duration::from_millis(50),
            delay_max: Duration::from_secs(2),
        }
    }
}

/// Tries of one request across the nodes of a cluster: enough to outlast an election
/// (about 1–3 s) with the waits of [`MOVE_DELAY_MIN`] doubling up to [`MOVE_DELAY_MAX`].
const MOVE_TRIES_MAX: u32 = 12;
/// Longest wait for a connection to one node when there are others to try.
const CONNECT_TIMEOUT_CLUSTER: Duration = Duration::from_secs(2);
/// First wait before a request moves to the next node.
const MOVE_DELAY_MIN: Duration = Duration::from_millis(50);
/// Longest wait before a request moves to the next node.
const MOVE_DELAY_MAX: Duration = Duration::from_secs(1);

/// One request of the connection's set-up on a stream of its own, and its answer.
async fn exchange(
    conn: &quinn::Connection,
    req: &Request,
    timeout: Duration,
    what: &str,
) -> Result<Response, Error> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| Error::transport("opening a stream", e))?;
    let mut out = BytesMut::new();
    req.encode(&mut out);
    send.write_all(&out)
        .await
        .map_err(|e| Error::transport("sending the request", e))?;
    send.finish()
        .map_err(|e| Error::transport("sending the request", e))?;
    let mut buf = BytesMut::new();
    let read = read_frame(&mut recv, &mut buf, RESPONSE_PAYLOAD_BYTES_MAX);
    let frame = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| Error::Timeout)?
        .map_err(Error::read)?
        .ok_or_else(|| Error::protocol(format!("the server closed the {what} stream")))?;
    Response::decode(&frame).map_err(Error::response)
}

/// Connects to `addr` and says `Hello`; returns the connection and the server's frame limit.
async fn handshake(
    endpoint: &quinn::Endpoint,
    config: &ClientConfig,
    addr: SocketAddr,
) -> Result<(quinn::Connection, usize), Error> {
    let connecting = endpoint
        .connect(addr, &config.server_name)
        .map_err(|e| Error::connect(format!("to {addr}"), e))?;
    // A node that is down does not answer at all: with other nodes to try, do not spend
    // the whole request deadline on it.
    let limit = match config.others.is_empty() {
        true => config.timeout,
        false => config.timeout.min(CONNECT_TIMEOUT_CLUSTER),
    };
    let conn = tokio::time::timeout(limit, connecting)
        .await
        .map_err(|_| Error::Timeout)?
        .map_err(|e| Error::connect(format!("to {addr}"), e))?;
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
        client: Text::new(concat!("quiver-client ", env!("CARGO_PKG_VERSION"))),
        token: Bytes::from(config.token.clone().unwrap_or_default()),
    };
    let max_frame = match exchange(&conn, &hello, config.timeout, "Hello").await? {
        Response::HelloOk { max_frame, .. } => max_frame as usize,
        other => return Err(Error::unexpected(other)),
    };
    if config.follower_reads {
        // Every connection, reconnections included, says it again.
        let options = Request::SetOptions {
            follower_reads: true,
        };
        match exchange(&conn, &options, config.timeout, "SetOptions").await? {
            Response::Done { .. } => {}
            other => return Err(Error::unexpected(other)),
        }
    }
    Ok((conn, max_frame))
}

impl Client {
    /// Connects, checks the protocol version and presents the token.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use quiver_client::{Client, ClientConfig};
    /// let client = Client::connect(ClientConfig::from_url("quiver://127.0.0.1:7600")?).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(config: ClientConfig) -> Result<Client, Error> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = Vec::new();
        // With the system's roots the CA file is optional: a server whose certificate a
        // public CA signed needs none.
        if !config.system_roots || config.ca_file.exists() {
            let from_file = rustls::pki_types::CertificateDer::pem_file_iter(&config.ca_file)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    let what = format!("reading the CA file {}", config.ca_file.display());
                    Error::connect(what, e)
                })?;
            roots.extend(from_file);
        }
        if config.system_roots {
            let native = rustls_native_certs::load_native_certs();
            if native.certs.is_empty() {
                let context = "no system trust roots could be loaded".to_string();
                return Err(match native.errors.into_iter().next() {
                    Some(e) => Error::connect(context, e),
                    None => Error::Connect {
                        context,
                        source: None,
                    },
                });
            }
            roots.extend(native.certs);
        }
        let addresses = config.addresses();
        // An IPv6 server needs an IPv6 socket (dual-stack: IPv4 servers stay reachable).
        let bind = if addresses.iter().any(SocketAddr::is_ipv6) {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        let endpoint = quiver_net::quic::client_endpoint_on(
            &roots,
            bind.parse().expect("a valid wildcard address"),
        )
        .map_err(|e| Error::connect("setting up the QUIC endpoint", e))?;
        let mut first = None;
        for (at, addr) in addresses.iter().enumerate() {
            match handshake(&endpoint, &config, *addr).await {
                Ok(c) => {
                    first = Some((at, c));
                    break;
                }
                Err(e @ (Error::Unauthenticated(_) | Error::UnsupportedVersion(_))) => {
                    return Err(e)
                }
                Err(e) if at + 1 == addresses.len() => return Err(e),
                Err(_) => {}
            }
        }
        let (at, (conn, max_frame)) = first.expect("at least one address was tried");
        let client = Client {
            endpoint,
            conn: Arc::new(tokio::sync::Mutex::new(conn)),
            max_frame: Arc::new(AtomicUsize::new(max_frame)),
            timeout: config.timeout,
            at: Arc::new(AtomicUsize::new(at)),
            addresses: Arc::new(std::sync::Mutex::new(addresses)),
            members: Arc::default(),
            moved_from: Arc::new(AtomicUsize::new(usize::MAX)),
            refresh: Arc::default(),
            alive: Arc::new(tokio::sync::watch::channel(()).0),
            config,
        };
        let follower = Client {
            alive: Arc::new(tokio::sync::watch::channel(()).0),
            ..client.clone()
        };
        tokio::spawn(follow_membership(follower, client.alive.subscribe()));
        Ok(client)
    }

    /// The addresses this client moves among, in the order it tries them: those it was
    /// given, then those of cluster members it has learned of (it asks the cluster every
    /// few seconds and after each reconnect).
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) {
    /// for addr in client.known_addresses() {
    ///     println!("may move to {addr}");
    /// }
    /// # }
    /// ```
    pub fn known_addresses(&self) -> Vec<SocketAddr> {
        lock(&self.addresses).clone()
    }

    /// Takes a membership as the cluster reported it: the members' client addresses, by
    /// id, and the nodes to move among (given first, then the members'), keeping the node
    /// in use where it still is one of them.
    fn learn(&self, members: &[message::Member]) {
        let learned: Vec<(u64, SocketAddr)> = members
            .iter()
            .filter_map(|m| Some((m.id, m.client.as_str().parse().ok()?)))
            .collect();
        {
            let mut known = lock(&self.members);
            known.clear();
            known.extend(learned.iter().copied());
        }
        let mut next = self.config.addresses();
        for (_, addr) in &learned {
            if !next.contains(addr) {
                next.push(*addr);
            }
        }
        let mut addresses = lock(&self.addresses);
        if *addresses == next {
            return;
        }
        let current = addresses[self.at.load(Ordering::Relaxed) % addresses.len()];
        *addresses = next;
        if let Some(at) = addresses.iter().position(|a| *a == current) {
            self.at.store(at, Ordering::Relaxed);
        }
    }

    /// A stream on the current connection; if the connection is gone (server restarted,
    /// network blip), reconnects with backoff first. Nothing has been sent at this point,
    /// so reconnecting never repeats a request.
    async fn stream(&self) -> Result<(quinn::SendStream, quinn::RecvStream), Error> {
        let current = self.conn.lock().await.clone();
        if current.close_reason().is_none() {
            if let Ok(s) = current.open_bi().await {
                return Ok(s);
            }
        }
        let mut conn = self.conn.lock().await;
        if conn.stable_id() != current.stable_id() && conn.close_reason().is_none() {
            // Another request reconnected while this one waited.
            return conn
                .open_bi()
                .await
                .map_err(|e| Error::transport("opening a stream", e));
        }
        let policy = self.config.retry;
        let mut delay = policy.delay_min;
        let mut last = None;
        for _ in 0..policy.tries.max(1) {
            let addr = self.address();
            match handshake(&self.endpoint, &self.config, addr).await {
                Ok((fresh, max_frame)) => {
                    self.max_frame.store(max_frame, Ordering::Relaxed);
                    *conn = fresh;
                    // A node that is back, or another one: the membership may have moved.
                    self.refresh.notify_one();
                    return conn
                        .open_bi()
                        .await
                        .map_err(|e| Error::transport("opening a stream", e));
                }
                // Refusals are final: retrying with the same credentials cannot help.
                Err(e @ (Error::Unauthenticated(_) | Error::UnsupportedVersion(_))) => {
                    return Err(e)
                }
                Err(e) => {
                    last = Some(e);
                    // In a cluster, the next node may answer.
                    self.at.fetch_add(1, Ordering::Relaxed);
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(policy.delay_max);
        }
        Err(last.unwrap_or(Error::Timeout))
    }

    /// The address of the node in use.
    fn address(&self) -> SocketAddr {
        let addresses = lock(&self.addresses);
        addresses[self.at.load(Ordering::Relaxed) % addresses.len()]
    }

    /// After `NotLeader` naming `leader`: makes the leader's client address the one in use
    /// (asking the refusing node for the members if it is not known yet), so the next try
    /// goes straight there, even if it was never given. False when no address is known.
    async fn follow(&self, leader: u64, from: usize) -> bool {
        let known = lock(&self.members).get(&leader).copied();
        let addr = match known {
            Some(a) => Some(a),
            None => {
                let learned = match self.open_once(&Request::ClusterMembers).await {
                    Ok((Response::Members { members, .. }, _, _)) => members,
                    _ => return false,
                };
                self.learn(&learned);
                lock(&self.members).get(&leader).copied()
            }
        };
        let Some(addr) = addr else { return false };
        {
            let mut addresses = lock(&self.addresses);
            let at = match addresses.iter().position(|a| *a == addr) {
                Some(at) => at,
                None => {
                    addresses.push(addr);
                    addresses.len() - 1
                }
            };
            self.at.store(at, Ordering::Relaxed);
        }
        let conn = self.conn.lock().await;
        if conn.stable_id() == from && conn.close_reason().is_none() {
            conn.close(0u32.into(), b"following the leader");
        }
        true
    }

    /// Sends one request and returns the first response frame, with the stream's receive
    /// side for streamed reads. Given several addresses, a request refused as `NotLeader` or
    /// by a node that cannot reach it, or that could not be sent, moves on to the next node
    /// and is sent again (after a short wait: an election may be under way); so is a read
    /// or an append answered `Unavailable` or cut off, or timed out: an append carries its
    /// event ids, so a second try of one that was stored answers `idempotent` and stores
    /// nothing twice. Other writes are not sent twice once they may have been applied.
    async fn open(&self, req: &Request) -> Result<(Response, quinn::RecvStream, BytesMut), Error> {
        let mut delay = MOVE_DELAY_MIN;
        let mut tries = 0;
        loop {
            let conn = self.conn.lock().await.stable_id();
            let outcome = self.open_once(req).await;
            let answer = match &outcome {
                Ok((Response::Error { code, .. }, _, _)) => Err(Some(*code)),
                Ok(_) => Ok(()),
                Err(e) => Err(e.moving_code()),
            };
            if tries < MOVE_TRIES_MAX {
                if let Ok((
                    Response::Error {
                        code: ErrorCode::NotLeader,
                        actual: Some(leader),
                        ..
                    },
                    _,
                    _,
                )) = &outcome
                {
                    if self.follow(*leader, conn).await {
                        tries += 1;
                        continue;
                    }
                }
            }
            if !self.moves(req, answer) || tries >= MOVE_TRIES_MAX {
                return outcome;
            }
            tries += 1;
            self.move_on(conn).await;
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MOVE_DELAY_MAX);
        }
    }

    /// Whether a request answered so (`Err(None)`: cut off, or no answer in time) is sent
    /// again to the next node; see [`Client::open`].
    fn moves(&self, req: &Request, answer: Result<(), Option<ErrorCode>>) -> bool {
        let Err(code) = answer else { return false };
        let repeatable = !matches!(
            req,
            Request::Delete { .. }
                | Request::SetMetadata { .. }
                | Request::PersistentCreate { .. }
                | Request::PersistentUpdate { .. }
                | Request::PersistentDelete { .. }
                | Request::PersistentReplayParked { .. }
                | Request::Scavenge
                // A membership change sent again after it took effect is refused ("not a
                // member"), which would hide that it happened: the caller gets the unknown
                // outcome instead, and asks `cluster_members`.
                | Request::ClusterAdd { .. }
                | Request::ClusterRemove { .. }
                | Request::ClusterTransfer { .. }
        );
        let moves = match code {
            Some(ErrorCode::NotLeader) => true,
            Some(ErrorCode::Unavailable) | None => repeatable,
            Some(_) => false,
        };
        moves && lock(&self.addresses).len() > 1
    }

    /// Leaves the node of connection `from` for the next address (unless another request
    /// moved already).
    async fn move_on(&self, from: usize) {
        let conn = self.conn.lock().await;
        // Once per connection: requests refused (or cut off) together move the client one
        // node on, whether the connection is still open or already died with its node.
        if conn.stable_id() == from && self.moved_from.swap(from, Ordering::Relaxed) != from {
            self.at.fetch_add(1, Ordering::Relaxed);
            conn.close(0u32.into(), b"moving to another node");
        }
    }

    /// Sends one request on a fresh stream and returns the first response frame, with the
    /// stream's receive side for streamed reads.
    async fn open_once(
        &self,
        req: &Request,
    ) -> Result<(Response, quinn::RecvStream, BytesMut), Error> {
        // Stage spans (`stage.client.*`, TRACE): each measures from its creation to its
        // drop; with no subscriber at TRACE they cost a level check.
        let opening = tracing::trace_span!("stage.client.stream");
        let (mut send, mut recv) = self.stream().await?;
        drop(opening);
        let max_frame = self.max_frame.load(Ordering::Relaxed);
        let encoding = tracing::trace_span!("stage.client.encode");
        let mut out = BytesMut::new();
        req.encode(&mut out);
        drop(encoding);
        let bytes = out.len() - quiver_net::frame::FRAME_HEADER_BYTES;
        if bytes > max_frame {
            return Err(Error::TooLarge {
                bytes,
                max: max_frame,
            });
        }
        let sending = tracing::trace_span!("stage.client.send");
        send.write_all(&out)
            .await
            .map_err(|e| Error::transport("sending the request", e))?;
        send.finish()
            .map_err(|e| Error::transport("sending the request", e))?;
        drop(sending);
        let waiting = tracing::trace_span!("stage.client.wait");
        let mut buf = BytesMut::new();
        let read = read_frame(&mut recv, &mut buf, RESPONSE_PAYLOAD_BYTES_MAX);
        let frame = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| Error::Timeout)?
            .map_err(Error::read)?
            .ok_or_else(|| Error::protocol("the server closed the stream without answering"))?;
        drop(waiting);
        let decoding = tracing::trace_span!("stage.client.decode");
        let resp = Response::decode(&frame).map_err(Error::response)?;
        drop(decoding);
        Ok((resp, recv, buf))
    }

    async fn call(&self, req: &Request) -> Result<Response, Error> {
        let (resp, _, _) = self.open(req).await?;
        match resp {
            Response::Error {
                code,
                message,
                actual,
            } => Err(Error::from_wire(code, message, actual)),
            r => Ok(r),
        }
    }

    /// Appends events to one stream, all or nothing.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// use quiver_client::{EventData, ExpectedVersion};
    /// let opened = EventData::json("AccountOpened", r#"{"owner":"ada"}"#);
    /// let written = client.append("account-1", ExpectedVersion::NoStream, vec![opened]).await?;
    /// assert_eq!(written.next_expected_version, quiver_client::StreamVersion(0));
    /// # Ok(()) }
    /// ```
    pub async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<WriteResult, Error> {
        self.append_multi(vec![(stream.to_string(), expected, events)])
            .await
    }

    /// Appends to several streams in one atomic write, each with its own expected version.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// use quiver_client::{EventData, ExpectedVersion};
    /// // A transfer: both legs, or neither.
    /// client.append_multi(vec![
    ///     ("account-1".into(), ExpectedVersion::Exact(4), vec![EventData::json("Debited", "{}")]),
    ///     ("account-2".into(), ExpectedVersion::Any, vec![EventData::json("Credited", "{}")]),
    /// ])
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn append_multi(
        &self,
        writes: Vec<(String, ExpectedVersion, Vec<EventData>)>,
    ) -> Result<WriteResult, Error> {
        // The whole call as the application sees it (`stage.client.append`), and the
        // conversion of its events to the wire's types (`stage.client.build`).
        let _append = tracing::trace_span!("stage.client.append");
        let building = tracing::trace_span!("stage.client.build");
        let checks: Vec<(String, ExpectedVersion)> =
            writes.iter().map(|(s, e, _)| (s.clone(), *e)).collect();
        let writes = writes
            .into_iter()
            .map(|(stream, expected, events)| message::StreamWrite {
                stream: Text::from(stream),
                expected: expected.wire(),
                events: events.into_iter().map(EventData::wire).collect(),
            })
            .collect();
        drop(building);
        let answer = match self.call(&Request::Append { writes }).await {
            Err(e) => return Err(name_conflict(e, &checks)),
            Ok(answer) => answer,
        };
        match answer {
            Response::Appended {
                next_expected_version,
                position_first,
                position_last,
                idempotent,
                ..
            } => Ok(WriteResult {
                next_expected_version: StreamVersion(next_expected_version),
                position_first: Position(position_first),
                position_last: Position(position_last),
                idempotent,
            }),
            other => Err(Error::unexpected(other)),
        }
    }

    /// Reads a stream; events arrive as the server streams them.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// use quiver_client::ReadStreamOptions;
    /// let mut read = client.read_stream("account-1", ReadStreamOptions::default()).await?;
    /// while let Some(event) = read.next().await? {
    ///     println!("{} {}", event.version, event.event_type);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn read_stream(
        &self,
        stream: &str,
        options: ReadStreamOptions,
    ) -> Result<Events, Error> {
        let req = Request::ReadStream {
            stream: Text::from(stream),
            from: read_from(options.from.map(u64::from), options.backward),
            backward: options.backward,
            max_count: options.max_count,
        };
        match self.read(req).await {
            Err(Error::NotFound(_)) if options.missing_as_empty => Ok(Events {
                recv: None,
                buf: BytesMut::new(),
                pending: VecDeque::new(),
                done: true,
                timeout: self.timeout,
            }),
            other => other,
        }
    }

    /// Reads `$all`, optionally filtered by event-type and stream-name prefixes.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// use quiver_client::ReadAllOptions;
    /// let accounts = client
    ///     .read_all(ReadAllOptions::default().stream_prefix("account-"))
    ///     .await?
    ///     .collect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn read_all(&self, options: ReadAllOptions) -> Result<Events, Error> {
        let req = Request::ReadAll {
            from: read_from(options.from.map(u64::from), options.backward),
            backward: options.backward,
            max_count: options.max_count,
            event_type: options
                .type_prefix
                .clone()
                .map(|p| Match::Prefix(Text::from(p))),
            stream: options
                .stream_prefix
                .clone()
                .map(|p| Match::Prefix(Text::from(p))),
        };
        self.read(req).await
    }

    async fn read(&self, req: Request) -> Result<Events, Error> {
        let (first, recv, buf) = self.open(&req).await?;
        let mut events = Events {
            recv: Some(recv),
            buf,
            pending: VecDeque::new(),
            done: false,
            timeout: self.timeout,
        };
        events.take(first)?;
        Ok(events)
    }

    /// Subscribes to `$all`: everything committed from `options.from` on (catch-up), then
    /// each new commit as it happens (live), in position order, with no gap and no duplicate
    /// between the two. Resume after a disconnect from the last position seen plus one, or
    /// from the last checkpoint.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// use quiver_client::SubscribeAllOptions;
    /// let mut sub = client
    ///     .subscribe_all(SubscribeAllOptions::default().stream_prefix("account-"))
    ///     .await?;
    /// while let Some(message) = sub.next().await? {
    ///     println!("{message:?}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_all(
        &self,
        options: SubscribeAllOptions,
    ) -> Result<Subscription<Position>, Error> {
        let req = Request::Subscribe {
            stream: None,
            from: subscribe_from(options.from.map(u64::from), options.from_end),
            event_type: filter(&options.type_prefix, &options.type_regex),
            stream_filter: filter(&options.stream_prefix, &options.stream_regex),
            checkpoint_every: options.checkpoint_every,
            payload: wire_payload(&options.payload),
        };
        self.subscription(req).await
    }

    /// Subscribes to one stream from `options.from` (a version), catch-up then live.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// use quiver_client::{SubscribeStreamOptions, SubscriptionMessage};
    /// let mut sub = client
    ///     .subscribe_stream("account-1", SubscribeStreamOptions::default())
    ///     .await?;
    /// while let Some(message) = sub.next().await? {
    ///     match message {
    ///         SubscriptionMessage::Event(e) => println!("{} {}", e.version, e.event_type),
    ///         SubscriptionMessage::CaughtUp { at } => println!("live from version {at}"),
    ///         _ => {}
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_stream(
        &self,
        stream: &str,
        options: SubscribeStreamOptions,
    ) -> Result<Subscription<StreamVersion>, Error> {
        let req = Request::Subscribe {
            stream: Some(Text::from(stream)),
            from: subscribe_from(options.from.map(u64::from), options.from_end),
            event_type: None,
            stream_filter: None,
            checkpoint_every: 0,
            payload: wire_payload(&options.payload),
        };
        self.subscription(req).await
    }

    async fn subscription<P: Point>(&self, req: Request) -> Result<Subscription<P>, Error> {
        let (first, recv, buf) = self.open(&req).await?;
        let mut sub = Subscription {
            client: self.clone(),
            request: req,
            resume: None,
            delivered: None,
            recv,
            buf,
            pending: VecDeque::new(),
        };
        sub.take(first)?;
        Ok(sub)
    }

    /// A stream's state; `None` for a stream never written.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// match client.stream_info("account-1").await? {
    ///     None => println!("never written"),
    ///     Some(info) => println!("{info:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn stream_info(&self, stream: &str) -> Result<Option<StreamInfo>, Error> {
        match self
            .call(&Request::StreamInfo {
                stream: Text::from(stream),
            })
            .await?
        {
            Response::StreamInfo(i) => Ok(i.map(info)),
            other => Err(Error::unexpected(other)),
        }
    }

    /// Streams whose names start with `prefix`, after `after`, at most `limit`.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// // Every account stream, a page of 100 at a time.
    /// let mut after: Option<String> = None;
    /// loop {
    ///     let page = client.list_streams("account-", after.as_deref(), 100).await?;
    ///     for stream in &page {
    ///         println!("{} at {:?}", stream.name, stream.current_version);
    ///     }
    ///     match page.last() {
    ///         Some(last) if page.len() == 100 => after = Some(last.name.clone()),
    ///         _ => break,
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StreamInfo>, Error> {
        let req = Request::ListStreams {
            prefix: Text::from(prefix),
            after: after.map(Text::from),
            limit,
        };
        match self.call(&req).await? {
            Response::Streams(list) => Ok(list.into_iter().map(info).collect()),
            other => Err(Error::unexpected(other)),
        }
    }

    /// Replaces a stream's metadata.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// use quiver_client::StreamVersion;
    /// // The account's history before its year-end snapshot (version 500) is no longer read.
    /// // The metadata is replaced whole: start from what the stream has.
    /// let info = client.stream_info("account-1").await?;
    /// let mut metadata = info.map(|i| i.metadata).unwrap_or_default();
    /// metadata.truncate_before = Some(StreamVersion(500));
    /// client.set_metadata("account-1", metadata).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_metadata(&self, stream: &str, metadata: StreamMetadata) -> Result<(), Error> {
        let metadata = message::Metadata {
            max_count: metadata.max_count,
            max_age_us: metadata.max_age_us,
            truncate_before: metadata.truncate_before.map(u64::from),
            custom: metadata.custom,
        };
        self.done(Request::SetMetadata {
            stream: Text::from(stream),
            metadata,
        })
        .await
    }

    /// Soft-deletes a stream: hidden, may be recreated, versions continue.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// use quiver_client::ExpectedVersion;
    /// // A cart the customer abandoned, read up to version 2: hide it, unless it changed since.
    /// client.delete_stream("cart-17", ExpectedVersion::Exact(2)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
    ) -> Result<(), Error> {
        let req = Request::Delete {
            stream: Text::from(stream),
            expected: expected.wire(),
            hard: false,
        };
        self.done(req).await
    }

    /// Hard-deletes a stream: reads and appends fail for ever.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// use quiver_client::{Error, EventData, ExpectedVersion};
    /// // A closed account must never be written again, whatever its version.
    /// client.tombstone_stream("account-1", ExpectedVersion::Any).await?;
    /// let late = EventData::json("Deposited", r#"{"amount":5}"#);
    /// let refused = client.append("account-1", ExpectedVersion::Any, vec![late]).await;
    /// assert!(matches!(refused, Err(Error::StreamDeleted(_))));
    /// # Ok(()) }
    /// ```
    pub async fn tombstone_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
    ) -> Result<(), Error> {
        let req = Request::Delete {
            stream: Text::from(stream),
            expected: expected.wire(),
            hard: true,
        };
        self.done(req).await
    }

    /// Stores a snapshot of `stream` at `version`.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// client.put_snapshot("account-1", 41, r#"{"balance":75}"#).await?;
    /// let (version, state) = client.newest_snapshot("account-1").await?.expect("just stored");
    /// assert_eq!(version, quiver_client::StreamVersion(41));
    /// # Ok(()) }
    /// ```
    pub async fn put_snapshot(
        &self,
        stream: &str,
        version: impl Into<StreamVersion>,
        data: impl Into<Bytes>,
    ) -> Result<(), Error> {
        let req = Request::SnapshotPut {
            stream: Text::from(stream),
            version: version.into().0,
            data: data.into(),
        };
        self.done(req).await
    }

    /// The snapshot at exactly `version`.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// if let Some(state) = client.get_snapshot("account-1", 41).await? {
    ///     println!("{} bytes", state.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get_snapshot(
        &self,
        stream: &str,
        version: impl Into<StreamVersion>,
    ) -> Result<Option<Bytes>, Error> {
        self.snapshot(stream, version.into().0, false)
            .await
            .map(|s| s.map(|(_, d)| d))
    }

    /// The newest snapshot of `stream`, with its version (`None`: it has none).
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// use quiver_client::ReadStreamOptions;
    /// // Load an aggregate: its newest snapshot, then only the events after it.
    /// let (from, _state) = match client.newest_snapshot("account-1").await? {
    ///     Some((version, state)) => (version.next(), Some(state)),
    ///     None => (Default::default(), None),
    /// };
    /// let rest = client
    ///     .read_stream("account-1", ReadStreamOptions::default().from(from))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn newest_snapshot(
        &self,
        stream: &str,
    ) -> Result<Option<(StreamVersion, Bytes)>, Error> {
        self.snapshot(stream, u64::MAX, true).await
    }

    /// The newest snapshot at or below `version`, with its version.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// // The state as it was at version 100 at the latest.
    /// let then = client.latest_snapshot("account-1", 100).await?;
    /// # Ok(()) }
    /// ```
    pub async fn latest_snapshot(
        &self,
        stream: &str,
        version: impl Into<StreamVersion>,
    ) -> Result<Option<(StreamVersion, Bytes)>, Error> {
        self.snapshot(stream, version.into().0, true).await
    }

    async fn snapshot(
        &self,
        stream: &str,
        version: u64,
        latest: bool,
    ) -> Result<Option<(StreamVersion, Bytes)>, Error> {
        match self
            .call(&Request::SnapshotGet {
                stream: Text::from(stream),
                version,
                latest,
            })
            .await?
        {
            Response::Snapshot(s) => Ok(s.map(|(_, v, d)| (StreamVersion(v), d))),
            other => Err(Error::unexpected(other)),
        }
    }

    /// Versions at which `stream` has snapshots, oldest first.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// for version in client.list_snapshots("account-1").await? {
    ///     println!("a snapshot at version {version}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_snapshots(&self, stream: &str) -> Result<Vec<StreamVersion>, Error> {
        match self
            .call(&Request::SnapshotList {
                stream: Text::from(stream),
            })
            .await?
        {
            Response::SnapshotVersions(v) => Ok(v.into_iter().map(StreamVersion).collect()),
            other => Err(Error::unexpected(other)),
        }
    }

    /// Removes a snapshot.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// client.delete_snapshot("account-1", 41).await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_snapshot(
        &self,
        stream: &str,
        version: impl Into<StreamVersion>,
    ) -> Result<(), Error> {
        self.done(Request::SnapshotDelete {
            stream: Text::from(stream),
            version: version.into().0,
        })
        .await
    }

    /// Reclaims the space of deleted and truncated events; returns the bytes reclaimed.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// // After closing old accounts and truncating long streams, take the disk space back.
    /// let reclaimed = client.scavenge().await?;
    /// println!("reclaimed {} MiB", reclaimed >> 20);
    /// # Ok(()) }
    /// ```
    pub async fn scavenge(&self) -> Result<u64, Error> {
        match self.call(&Request::Scavenge).await? {
            Response::Scavenged {
                bytes_reclaimed, ..
            } => Ok(bytes_reclaimed),
            other => Err(Error::unexpected(other)),
        }
    }

    /// The server's store id, commit position and stream count.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// use quiver_client::SubscribeAllOptions;
    /// let status = client.status().await?;
    /// println!("store {}: {} streams", status.store_id, status.streams);
    /// // Only what is committed from now on, with "now" known (to record it, say).
    /// let now = status.commit_position;
    /// let live = client.subscribe_all(SubscribeAllOptions::default().from(now)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn status(&self) -> Result<ServerStatus, Error> {
        match self.call(&Request::Status).await? {
            Response::Status {
                store_id,
                commit_position,
                streams,
                ..
            } => Ok(ServerStatus {
                store_id: store_id.as_str().to_string(),
                commit_position: Position(commit_position),
                streams,
            }),
            other => Err(Error::unexpected(other)),
        }
    }

    async fn done(&self, req: Request) -> Result<(), Error> {
        match self.call(&req).await? {
            Response::Done { .. } => Ok(()),
            other => Err(Error::unexpected(other)),
        }
    }

    /// Creates a persistent subscription group. Fails with [`Error::AlreadyExists`] if a
    /// group of that name exists.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// use quiver_client::PersistentDefinition;
    /// client.create_persistent(&PersistentDefinition::stream("billing", "account-1")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_persistent(&self, definition: &PersistentDefinition) -> Result<(), Error> {
        self.done(Request::PersistentCreate {
            definition: Text::new(definition_json(definition)?),
        })
        .await
    }

    /// Changes a group's settings (retries, timeout, strategy, max in flight); its target
    /// and start cannot change. Fails with [`Error::NotFound`] if there is no such group.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// // Invoices take up to a minute to issue: wait longer before delivering one again, and
    /// // park it after three tries. Target and start stay as the group has them.
    /// let definition = client
    ///     .persistent_info("billing")
    ///     .await?
    ///     .definition
    ///     .message_timeout_ms(60_000)
    ///     .max_retries(3);
    /// client.update_persistent(&definition).await?;
    /// # Ok(()) }
    /// ```
    pub async fn update_persistent(&self, definition: &PersistentDefinition) -> Result<(), Error> {
        self.done(Request::PersistentUpdate {
            definition: Text::new(definition_json(definition)?),
        })
        .await
    }

    /// Deletes a group: its consumers are disconnected and its state is dropped.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// // The old billing service is retired: disconnect its consumers and drop its state.
    /// client.delete_persistent("billing-v1").await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_persistent(&self, group: &str) -> Result<(), Error> {
        self.done(Request::PersistentDelete {
            group: Text::from(group),
        })
        .await
    }

    /// Every group's state, by name.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// for group in client.list_persistent().await? {
    ///     println!(
    ///         "{}: {} consumers, {} in flight, {} waiting, {} parked",
    ///         group.definition.name,
    ///         group.consumers,
    ///         group.in_flight,
    ///         group.waiting,
    ///         group.parked.len()
    ///     );
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_persistent(&self) -> Result<Vec<PersistentInfo>, Error> {
        match self.call(&Request::PersistentList).await? {
            Response::PersistentGroups(json) => serde_json::from_str(json.as_str())
                .map_err(|e| Error::protocol(format!("group list: {e}"))),
            other => Err(Error::unexpected(other)),
        }
    }

    /// One group's state.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// let billing = client.persistent_info("billing").await?;
    /// if billing.consumers == 0 {
    ///     println!("nobody is billing; {} events wait", billing.waiting);
    /// }
    /// for position in &billing.parked {
    ///     println!("parked: the event at {position}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn persistent_info(&self, group: &str) -> Result<PersistentInfo, Error> {
        let req = Request::PersistentInfo {
            group: Text::from(group),
        };
        match self.call(&req).await? {
            Response::PersistentInfo(json) => serde_json::from_str(json.as_str())
                .map_err(|e| Error::protocol(format!("group info: {e}"))),
            other => Err(Error::unexpected(other)),
        }
    }

    /// Delivers the group's parked events again (with a retry count of 0).
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// // The payment gateway is back: send what billing parked meanwhile through it again.
    /// if !client.persistent_info("billing").await?.parked.is_empty() {
    ///     client.replay_parked("billing").await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn replay_parked(&self, group: &str) -> Result<(), Error> {
        self.done(Request::PersistentReplayParked {
            group: Text::from(group),
        })
        .await
    }

    /// Joins a group as a consumer.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// let mut group = client.connect_persistent("billing").await?;
    /// while let Some(delivery) = group.next().await? {
    ///     group.ack(&[delivery.event.position]).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn connect_persistent(&self, group: &str) -> Result<PersistentSubscription, Error> {
        let req = Request::PersistentConnect {
            group: Text::from(group),
        };
        let mut delay = MOVE_DELAY_MIN;
        for tries in 0.. {
            let conn = self.conn.lock().await.stable_id();
            let mut leader = None;
            let outcome = self.join_once(&req, group, &mut leader).await;
            // Refused by a follower that names the leader: go there, as requests do.
            if let (Some(leader), true) = (leader, tries < MOVE_TRIES_MAX) {
                if self.follow(leader, conn).await {
                    continue;
                }
            }
            let answer = match &outcome {
                Ok(_) => Ok(()),
                Err(Error::Server { code, .. }) => Err(Some(*code)),
                Err(e) => Err(e.moving_code()),
            };
            if !self.moves(&req, answer) || tries >= MOVE_TRIES_MAX {
                return outcome;
            }
            self.move_on(conn).await;
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MOVE_DELAY_MAX);
        }
        unreachable!("the loop returns")
    }

    /// One try of joining a group; `leader` is set when a follower refused naming the leader.
    async fn join_once(
        &self,
        req: &Request,
        group: &str,
        leader: &mut Option<u64>,
    ) -> Result<PersistentSubscription, Error> {
        let (mut send, mut recv) = self.stream().await?;
        let mut out = BytesMut::new();
        req.encode(&mut out);
        send.write_all(&out)
            .await
            .map_err(|e| Error::transport("sending the request", e))?;
        let mut buf = BytesMut::new();
        let read = read_frame(&mut recv, &mut buf, RESPONSE_PAYLOAD_BYTES_MAX);
        let frame = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| Error::Timeout)?
            .map_err(Error::read)?
            .ok_or_else(|| Error::protocol("the server closed the stream without answering"))?;
        match Response::decode(&frame).map_err(Error::response)? {
            Response::Done { .. } => {
                let max_frame = self.max_frame.load(Ordering::Relaxed);
                Ok(PersistentSubscription::new(
                    self.clone(),
                    group,
                    send,
                    recv,
                    buf,
                    max_frame,
                ))
            }
            Response::Error {
                code: ErrorCode::NotLeader,
                actual,
                message,
            } => {
                *leader = actual;
                Err(Error::from_wire(ErrorCode::NotLeader, message, actual))
            }
            other => Err(Error::unexpected(other)),
        }
    }

    /// Cluster: adds node `id`, whose peer endpoint is at `peer` (and whose clients connect
    /// to `client`, if given: told to clients looking for the leader), as a learner,
    /// promoted to voter by the leader once caught up; returns the index of the membership
    /// entry.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// // Node 4 joins: its peers reach it on 7601, its clients on 7600.
    /// let peer = "10.0.0.4:7601".parse().unwrap();
    /// let clients = "10.0.0.4:7600".parse().unwrap();
    /// let index = client.cluster_add(4, peer, Some(clients)).await?;
    /// println!("node 4 is a learner as of membership entry {index}");
    /// # Ok(()) }
    /// ```
    pub async fn cluster_add(
        &self,
        id: u64,
        peer: SocketAddr,
        client: Option<SocketAddr>,
    ) -> Result<u64, Error> {
        let req = Request::ClusterAdd {
            id,
            peer: Text::from(peer.to_string()),
            client: Text::from(client.map(|c| c.to_string()).unwrap_or_default()),
        };
        self.done_index(req).await
    }

    /// Cluster: the members of the membership in effect, with their client addresses where
    /// the node asked knows them, and the leader it knows of.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// let (leader, members) = client.cluster_members().await?;
    /// for m in &members {
    ///     let role = if m.voter { "voter" } else { "learner" };
    ///     let leads = if leader == Some(m.id) { " (leader)" } else { "" };
    ///     println!("node {} {role}{leads} at {:?}", m.id, m.client);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn cluster_members(&self) -> Result<(Option<u64>, Vec<ClusterMember>), Error> {
        match self.call(&Request::ClusterMembers).await? {
            Response::Members { leader, members } => {
                self.learn(&members);
                let members: Vec<ClusterMember> = members
                    .into_iter()
                    .map(|m| ClusterMember {
                        id: m.id,
                        voter: m.voter,
                        client: m.client.as_str().parse().ok(),
                    })
                    .collect();
                Ok((leader, members))
            }
            other => Err(Error::unexpected(other)),
        }
    }

    /// Cluster: removes node `id`; returns the index of the membership entry.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// // Node 3's machine is being retired.
    /// let index = client.cluster_remove(3).await?;
    /// println!("node 3 left the cluster as of membership entry {index}");
    /// # Ok(()) }
    /// ```
    pub async fn cluster_remove(&self, id: u64) -> Result<u64, Error> {
        self.done_index(Request::ClusterRemove { id }).await
    }

    /// Cluster: hands leadership to voter `to`, or to the most caught-up voter; returns the
    /// node it is handed to (the transfer completes within an election timeout).
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// // Node 1 is about to restart for an upgrade: if it leads, hand the leadership on first.
    /// let (leader, _) = client.cluster_members().await?;
    /// if leader == Some(1) {
    ///     let to = client.cluster_transfer(None).await?;
    ///     println!("node {to} takes over");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn cluster_transfer(&self, to: Option<u64>) -> Result<u64, Error> {
        self.done_index(Request::ClusterTransfer { to }).await
    }

    async fn done_index(&self, req: Request) -> Result<u64, Error> {
        match self.call(&req).await? {
            Response::Done { index } => Ok(index),
            other => Err(Error::unexpected(other)),
        }
    }

    /// Closes the connection and waits until the server has been told.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), quiver_client::Error> {
    /// use quiver_client::{Client, ClientConfig, EventData, ExpectedVersion};
    /// let client = Client::connect(ClientConfig::local("quiver-data")).await?;
    /// let paid = EventData::json("OrderPaid", r#"{"amount":120}"#);
    /// client.append("order-17", ExpectedVersion::Any, vec![paid]).await?;
    /// // The process is about to exit: tell the server now rather than let it time out.
    /// client.close().await;
    /// # Ok(()) }
    /// ```
    pub async fn close(self) {
        self.conn.lock().await.close(0u32.into(), b"bye");
        self.endpoint.wait_idle().await;
    }
}

/// Where a subscription to one stream starts and what it passes
/// ([`Client::subscribe_stream`]).
///
/// ```
/// use quiver_client::SubscribeStreamOptions;
/// // Everything from version 10 on, then live.
/// let from_ten = SubscribeStreamOptions::default().from(10);
/// // Only what is appended from now on.
/// let live = SubscribeStreamOptions::default().from_end();
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeStreamOptions {
    /// First version to deliver; `None`: the first.
    pub from: Option<StreamVersion>,
    /// Start at the end: only events appended after subscribing.
    pub from_end: bool,
    /// `by_event_payload`: every test must hold on the event's JSON data.
    pub payload: Vec<(String, PayloadOp, serde_json::Value)>,
}

impl SubscribeStreamOptions {
    /// Starts at this version (a resume point, say).
    ///
    /// ```
    /// use quiver_client::{StreamVersion, SubscribeStreamOptions};
    /// let o = SubscribeStreamOptions::default().from(StreamVersion(3));
    /// assert_eq!(o.from, Some(StreamVersion(3)));
    /// ```
    pub fn from(mut self, at: impl Into<StreamVersion>) -> Self {
        self.from = Some(at.into());
        self
    }

    /// Starts at the end.
    ///
    /// ```
    /// assert!(quiver_client::SubscribeStreamOptions::default().from_end().from_end);
    /// ```
    pub fn from_end(mut self) -> Self {
        self.from_end = true;
        self
    }

    /// Keeps events whose JSON data has, at the dot-separated `path`, a value that compares
    /// with `value` as `op` says (see [`SubscribeAllOptions::payload`]).
    ///
    /// ```
    /// # use quiver_client::{PayloadOp, SubscribeStreamOptions};
    /// let large = SubscribeStreamOptions::default().payload("amount", PayloadOp::Ge, 500.into());
    /// ```
    pub fn payload(
        mut self,
        path: impl Into<String>,
        op: PayloadOp,
        value: serde_json::Value,
    ) -> Self {
        self.payload.push((path.into(), op, value));
        self
    }
}

/// Where a subscription to `$all` starts and which events it passes
/// ([`Client::subscribe_all`]).
///
/// ```
/// use quiver_client::SubscribeAllOptions;
/// // Every order event from position 5,000 on, with a checkpoint every 1,000 positions
/// // that pass without one.
/// let orders = SubscribeAllOptions::default()
///     .from(5_000)
///     .stream_prefix("order-")
///     .checkpoint_every(1_000);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeAllOptions {
    /// First position to deliver; `None`: the first.
    pub from: Option<Position>,
    /// Start at the end: only events committed after subscribing.
    pub from_end: bool,
    /// Event types starting with this.
    pub type_prefix: Option<String>,
    /// Stream names starting with this.
    pub stream_prefix: Option<String>,
    /// Event types matching this regular expression (instead of a prefix).
    pub type_regex: Option<String>,
    /// Stream names matching this regular expression (instead of a prefix).
    pub stream_regex: Option<String>,
    /// Send a checkpoint after this many positions pass without a match (0: never).
    pub checkpoint_every: u32,
    /// `by_event_payload`: every test must hold on the event's JSON data.
    pub payload: Vec<(String, PayloadOp, serde_json::Value)>,
}

/// How a payload field compares with a value.
///
/// ```
/// use quiver_client::{PayloadOp, SubscribeAllOptions};
/// let refunds = SubscribeAllOptions::default().payload("amount", PayloadOp::Lt, 0.into());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadOp {
    /// Equal.
    Eq,
    /// Not equal (or absent).
    Ne,
    /// Less than.
    Lt,
    /// Less than or equal.
    Le,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Ge,
}

impl SubscribeAllOptions {
    /// Starts at this position (a resume point or a checkpoint, say).
    ///
    /// ```
    /// use quiver_client::{Position, SubscribeAllOptions};
    /// assert_eq!(SubscribeAllOptions::default().from(7).from, Some(Position(7)));
    /// ```
    pub fn from(mut self, at: impl Into<Position>) -> Self {
        self.from = Some(at.into());
        self
    }

    /// Starts at the end.
    ///
    /// ```
    /// assert!(quiver_client::SubscribeAllOptions::default().from_end().from_end);
    /// ```
    pub fn from_end(mut self) -> Self {
        self.from_end = true;
        self
    }

    /// Keeps event types with this prefix.
    ///
    /// ```
    /// let placed = quiver_client::SubscribeAllOptions::default().type_prefix("OrderPlaced");
    /// ```
    pub fn type_prefix(mut self, p: impl Into<String>) -> Self {
        self.type_prefix = Some(p.into());
        self
    }

    /// Keeps streams with this prefix.
    ///
    /// ```
    /// let orders = quiver_client::SubscribeAllOptions::default().stream_prefix("order-");
    /// ```
    pub fn stream_prefix(mut self, p: impl Into<String>) -> Self {
        self.stream_prefix = Some(p.into());
        self
    }

    /// Keeps events whose JSON data has, at the dot-separated `path`, a value that compares
    /// with `value` as `op` says (numbers as numbers, strings as text).
    ///
    /// ```
    /// # use quiver_client::{PayloadOp, SubscribeAllOptions};
    /// let big_orders = SubscribeAllOptions::default()
    ///     .type_prefix("OrderPlaced")
    ///     .payload("total", PayloadOp::Gt, serde_json::json!(1000));
    /// ```
    pub fn payload(
        mut self,
        path: impl Into<String>,
        op: PayloadOp,
        value: serde_json::Value,
    ) -> Self {
        self.payload.push((path.into(), op, value));
        self
    }

    /// Keeps event types matching this regular expression (checked by the server; anchor it
    /// with `^…$` for an exact type).
    ///
    /// ```
    /// let o = quiver_client::SubscribeAllOptions::default().type_regex("^Order(Placed|Paid)$");
    /// ```
    pub fn type_regex(mut self, r: impl Into<String>) -> Self {
        self.type_regex = Some(r.into());
        self
    }

    /// Keeps streams whose names match this regular expression.
    ///
    /// ```
    /// let o = quiver_client::SubscribeAllOptions::default().stream_regex("^order-[0-9]+$");
    /// ```
    pub fn stream_regex(mut self, r: impl Into<String>) -> Self {
        self.stream_regex = Some(r.into());
        self
    }

    /// Asks for a checkpoint after `n` positions without a match.
    ///
    /// ```
    /// let o = quiver_client::SubscribeAllOptions::default().checkpoint_every(1_000);
    /// assert_eq!(o.checkpoint_every, 1_000);
    /// ```
    pub fn checkpoint_every(mut self, n: u32) -> Self {
        self.checkpoint_every = n;
        self
    }
}

fn wire_payload(payload: &[(String, PayloadOp, serde_json::Value)]) -> Vec<message::Predicate> {
    payload
        .iter()
        .map(|(path, op, value)| message::Predicate {
            path: Text::from(path.as_str()),
            op: *op as u8,
            value: Text::from(value.to_string()),
        })
        .collect()
}

/// Where a subscription starts on the wire (`from` wins over `from_end`).
fn subscribe_from(at: Option<u64>, from_end: bool) -> message::ReadFrom {
    match (at, from_end) {
        (Some(v), _) => message::ReadFrom::At(v),
        (None, true) => message::ReadFrom::End,
        (None, false) => message::ReadFrom::Start,
    }
}

/// A subscription filter: the regular expression when given, else the prefix.
fn filter(prefix: &Option<String>, regex: &Option<String>) -> Option<Match> {
    match (regex, prefix) {
        (Some(r), _) => Some(Match::Regex(Text::from(r.as_str()))),
        (None, Some(p)) => Some(Match::Prefix(Text::from(p.as_str()))),
        (None, None) => None,
    }
}

/// What a subscription delivers. `P` is what it counts in: [`StreamVersion`] for a
/// stream's, [`Position`] for `$all`'s.
///
/// ```
/// use quiver_client::{Position, SubscriptionMessage};
/// let m: SubscriptionMessage<Position> = SubscriptionMessage::CaughtUp { at: Position(42) };
/// assert_eq!(m.resume_point(), Position(42));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionMessage<P> {
    /// An event.
    Event(RecordedEvent),
    /// Everything committed when the subscription started has been delivered; live events
    /// follow. `at`: where to resume.
    CaughtUp {
        /// Resume point.
        at: P,
    },
    /// `$all` only: nothing more matched up to `at` (exclusive): resume from here.
    Checkpoint {
        /// Resume point.
        at: P,
    },
    /// The subscriber lags the commit point by more than the server's limit (10,000
    /// positions): events keep coming, from storage, and `CaughtUp` follows when it is back.
    /// Nothing is dropped.
    FellBehind {
        /// Resume point.
        at: P,
    },
}

impl<P: Point> SubscriptionMessage<P> {
    /// Where a subscription resumes just past this message: past an event, or at a marker.
    ///
    /// ```
    /// use quiver_client::{StreamVersion, SubscriptionMessage};
    /// let m = SubscriptionMessage::FellBehind { at: StreamVersion(9) };
    /// assert_eq!(m.resume_point(), StreamVersion(9));
    /// ```
    pub fn resume_point(&self) -> P {
        match self {
            SubscriptionMessage::Event(e) => P::of(e).next_point(),
            SubscriptionMessage::CaughtUp { at }
            | SubscriptionMessage::Checkpoint { at }
            | SubscriptionMessage::FellBehind { at } => *at,
        }
    }
}

/// What [`Client::status`] answers.
///
/// ```no_run
/// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
/// use quiver_client::Position;
/// // How far a projection lags the store: the last position it handled, against the
/// // position one past the last commit.
/// let handled = Position(41_250);
/// let status = client.status().await?;
/// let behind = status.commit_position - handled.next();
/// println!("the projection is {behind} positions behind");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStatus {
    /// The store's id (every node of a cluster has the same).
    pub store_id: String,
    /// The `$all` position one past the last committed event: where a subscription from
    /// "now" starts.
    pub commit_position: Position,
    /// Streams in the store.
    pub streams: u64,
}

/// A live subscription. Dropping it ends it. It holds a clone of the [`Client`] (which shares
/// its connection), so it can outlive the borrow it was made from and move to another task.
/// `P` is what it counts in: [`StreamVersion`] for a stream's, [`Position`] for `$all`'s.
///
/// ```no_run
/// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
/// use quiver_client::{SubscribeAllOptions, SubscriptionMessage};
/// // An order projection: every order event, then the new ones as they are committed.
/// let options = SubscribeAllOptions::default().stream_prefix("order-").checkpoint_every(1_000);
/// let mut sub = client.subscribe_all(options).await?;
/// while let Some(message) = sub.next().await? {
///     match &message {
///         SubscriptionMessage::Event(e) => println!("{} {}", e.stream, e.event_type),
///         SubscriptionMessage::CaughtUp { .. } => println!("live from here"),
///         _ => {}
///     }
///     // Saved with the projection's state, this is where it starts after a restart.
///     let checkpoint = message.resume_point();
/// }
/// # Ok(()) }
/// ```
pub struct Subscription<P> {
    client: Client,
    /// The request that started it, to resubscribe with a new start.
    request: Request,
    /// Where to resume: past the last event or marker received (some may still wait in
    /// `pending`: a resubscription keeps them).
    resume: Option<P>,
    /// Past the last event or marker handed to the caller: the public resume point.
    delivered: Option<P>,
    recv: quinn::RecvStream,
    buf: BytesMut,
    pending: VecDeque<SubscriptionMessage<P>>,
}

impl<P: Point> Subscription<P> {
    fn take(&mut self, resp: Response) -> Result<(), Error> {
        let messages: Vec<SubscriptionMessage<P>> = match resp {
            Response::Events { events, .. } => events
                .into_iter()
                .map(|e| SubscriptionMessage::Event(recorded(e)))
                .collect(),
            Response::CaughtUp { position } => vec![SubscriptionMessage::CaughtUp {
                at: P::from(position),
            }],
            Response::Checkpoint { position } => vec![SubscriptionMessage::Checkpoint {
                at: P::from(position),
            }],
            Response::FellBehind { position } => vec![SubscriptionMessage::FellBehind {
                at: P::from(position),
            }],
            other => return Err(Error::unexpected(other)),
        };
        for m in messages {
            let past = m.resume_point();
            self.resume = Some(self.resume.map_or(past, |r| r.max(past)));
            self.pending.push_back(m);
        }
        Ok(())
    }

    /// Where this subscription would resume: just past the last event or marker it has
    /// delivered to the caller (`None` before the first); a version for a stream
    /// subscription, a position for `$all`. Keep it to start again elsewhere, in another
    /// process say, with the options' `from`: nothing is skipped or repeated.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// use quiver_client::SubscribeAllOptions;
    /// let mut sub = client.subscribe_all(SubscribeAllOptions::default()).await?;
    /// sub.next().await?;
    /// let resume = sub.resume_point().expect("one message delivered");
    /// drop(sub);
    /// let again = client.subscribe_all(SubscribeAllOptions::default().from(resume)).await?;
    /// # Ok(()) }
    /// ```
    pub fn resume_point(&self) -> Option<P> {
        self.delivered
    }

    /// The subscription as a [`Stream`](futures_core::Stream) of messages (it never ends by
    /// itself; an error, after the resubscriptions [`Subscription::next`] makes, is its last
    /// item). It owns everything it needs: move it into a task of its own.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// use futures_util::StreamExt;
    /// let mut live = client.subscribe_all(Default::default()).await?.into_stream();
    /// tokio::spawn(async move {
    ///     while let Some(message) = live.next().await {
    ///         println!("{message:?}");
    ///     }
    /// });
    /// # Ok(()) }
    /// ```
    pub fn into_stream(self) -> BoxStream<'static, Result<SubscriptionMessage<P>, Error>> {
        stream_of(self, |mut sub| async move {
            let item = sub.next().await.transpose();
            (item, sub)
        })
    }

    /// The next message; waits for live events. If the connection drops or the server
    /// restarts, it resubscribes by itself from just past the last event or marker it
    /// delivered (reconnecting with backoff; in a cluster, on any member), so nothing is
    /// skipped or repeated. It returns an error when no node can be reached again, when the
    /// subscription is refused, or when the server's answer does not decode; it never
    /// returns `Ok(None)` (a subscription has no end), which the type keeps for symmetry with
    /// reads.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// use quiver_client::{SubscribeStreamOptions, SubscriptionMessage};
    /// // Everything order 17 has, then each event as it is appended.
    /// let mut sub = client.subscribe_stream("order-17", SubscribeStreamOptions::default()).await?;
    /// while let Some(message) = sub.next().await? {
    ///     match message {
    ///         SubscriptionMessage::Event(e) => println!("{} {}", e.version, e.event_type),
    ///         SubscriptionMessage::CaughtUp { at } => println!("live from version {at}"),
    ///         _ => {}
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn next(&mut self) -> Result<Option<SubscriptionMessage<P>>, Error> {
        loop {
            if let Some(m) = self.pending.pop_front() {
                let past = m.resume_point();
                self.delivered = Some(self.delivered.map_or(past, |d| d.max(past)));
                return Ok(Some(m));
            }
            let max = RESPONSE_PAYLOAD_BYTES_MAX;
            let frame = match read_frame(&mut self.recv, &mut self.buf, max).await {
                Ok(Some(frame)) => frame,
                // Finished by a server going away, or cut: start again where we were.
                Ok(None) | Err(_) => {
                    self.resubscribe().await?;
                    continue;
                }
            };
            let resp = Response::decode(&frame).map_err(Error::response)?;
            self.take(resp)?;
        }
    }

    async fn resubscribe(&mut self) -> Result<(), Error> {
        if let (Request::Subscribe { from, .. }, Some(at)) = (&mut self.request, self.resume) {
            *from = message::ReadFrom::At(at.into());
        }
        let (first, recv, buf) = self.client.open(&self.request).await?;
        self.recv = recv;
        self.buf = buf;
        self.take(first)
    }
}

fn definition_json(d: &PersistentDefinition) -> Result<String, Error> {
    serde_json::to_string(d).map_err(|e| Error::protocol(format!("definition: {e}")))
}

pub(crate) fn recorded(e: message::Event) -> RecordedEvent {
    RecordedEvent {
        stream: e.stream.as_str().to_string(),
        version: StreamVersion(e.version),
        position: Position(e.position),
        id: Uuid::from_bytes(e.id),
        event_type: e.event_type.as_str().to_string(),
        json: e.content_type == 1,
        data: e.data,
        metadata: e.metadata,
        created_us: e.created_us,
    }
}

/// Events of a read, arriving in frames as the server streams them.
///
/// ```no_run
/// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
/// use quiver_client::ReadStreamOptions;
/// // The order's newest three events, newest first, taken as the frames arrive.
/// let newest = ReadStreamOptions::default().backward().max_count(3);
/// let mut events = client.read_stream("order-17", newest).await?;
/// while let Some(event) = events.next().await? {
///     println!("{} {}", event.version, event.event_type);
/// }
/// # Ok(()) }
/// ```
pub struct Events {
    /// `None` for a read answered without a response stream (a missing stream read as empty).
    recv: Option<quinn::RecvStream>,
    buf: BytesMut,
    pending: VecDeque<RecordedEvent>,
    done: bool,
    timeout: Duration,
}

impl Events {
    fn take(&mut self, resp: Response) -> Result<(), Error> {
        match resp {
            Response::Events { events, more } => {
                self.done = !more;
                self.pending.extend(events.into_iter().map(recorded));
                Ok(())
            }
            Response::Error {
                code,
                message,
                actual,
            } => {
                self.done = true;
                Err(Error::from_wire(code, message, actual))
            }
            other => {
                self.done = true;
                Err(Error::unexpected(other))
            }
        }
    }

    /// The next event, or `None` at the end of the read.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// use quiver_client::{EventData, ExpectedVersion, ReadStreamOptions};
    /// // Load an account, then write as of what was read: a conflict if anyone wrote meanwhile.
    /// let options = ReadStreamOptions::default().missing_as_empty(true);
    /// let mut read = client.read_stream("account-1", options).await?;
    /// let (mut deposits, mut last) = (0, None);
    /// while let Some(event) = read.next().await? {
    ///     if event.event_type == "Deposited" {
    ///         deposits += 1;
    ///     }
    ///     last = Some(event.version);
    /// }
    /// if deposits >= 10 {
    ///     let bonus = EventData::json("BonusGranted", r#"{"amount":5}"#);
    ///     client.append("account-1", ExpectedVersion::from(last), vec![bonus]).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn next(&mut self) -> Result<Option<RecordedEvent>, Error> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            let (false, Some(recv)) = (self.done, self.recv.as_mut()) else {
                return Ok(None);
            };
            let read = read_frame(recv, &mut self.buf, RESPONSE_PAYLOAD_BYTES_MAX);
            let frame = tokio::time::timeout(self.timeout, read)
                .await
                .map_err(|_| Error::Timeout)?
                .map_err(Error::read)?
                .ok_or_else(|| Error::protocol("the read ended without its last frame"))?;
            let resp = Response::decode(&frame).map_err(Error::response)?;
            self.take(resp)?;
        }
    }

    /// Reads everything that is left.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// use quiver_client::ReadStreamOptions;
    /// // A short stream, all at once: the lines of an order.
    /// let events = client
    ///     .read_stream("order-17", ReadStreamOptions::default())
    ///     .await?
    ///     .collect()
    ///     .await?;
    /// let lines = events.iter().filter(|e| e.event_type == "LineAdded").count();
    /// # Ok(()) }
    /// ```
    pub async fn collect(mut self) -> Result<Vec<RecordedEvent>, Error> {
        let mut all = Vec::new();
        while let Some(e) = self.next().await? {
            all.push(e);
        }
        Ok(all)
    }

    /// The rest of the read as a [`Stream`](futures_core::Stream) of events, for the
    /// combinators of `futures::StreamExt`; an error is the stream's last item.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// use futures_util::TryStreamExt;
    /// let read = client.read_stream("account-1", Default::default()).await?;
    /// let types: Vec<String> = read.into_stream().map_ok(|e| e.event_type).try_collect().await?;
    /// # Ok(()) }
    /// ```
    pub fn into_stream(self) -> BoxStream<'static, Result<RecordedEvent, Error>> {
        stream_of(self, |mut read| async move {
            let item = read.next().await.transpose();
            (item, read)
        })
    }
}

/// A conflict with the stream and the expected version filled in from the request: the one
/// stream of a single append, or the write of a multi-stream append whose stream the
/// server's message names (`… for 'STREAM': …`).
fn name_conflict(e: Error, checks: &[(String, ExpectedVersion)]) -> Error {
    let Error::WrongExpectedVersion {
        actual, message, ..
    } = e
    else {
        return e;
    };
    let found = match checks {
        [one] => Some(one),
        many => many
            .iter()
            .find(|(stream, _)| message.contains(&format!("for '{stream}':"))),
    };
    Error::WrongExpectedVersion {
        actual,
        stream: found.map(|(s, _)| s.clone()),
        expected: found.map(|(_, e)| *e),
        message,
    }
}

/// A boxed, sendable stream, as [`Events::into_stream`] and [`Subscription::into_stream`]
/// return.
///
/// ```no_run
/// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
/// use futures_util::TryStreamExt;
/// use quiver_client::{BoxStream, Client, Error, ReadAllOptions, RecordedEvent};
/// // Every account event, handed on without naming how it is read.
/// async fn account_events(
///     client: &Client,
/// ) -> Result<BoxStream<'static, Result<RecordedEvent, Error>>, Error> {
///     let read = client.read_all(ReadAllOptions::default().stream_prefix("account-")).await?;
///     Ok(read.into_stream())
/// }
/// let mut events = account_events(&client).await?;
/// while let Some(event) = events.try_next().await? {
///     println!("{} {}", event.stream, event.event_type);
/// }
/// # Ok(()) }
/// ```
pub type BoxStream<'a, T> = std::pin::Pin<Box<dyn futures_core::Stream<Item = T> + Send + 'a>>;

/// A stream that calls `step` on `state` for each item, and ends after `None` or after the
/// first error.
fn stream_of<S, T, F, Fut>(state: S, step: F) -> BoxStream<'static, Result<T, Error>>
where
    S: Send + 'static,
    T: Send + 'static,
    F: FnMut(S) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = (Option<Result<T, Error>>, S)> + Send + 'static,
{
    Box::pin(futures_util::stream::unfold(
        Some((state, step)),
        |now| async move {
            let (state, mut step) = now?;
            let (item, state) = step(state).await;
            match item {
                None => None,
                Some(Err(e)) => Some((Err(e), None)),
                Some(Ok(t)) => Some((Ok(t), Some((state, step)))),
            }
        },
    ))
}
