//! # quiver-cqrs
//!
//! A [cqrs-es](https://docs.rs/cqrs-es/0.5) event repository on Quiver:
//! [`QuiverEventRepository`] implements [`PersistedEventRepository`], so cqrs-es's
//! [`PersistedEventStore`] (event-sourced, snapshot or aggregate store) and
//! [`CqrsFramework`] run on a Quiver server through `quiver-client`.
//!
//! ```no_run
//! # use cqrs_es::{Aggregate, DomainEvent, event_sink::EventSink};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Debug, Default, Serialize, Deserialize)]
//! # struct Counter { n: u64 }
//! # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! # enum Counted { Added(u64) }
//! # impl DomainEvent for Counted {
//! #     fn event_type(&self) -> String { "Added".into() }
//! #     fn event_version(&self) -> String { "1.0".into() }
//! # }
//! # #[derive(Debug, thiserror::Error)]
//! # #[error("never")]
//! # struct Never;
//! # impl Aggregate for Counter {
//! #     const TYPE: &'static str = "counter";
//! #     type Command = u64;
//! #     type Event = Counted;
//! #     type Error = Never;
//! #     type Services = ();
//! #     async fn handle(
//! #         &mut self,
//! #         add: u64,
//! #         _: &(),
//! #         sink: &EventSink<Self>,
//! #     ) -> Result<(), Never> {
//! #         sink.write(Counted::Added(add), self).await;
//! #         Ok(())
//! #     }
//! #     fn apply(&mut self, e: Counted) { let Counted::Added(k) = e; self.n += k; }
//! # }
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cqrs_es::CqrsFramework;
//! use quiver_client::{Client, ClientConfig};
//! use quiver_cqrs::QuiverEventRepository;
//!
//! let client = Client::connect(ClientConfig::local("quiver-data")).await?;
//! // Events are the source of truth; `aggregate_store` and `snapshot_store(n)` also exist.
//! let store = QuiverEventRepository::new(client).event_store::<Counter>();
//! let cqrs = CqrsFramework::new(store, vec![], ());
//! cqrs.execute("c-1", 5).await?; // appends `Added(5)` to the stream `counter~c-1`
//! # Ok(()) }
//! ```
//!
//! ## How it maps onto Quiver
//!
//! - **Streams.** An aggregate instance's events are the stream
//!   `{aggregate_type}~{aggregate_id}`; aggregate types may not contain `~`, so the prefix
//!   `{aggregate_type}~` selects exactly one type (`order~` never matches `order-line~1`):
//!   [`stream_all_events`](PersistedEventRepository::stream_all_events) reads `$all` with it.
//!   See [`event_stream`], [`aggregate_type_prefix`].
//! - **Versions.** cqrs-es numbers an aggregate's events from 1, Quiver a stream's from 0:
//!   event `sequence` is stream version `sequence - 1`. A `persist` whose first event is
//!   `sequence` appends with `ExpectedVersion::NoStream` when `sequence` is 1, else
//!   `Exact(sequence - 2)`; `WrongExpectedVersion` (and `IdempotencyMismatch`, see Ids) is
//!   [`PersistenceError::OptimisticLockError`].
//! - **Ids.** Event ids are v5 UUIDs of (aggregate type, aggregate id, sequence)
//!   ([`event_id`]), so an append resent after an unknown outcome (timeout, lost connection;
//!   by this crate or by the client's own failover) is answered `idempotent` by the server and
//!   stored once. Every writer of a given sequence uses the same id, so an `idempotent`
//!   answer alone does not say whose events are stored: each event also records the `persist`
//!   call that wrote it, and an `idempotent` answer counts as success only when the stored
//!   events are this call's. Another call's events at the same sequences, even identical
//!   ones, are an `OptimisticLockError`: two tellers withdrawing the same amount at once are
//!   two withdrawals, not one.
//! - **Event fields.** The Quiver event type is `event_type`, the data is `payload` (JSON),
//!   and the metadata is a JSON envelope holding `event_version` and `metadata` unchanged
//!   ([`serialized_event`] reads one back).
//! - **Snapshots.** A snapshot is an event (type [`SNAPSHOT_EVENT_TYPE`]) in the aggregate's
//!   snapshot stream `~snapshot~{aggregate_type}~{aggregate_id}` ([`snapshot_stream`]),
//!   written in **the same atomic append** as the commit's events (`append_multi`), so it is
//!   never behind or ahead of them, whatever fails (a lost race, a refused write, a lost
//!   connection). The stream keeps only its newest event (`max_count` 1). Quiver's own
//!   snapshot store (`Client::put_snapshot`) is not used: a separate write, it cannot be part
//!   of an append.
//! - **The snapshot's state.** `persist` does not store the aggregate state cqrs-es 0.5.0
//!   hands it: `CqrsFramework` applies a command's events as the command writes them
//!   (`EventSink::write`), then `PersistedEventStore` applies them again for the snapshot,
//!   so the state counts them twice (a deposit of 10 would be stored as 20); and a snapshot
//!   store may hand a state short of the commit's last event without saying which. The repository
//!   folds the state itself with `A::apply`: the newest snapshot, the stored events after
//!   it, then the commit's events; the snapshot covers the commit's last event. This costs
//!   one more read per snapshot, and the events folded must deserialize into `A::Event` as
//!   stored (the repository does not have the store's upcasters).
//!
//! ## Layout
//! - `lib.rs` — [`QuiverEventRepository`] and its `PersistedEventRepository` methods.
//! - `names.rs` — stream names and event ids.
//! - `codec.rs` — events and snapshots as stored.
#![warn(missing_docs, unreachable_pub)]

mod codec;
mod names;

use std::time::Duration;

use cqrs_es::persist::{
    PersistedEventRepository, PersistedEventStore, PersistenceError, ReplayStream, SerializedEvent,
    SerializedSnapshot,
};
use cqrs_es::{Aggregate, CqrsFramework, Query};
use quiver_client::{
    Client, Error, ErrorCode, Events, ExpectedVersion, ReadAllOptions, ReadStreamOptions,
    StreamMetadata, WriteResult,
};
use serde_json::Value;
use uuid::Uuid;

pub use codec::serialized_event;
pub use names::{
    aggregate_type_prefix, event_id, event_stream, parse_event_stream, snapshot_id,
    snapshot_stream, validate_aggregate_type, NameError, SEPARATOR, SNAPSHOT_EVENT_TYPE,
    SNAPSHOT_STREAM_PREFIX, STREAM_NAME_BYTES_MAX,
};

/// Events buffered between a replay's reader task and its consumer, by default.
///
/// ```
/// use quiver_cqrs::STREAM_CHANNEL_SIZE_DEFAULT;
/// // A replay holds up to this many events for a consumer that falls behind; see
/// // `QuiverEventRepository::with_streaming_channel_size` to change it.
/// assert_eq!(STREAM_CHANNEL_SIZE_DEFAULT, 200);
/// ```
pub const STREAM_CHANNEL_SIZE_DEFAULT: usize = 200;

/// Times `persist` resends an append whose outcome is unknown, by default.
///
/// ```
/// use quiver_cqrs::RETRIES_DEFAULT;
/// // A commit whose outcome stays unknown is sent at most 1 + RETRIES_DEFAULT times, with
/// // waits of 100, 200 and 400 ms between; see `QuiverEventRepository::with_retries`.
/// assert_eq!(1 + RETRIES_DEFAULT, 4);
/// ```
pub const RETRIES_DEFAULT: u32 = 3;

/// First wait before `persist` resends an append; doubles on each try.
const RETRY_DELAY: Duration = Duration::from_millis(100);

/// A cqrs-es [`CqrsFramework`] whose store is a [`PersistedEventStore`] on Quiver.
///
/// ```no_run
/// # use cqrs_es::{event_sink::EventSink, Aggregate, DomainEvent};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Default, Serialize, Deserialize)]
/// # struct Account { balance: i64 }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # struct Deposited { amount: i64 }
/// # impl DomainEvent for Deposited {
/// #     fn event_type(&self) -> String { "Deposited".into() }
/// #     fn event_version(&self) -> String { "1.0".into() }
/// # }
/// # #[derive(Debug, thiserror::Error)]
/// # #[error("refused")]
/// # struct Refused;
/// # impl Aggregate for Account {
/// #     const TYPE: &'static str = "account";
/// #     type Command = i64; // an amount to deposit
/// #     type Event = Deposited;
/// #     type Error = Refused;
/// #     type Services = ();
/// #     async fn handle(
/// #         &mut self,
/// #         amount: i64,
/// #         _: &(),
/// #         sink: &EventSink<Self>,
/// #     ) -> Result<(), Refused> {
/// #         sink.write(Deposited { amount }, self).await;
/// #         Ok(())
/// #     }
/// #     fn apply(&mut self, e: Deposited) { self.balance += e.amount; }
/// # }
/// # async fn demo(
/// #     client: quiver_client::Client,
/// # ) -> Result<(), Box<dyn std::error::Error>> {
/// use quiver_cqrs::{quiver_cqrs, QuiverCqrs};
///
/// // The type to name where an application keeps its framework.
/// struct Bank {
///     accounts: QuiverCqrs<Account>,
/// }
///
/// let bank = Bank { accounts: quiver_cqrs(client, vec![], ()) };
/// bank.accounts.execute("42", 50).await?; // deposits 50 into account 42
/// # Ok(()) }
/// ```
pub type QuiverCqrs<A> = CqrsFramework<A, PersistedEventStore<QuiverEventRepository, A>>;

/// A [`QuiverCqrs`] with events as the source of truth (see
/// [`QuiverEventRepository::event_store`]).
///
/// ```no_run
/// # use cqrs_es::{event_sink::EventSink, Aggregate, DomainEvent};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Default, Serialize, Deserialize)]
/// # struct Account { balance: i64 }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # struct Deposited { amount: i64 }
/// # impl DomainEvent for Deposited {
/// #     fn event_type(&self) -> String { "Deposited".into() }
/// #     fn event_version(&self) -> String { "1.0".into() }
/// # }
/// # #[derive(Debug, thiserror::Error)]
/// # #[error("refused")]
/// # struct Refused;
/// # impl Aggregate for Account {
/// #     const TYPE: &'static str = "account";
/// #     type Command = i64; // an amount to deposit
/// #     type Event = Deposited;
/// #     type Error = Refused;
/// #     type Services = ();
/// #     async fn handle(
/// #         &mut self,
/// #         amount: i64,
/// #         _: &(),
/// #         sink: &EventSink<Self>,
/// #     ) -> Result<(), Refused> {
/// #         sink.write(Deposited { amount }, self).await;
/// #         Ok(())
/// #     }
/// #     fn apply(&mut self, e: Deposited) { self.balance += e.amount; }
/// # }
/// # async fn demo(
/// #     client: quiver_client::Client,
/// # ) -> Result<(), Box<dyn std::error::Error>> {
/// use cqrs_es::{EventEnvelope, Query};
/// use quiver_cqrs::quiver_cqrs;
///
/// // A query, told of each commit once it is stored.
/// struct Audit;
///
/// #[async_trait::async_trait]
/// impl Query<Account> for Audit {
///     async fn dispatch(&self, id: &str, events: &[EventEnvelope<Account>]) {
///         for e in events {
///             println!("account {id} #{}: {:?}", e.sequence, e.payload);
///         }
///     }
/// }
///
/// let accounts = quiver_cqrs::<Account>(client, vec![Box::new(Audit)], ());
/// accounts.execute("42", 50).await?; // deposits 50 into account 42; Audit prints it
/// # Ok(()) }
/// ```
pub fn quiver_cqrs<A>(
    client: Client,
    queries: Vec<Box<dyn Query<A>>>,
    services: A::Services,
) -> QuiverCqrs<A>
where
    A: Aggregate + Send + Sync,
{
    CqrsFramework::new(
        QuiverEventRepository::new(client).event_store(),
        queries,
        services,
    )
}

/// A cqrs-es event repository on a Quiver server. Cheap to clone (clones share the
/// client's connection).
///
/// ```no_run
/// # use cqrs_es::{event_sink::EventSink, Aggregate, DomainEvent};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Default, Serialize, Deserialize)]
/// # struct Account { balance: i64 }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # struct Deposited { amount: i64 }
/// # impl DomainEvent for Deposited {
/// #     fn event_type(&self) -> String { "Deposited".into() }
/// #     fn event_version(&self) -> String { "1.0".into() }
/// # }
/// # #[derive(Debug, thiserror::Error)]
/// # #[error("refused")]
/// # struct Refused;
/// # impl Aggregate for Account {
/// #     const TYPE: &'static str = "account";
/// #     type Command = i64; // an amount to deposit
/// #     type Event = Deposited;
/// #     type Error = Refused;
/// #     type Services = ();
/// #     async fn handle(
/// #         &mut self,
/// #         amount: i64,
/// #         _: &(),
/// #         sink: &EventSink<Self>,
/// #     ) -> Result<(), Refused> {
/// #         sink.write(Deposited { amount }, self).await;
/// #         Ok(())
/// #     }
/// #     fn apply(&mut self, e: Deposited) { self.balance += e.amount; }
/// # }
/// # async fn demo(
/// #     client: quiver_client::Client,
/// # ) -> Result<(), Box<dyn std::error::Error>> {
/// use cqrs_es::persist::PersistedEventRepository;
/// use cqrs_es::CqrsFramework;
/// use quiver_cqrs::QuiverEventRepository;
///
/// let repo = QuiverEventRepository::new(client);
/// // One clone runs the commands, the other reads what they stored.
/// let accounts = CqrsFramework::new(repo.clone().event_store::<Account>(), vec![], ());
/// accounts.execute("42", 50).await?;
/// let events = repo.get_events::<Account>("42").await?;
/// assert_eq!(events.last().map(|e| e.event_type.as_str()), Some("Deposited"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct QuiverEventRepository {
    client: Client,
    stream_channel_size: usize,
    retries: u32,
}

impl QuiverEventRepository {
    /// A repository over `client`.
    ///
    /// ```no_run
    /// # use cqrs_es::{event_sink::EventSink, Aggregate, DomainEvent};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, Default, Serialize, Deserialize)]
    /// # struct Account { balance: i64 }
    /// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    /// # struct Deposited { amount: i64 }
    /// # impl DomainEvent for Deposited {
    /// #     fn event_type(&self) -> String { "Deposited".into() }
    /// #     fn event_version(&self) -> String { "1.0".into() }
    /// # }
    /// # #[derive(Debug, thiserror::Error)]
    /// # #[error("refused")]
    /// # struct Refused;
    /// # impl Aggregate for Account {
    /// #     const TYPE: &'static str = "account";
    /// #     type Command = i64; // an amount to deposit
    /// #     type Event = Deposited;
    /// #     type Error = Refused;
    /// #     type Services = ();
    /// #     async fn handle(
    /// #         &mut self,
    /// #         amount: i64,
    /// #         _: &(),
    /// #         sink: &EventSink<Self>,
    /// #     ) -> Result<(), Refused> {
    /// #         sink.write(Deposited { amount }, self).await;
    /// #         Ok(())
    /// #     }
    /// #     fn apply(&mut self, e: Deposited) { self.balance += e.amount; }
    /// # }
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use quiver_client::{Client, ClientConfig};
    /// use quiver_cqrs::QuiverEventRepository;
    ///
    /// let client = Client::connect(ClientConfig::local("quiver-data")).await?;
    /// let repo = QuiverEventRepository::new(client);
    /// let accounts = repo.event_store::<Account>();
    /// # Ok(()) }
    /// ```
    pub fn new(client: Client) -> Self {
        QuiverEventRepository {
            client,
            stream_channel_size: STREAM_CHANNEL_SIZE_DEFAULT,
            retries: RETRIES_DEFAULT,
        }
    }

    /// The client it uses.
    ///
    /// ```no_run
    /// # async fn demo(
    /// #     client: quiver_client::Client,
    /// # ) -> Result<(), Box<dyn std::error::Error>> {
    /// use quiver_client::ReadStreamOptions;
    /// use quiver_cqrs::{event_stream, QuiverEventRepository};
    ///
    /// let repo = QuiverEventRepository::new(client);
    /// // What the repository does not do, its client does: here, list account 42's Quiver events.
    /// let stream = event_stream("account", "42")?;
    /// let events = repo.client().read_stream(&stream, ReadStreamOptions::default()).await?;
    /// for e in events.collect().await? {
    ///     println!("version {} at {}: {}", e.version, e.position, e.event_type);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sets how many events a replay ([`stream_events`](Self::stream_events),
    /// [`stream_all_events`](Self::stream_all_events)) reads ahead of its consumer (at
    /// least 1).
    ///
    /// ```no_run
    /// # use cqrs_es::{event_sink::EventSink, Aggregate, DomainEvent};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, Default, Serialize, Deserialize)]
    /// # struct Account { balance: i64 }
    /// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    /// # struct Deposited { amount: i64 }
    /// # impl DomainEvent for Deposited {
    /// #     fn event_type(&self) -> String { "Deposited".into() }
    /// #     fn event_version(&self) -> String { "1.0".into() }
    /// # }
    /// # #[derive(Debug, thiserror::Error)]
    /// # #[error("refused")]
    /// # struct Refused;
    /// # impl Aggregate for Account {
    /// #     const TYPE: &'static str = "account";
    /// #     type Command = i64; // an amount to deposit
    /// #     type Event = Deposited;
    /// #     type Error = Refused;
    /// #     type Services = ();
    /// #     async fn handle(
    /// #         &mut self,
    /// #         amount: i64,
    /// #         _: &(),
    /// #         sink: &EventSink<Self>,
    /// #     ) -> Result<(), Refused> {
    /// #         sink.write(Deposited { amount }, self).await;
    /// #         Ok(())
    /// #     }
    /// #     fn apply(&mut self, e: Deposited) { self.balance += e.amount; }
    /// # }
    /// # async fn demo(
    /// #     client: quiver_client::Client,
    /// # ) -> Result<(), Box<dyn std::error::Error>> {
    /// use cqrs_es::persist::PersistedEventRepository;
    /// use quiver_cqrs::{QuiverEventRepository, STREAM_CHANNEL_SIZE_DEFAULT};
    ///
    /// // Rebuilding a report from every account's events: read further ahead.
    /// let repo = QuiverEventRepository::new(client)
    ///     .with_streaming_channel_size(10 * STREAM_CHANNEL_SIZE_DEFAULT);
    /// let mut replay = repo.stream_all_events::<Account>().await?;
    /// let mut deposited = 0;
    /// while let Some(event) = replay.next::<Account>(&[]).await {
    ///     deposited += event?.payload.amount;
    /// }
    /// println!("deposited in all: {deposited}");
    /// # Ok(()) }
    /// ```
    pub fn with_streaming_channel_size(mut self, size: usize) -> Self {
        self.stream_channel_size = size.max(1);
        self
    }

    /// Sets how many times `persist` sends an append again when it failed in a way worth
    /// retrying (`quiver_client::Error::is_retryable`: it timed out or was cut off, its
    /// outcome unknown, or the server was unreachable, unavailable or not the leader),
    /// waiting 100 ms before the first resend and twice as long before each next one. Then
    /// `persist` fails with the last error: [`PersistenceError::ConnectionError`] for a
    /// timeout or a lost connection. A resend of an append that was stored is answered
    /// `idempotent` and stores nothing twice.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) {
    /// use quiver_cqrs::QuiverEventRepository;
    ///
    /// // A request handler that must answer soon: no resends, its caller decides.
    /// let fail_fast = QuiverEventRepository::new(client.clone()).with_retries(0);
    /// // A batch job on a flaky link: up to 8 resends, over about 25 s in all.
    /// let patient = QuiverEventRepository::new(client).with_retries(8);
    /// # }
    /// ```
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// A store whose source of truth is the events
    /// (`PersistedEventStore::new_event_store`).
    ///
    /// ```no_run
    /// # use cqrs_es::{event_sink::EventSink, Aggregate, DomainEvent};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, Default, Serialize, Deserialize)]
    /// # struct Account { balance: i64 }
    /// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    /// # struct Deposited { amount: i64 }
    /// # impl DomainEvent for Deposited {
    /// #     fn event_type(&self) -> String { "Deposited".into() }
    /// #     fn event_version(&self) -> String { "1.0".into() }
    /// # }
    /// # #[derive(Debug, thiserror::Error)]
    /// # #[error("refused")]
    /// # struct Refused;
    /// # impl Aggregate for Account {
    /// #     const TYPE: &'static str = "account";
    /// #     type Command = i64; // an amount to deposit
    /// #     type Event = Deposited;
    /// #     type Error = Refused;
    /// #     type Services = ();
    /// #     async fn handle(
    /// #         &mut self,
    /// #         amount: i64,
    /// #         _: &(),
    /// #         sink: &EventSink<Self>,
    /// #     ) -> Result<(), Refused> {
    /// #         sink.write(Deposited { amount }, self).await;
    /// #         Ok(())
    /// #     }
    /// #     fn apply(&mut self, e: Deposited) { self.balance += e.amount; }
    /// # }
    /// # async fn demo(
    /// #     client: quiver_client::Client,
    /// # ) -> Result<(), Box<dyn std::error::Error>> {
    /// use cqrs_es::CqrsFramework;
    /// use quiver_cqrs::QuiverEventRepository;
    ///
    /// // Each command loads account 42 by reading all its events.
    /// let store = QuiverEventRepository::new(client).event_store::<Account>();
    /// let accounts = CqrsFramework::new(store, vec![], ());
    /// accounts.execute("42", 50).await?;
    /// # Ok(()) }
    /// ```
    pub fn event_store<A: Aggregate + Send + Sync>(self) -> PersistedEventStore<Self, A> {
        PersistedEventStore::new_event_store(self)
    }

    /// A store whose source of truth is the snapshot written with every commit
    /// (`PersistedEventStore::new_aggregate_store`): loading reads one snapshot, not the
    /// events. Every commit's events and snapshot are one atomic append.
    ///
    /// Do not mix it with an event or snapshot store on the same aggregate type: their
    /// commits do not update the snapshot that an aggregate store loads.
    ///
    /// ```no_run
    /// # use cqrs_es::{event_sink::EventSink, Aggregate, DomainEvent};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, Default, Serialize, Deserialize)]
    /// # struct Account { balance: i64 }
    /// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    /// # struct Deposited { amount: i64 }
    /// # impl DomainEvent for Deposited {
    /// #     fn event_type(&self) -> String { "Deposited".into() }
    /// #     fn event_version(&self) -> String { "1.0".into() }
    /// # }
    /// # #[derive(Debug, thiserror::Error)]
    /// # #[error("refused")]
    /// # struct Refused;
    /// # impl Aggregate for Account {
    /// #     const TYPE: &'static str = "account";
    /// #     type Command = i64; // an amount to deposit
    /// #     type Event = Deposited;
    /// #     type Error = Refused;
    /// #     type Services = ();
    /// #     async fn handle(
    /// #         &mut self,
    /// #         amount: i64,
    /// #         _: &(),
    /// #         sink: &EventSink<Self>,
    /// #     ) -> Result<(), Refused> {
    /// #         sink.write(Deposited { amount }, self).await;
    /// #         Ok(())
    /// #     }
    /// #     fn apply(&mut self, e: Deposited) { self.balance += e.amount; }
    /// # }
    /// # async fn demo(
    /// #     client: quiver_client::Client,
    /// # ) -> Result<(), Box<dyn std::error::Error>> {
    /// use cqrs_es::CqrsFramework;
    /// use quiver_cqrs::QuiverEventRepository;
    ///
    /// // Each command loads account 42 from one snapshot, however long its history.
    /// let store = QuiverEventRepository::new(client).aggregate_store::<Account>();
    /// let accounts = CqrsFramework::new(store, vec![], ());
    /// accounts.execute("42", 50).await?;
    /// # Ok(()) }
    /// ```
    pub fn aggregate_store<A: Aggregate + Send + Sync>(self) -> PersistedEventStore<Self, A> {
        PersistedEventStore::new_aggregate_store(self)
    }

    /// A store that loads the newest snapshot and the events after it, and snapshots every
    /// `snapshot_size` events (`PersistedEventStore::new_snapshot_store`; 0 counts as 1).
    ///
    /// ```no_run
    /// # use cqrs_es::{event_sink::EventSink, Aggregate, DomainEvent};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, Default, Serialize, Deserialize)]
    /// # struct Account { balance: i64 }
    /// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    /// # struct Deposited { amount: i64 }
    /// # impl DomainEvent for Deposited {
    /// #     fn event_type(&self) -> String { "Deposited".into() }
    /// #     fn event_version(&self) -> String { "1.0".into() }
    /// # }
    /// # #[derive(Debug, thiserror::Error)]
    /// # #[error("refused")]
    /// # struct Refused;
    /// # impl Aggregate for Account {
    /// #     const TYPE: &'static str = "account";
    /// #     type Command = i64; // an amount to deposit
    /// #     type Event = Deposited;
    /// #     type Error = Refused;
    /// #     type Services = ();
    /// #     async fn handle(
    /// #         &mut self,
    /// #         amount: i64,
    /// #         _: &(),
    /// #         sink: &EventSink<Self>,
    /// #     ) -> Result<(), Refused> {
    /// #         sink.write(Deposited { amount }, self).await;
    /// #         Ok(())
    /// #     }
    /// #     fn apply(&mut self, e: Deposited) { self.balance += e.amount; }
    /// # }
    /// # async fn demo(
    /// #     client: quiver_client::Client,
    /// # ) -> Result<(), Box<dyn std::error::Error>> {
    /// use cqrs_es::CqrsFramework;
    /// use quiver_cqrs::QuiverEventRepository;
    ///
    /// // Account 42 is snapshotted every 100 events; a command loads the newest snapshot and the
    /// // events after it.
    /// let store = QuiverEventRepository::new(client).snapshot_store::<Account>(100);
    /// let accounts = CqrsFramework::new(store, vec![], ());
    /// accounts.execute("42", 50).await?;
    /// # Ok(()) }
    /// ```
    pub fn snapshot_store<A: Aggregate + Send + Sync>(
        self,
        snapshot_size: usize,
    ) -> PersistedEventStore<Self, A> {
        PersistedEventStore::new_snapshot_store(self, snapshot_size.max(1))
    }

    /// Reads an aggregate's events from stream version `version` (sequence `version + 1`)
    /// on; `None` when it has none.
    async fn read_from<A: Aggregate>(
        &self,
        aggregate_id: &str,
        version: usize,
        max_count: u64,
    ) -> Result<Option<Events>, PersistenceError> {
        let stream = event_stream(A::TYPE, aggregate_id).map_err(name_error)?;
        let options = ReadStreamOptions::default()
            .from(version_of(version)?)
            .max_count(max_count);
        match self.client.read_stream(&stream, options).await {
            Ok(events) => Ok(Some(events)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(persistence_error(e)),
        }
    }

    async fn collect<A: Aggregate>(
        &self,
        aggregate_id: &str,
        version: usize,
        max_count: u64,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let Some(mut events) = self
            .read_from::<A>(aggregate_id, version, max_count)
            .await?
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        while let Some(e) = events.next().await.map_err(persistence_error)? {
            out.push(serialized_event(&e)?);
        }
        Ok(out)
    }

    /// Sends one atomic append, again on an unknown outcome; an `idempotent` answer is
    /// success only if the events stored are this call's (`commit`).
    async fn append(
        &self,
        writes: Vec<(String, ExpectedVersion, Vec<quiver_client::EventData>)>,
        first_version: u64,
        count: usize,
        commit: Uuid,
    ) -> Result<(), PersistenceError> {
        let stream = writes[0].0.clone();
        let mut delay = RETRY_DELAY;
        let mut tries = 0;
        let result: WriteResult = loop {
            match self.client.append_multi(writes.clone()).await {
                Ok(r) => break r,
                Err(e) if e.is_retryable() && tries < self.retries => {
                    tries += 1;
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => return Err(persistence_error(e)),
            }
        };
        if !result.idempotent {
            return Ok(());
        }
        // Every id was stored already: by an earlier try of this call, or by another writer
        // of the same sequences.
        let options = ReadStreamOptions::default()
            .from(first_version)
            .max_count(count as u64);
        let stored = self
            .client
            .read_stream(&stream, options)
            .await
            .map_err(persistence_error)?
            .collect()
            .await
            .map_err(persistence_error)?;
        let ours = commit.to_string();
        if stored.len() == count
            && stored
                .iter()
                .all(|e| codec::commit_of(e) == Some(ours.clone()))
        {
            Ok(())
        } else {
            Err(PersistenceError::OptimisticLockError)
        }
    }

    /// The aggregate's state after `events`, which follow its stored sequence `before`: the
    /// newest snapshot, the stored events after it, then `events`, folded with `A::apply`.
    async fn fold<A: Aggregate>(
        &self,
        aggregate_id: &str,
        before: usize,
        events: &[SerializedEvent],
    ) -> Result<Value, PersistenceError> {
        let (mut aggregate, at) = match self.get_snapshot::<A>(aggregate_id).await? {
            // A snapshot past `before` means events past it: the append would fail.
            Some(s) if s.current_sequence > before => {
                return Err(PersistenceError::OptimisticLockError)
            }
            // A snapshot that no longer deserializes (the aggregate changed): from scratch.
            Some(s) => match serde_json::from_value::<A>(s.aggregate) {
                Ok(a) => (a, s.current_sequence),
                Err(_) => (A::default(), 0),
            },
            None => (A::default(), 0),
        };
        let between = (before - at) as u64;
        let stored = match between {
            0 => Vec::new(),
            n => self.collect::<A>(aggregate_id, at, n).await?,
        };
        for e in stored.into_iter().chain(events.iter().cloned()) {
            aggregate.apply(serde_json::from_value(e.payload)?);
        }
        Ok(serde_json::to_value(&aggregate)?)
    }

    /// Reads in a task of its own into a replay stream; stops at the first error (sent on).
    fn replay(&self, events: Option<Events>, only: Option<&'static str>) -> ReplayStream {
        let (mut feed, stream) = ReplayStream::new(self.stream_channel_size);
        let Some(mut events) = events else {
            return stream;
        };
        tokio::spawn(async move {
            loop {
                let item = match events.next().await {
                    Ok(Some(e)) => serialized_event(&e).and_then(|e| match only {
                        Some(t) if e.aggregate_type != t => Err(codec::unknown(format!(
                            "event of type {:?} read as {t:?}",
                            e.aggregate_type
                        ))),
                        _ => Ok(e),
                    }),
                    Ok(None) => return,
                    Err(e) => Err(persistence_error(e)),
                };
                let failed = item.is_err();
                if feed.push(item).await.is_err() || failed {
                    return;
                }
            }
        });
        stream
    }
}

/// A stream version as the client takes it.
fn version_of(version: usize) -> Result<u64, PersistenceError> {
    u64::try_from(version).map_err(|_| codec::unknown(format!("version {version} too large")))
}

fn name_error(e: NameError) -> PersistenceError {
    PersistenceError::UnknownError(Box::new(e))
}

/// What a client error means to cqrs-es: a concurrent writer (the stream moved on, or
/// holds some of these ids), a connection problem, or anything else.
fn persistence_error(e: Error) -> PersistenceError {
    match e {
        Error::WrongExpectedVersion { .. } => PersistenceError::OptimisticLockError,
        Error::Server {
            code: ErrorCode::IdempotencyMismatch,
            ..
        } => PersistenceError::OptimisticLockError,
        Error::Connect { .. } | Error::Transport { .. } | Error::Timeout => {
            PersistenceError::ConnectionError(Box::new(e))
        }
        e => PersistenceError::UnknownError(Box::new(e)),
    }
}

impl PersistedEventRepository for QuiverEventRepository {
    /// All events of aggregate instance `aggregate_id` of type `A`, oldest first.
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.collect::<A>(aggregate_id, 0, u64::MAX).await
    }

    /// The events after `last_sequence` (those whose `sequence` is greater).
    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        // Sequence `last_sequence + 1` is version `last_sequence`.
        self.collect::<A>(aggregate_id, last_sequence, u64::MAX)
            .await
    }

    /// The newest snapshot, if any.
    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        let stream = snapshot_stream(A::TYPE, aggregate_id).map_err(name_error)?;
        let newest = ReadStreamOptions::default().backward().max_count(1);
        let events = match self.client.read_stream(&stream, newest).await {
            Ok(events) => events.collect().await.map_err(persistence_error)?,
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(persistence_error(e)),
        };
        match events.first() {
            Some(e) => codec::serialized_snapshot(aggregate_id, e).map(Some),
            None => Ok(None),
        }
    }

    /// Appends `events` (one aggregate instance's, consecutive) with the expected version
    /// their first sequence implies, and the snapshot, if any, in the same atomic append.
    ///
    /// An append that times out or is cut off is sent again (see
    /// [`with_retries`](QuiverEventRepository::with_retries)); the server answers a resend
    /// of stored events `idempotent`, which is success when the stored events are this
    /// call's. Events of another call at these sequences — the aggregate moved on — are an
    /// [`PersistenceError::OptimisticLockError`], even if they are equal to these.
    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let Some(first) = events.first() else {
            return match snapshot_update {
                None => Ok(()),
                Some(_) => Err(codec::unknown(
                    "a snapshot is written with the events it covers; none were given",
                )),
            };
        };
        let aggregate_id = first.aggregate_id.as_str();
        for (i, e) in events.iter().enumerate() {
            if e.aggregate_type != A::TYPE
                || e.aggregate_id != aggregate_id
                || e.sequence != first.sequence + i
            {
                return Err(codec::unknown(format!(
                    "persist wants consecutive events of one {} instance; event {i} is \
                     {}/{} #{} after {aggregate_id} #{}",
                    A::TYPE,
                    e.aggregate_type,
                    e.aggregate_id,
                    e.sequence,
                    first.sequence
                )));
            }
        }
        if first.sequence == 0 {
            return Err(codec::unknown("cqrs-es sequences start at 1"));
        }
        let stream = event_stream(A::TYPE, aggregate_id).map_err(name_error)?;
        let first_version = version_of(first.sequence - 1)?;
        let expected = match first_version {
            0 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v - 1),
        };
        let commit = Uuid::new_v4();
        let data = events
            .iter()
            .map(|e| codec::event_data(e, commit))
            .collect::<Result<Vec<_>, _>>()?;
        let mut writes = vec![(stream, expected, data)];
        if let Some((snapshot_id, _, current_snapshot)) = snapshot_update {
            if snapshot_id != aggregate_id {
                return Err(codec::unknown(format!(
                    "a snapshot of {snapshot_id} with events of {aggregate_id}"
                )));
            }
            // Not the state cqrs-es passes (see the crate's documentation, Snapshots).
            let last = first.sequence + events.len() - 1;
            let aggregate = self
                .fold::<A>(aggregate_id, first.sequence - 1, events)
                .await?;
            let snapshots = snapshot_stream(A::TYPE, aggregate_id).map_err(name_error)?;
            if current_snapshot <= 1 {
                // The stream needs only its newest snapshot. Set before the first one is
                // written; harmless if the append then fails.
                let keep_newest = StreamMetadata {
                    max_count: Some(1),
                    ..StreamMetadata::default()
                };
                self.client
                    .set_metadata(&snapshots, keep_newest)
                    .await
                    .map_err(persistence_error)?;
            }
            let snapshot =
                codec::snapshot_data(A::TYPE, aggregate_id, last, current_snapshot, aggregate)?;
            // Any: the events' expected version orders the writers of both streams.
            writes.push((snapshots, ExpectedVersion::Any, vec![snapshot]));
        }
        self.append(writes, first_version, events.len(), commit)
            .await
    }

    /// A replay of aggregate instance `aggregate_id`'s events, read by a task of its own.
    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        let events = self.read_from::<A>(aggregate_id, 0, u64::MAX).await?;
        Ok(self.replay(events, None))
    }

    /// A replay of every event of aggregate type `A`, in `$all` order: the streams whose
    /// names start with `{A::TYPE}~`, no other type's.
    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        let prefix = aggregate_type_prefix(A::TYPE).map_err(name_error)?;
        let events = self
            .client
            .read_all(ReadAllOptions::default().stream_prefix(prefix))
            .await
            .map_err(persistence_error)?;
        Ok(self.replay(Some(events), Some(A::TYPE)))
    }
}
