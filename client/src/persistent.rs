//! Persistent subscriptions: named server-side consumer groups. The server keeps each
//! group's checkpoint, in-flight events, retries and parked events; consumers join a group
//! with [`crate::Client::connect_persistent`] and acknowledge what they handled.

use bytes::BytesMut;
use quiver_net::message::{Request, Response};
use quiver_net::quic::read_frame;
use serde::{Deserialize, Serialize};

use crate::{recorded, Error, Position, RecordedEvent};

/// How a group shares events among its consumers.
///
/// ```
/// use quiver_client::{PersistentDefinition, Strategy};
/// // Billing must see each account's events in order: one consumer per account.
/// let billing = PersistentDefinition::all("billing")
///     .stream_prefix("account-")
///     .strategy(Strategy::Pinned);
/// assert_eq!(billing.strategy, Strategy::Pinned);
/// // Sending receipts does not care about order: share them out in turn (the default).
/// assert_eq!(PersistentDefinition::all("receipts").strategy, Strategy::RoundRobin);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Each event to the next consumer in turn.
    #[default]
    RoundRobin,
    /// All events of a stream to the same consumer (by a hash of the stream name), so one
    /// stream's events are handled in order by one consumer while the consumers stay the same.
    Pinned,
}

fn max_retries_default() -> u32 {
    10
}

fn message_timeout_default() -> u64 {
    30_000
}

fn max_in_flight_default() -> u32 {
    100
}

fn all() -> String {
    "$all".into()
}

/// A group's definition, as the server stores it (JSON).
///
/// ```
/// use quiver_client::PersistentDefinition;
/// // Every order event, for the shipping service's consumers, with the default settings.
/// let shipping = PersistentDefinition::all("shipping").type_prefix("Order");
/// assert_eq!(shipping.stream, "$all");
/// assert_eq!(shipping.start, 0);
/// assert_eq!(shipping.max_retries, 10);
/// assert_eq!(shipping.message_timeout_ms, 30_000);
/// assert_eq!(shipping.max_in_flight, 100);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PersistentDefinition {
    /// The group's name: 1–200 bytes, no control characters, no `/`.
    pub name: String,
    /// What it follows: `$all` (the default) or one stream's name.
    #[serde(default = "all")]
    pub stream: String,
    /// `$all` only: event types starting with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_prefix: Option<String>,
    /// `$all` only: stream names starting with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_prefix: Option<String>,
    /// First position (`$all`) or version (a stream) the group delivers.
    #[serde(default)]
    pub start: u64,
    /// Retries after which an event is parked.
    #[serde(default = "max_retries_default")]
    pub max_retries: u32,
    /// An event not acknowledged within this many milliseconds is delivered again (which
    /// counts as a retry).
    #[serde(default = "message_timeout_default")]
    pub message_timeout_ms: u64,
    /// How events are shared among consumers.
    #[serde(default)]
    pub strategy: Strategy,
    /// Most events delivered and not yet acknowledged, for the whole group.
    #[serde(default = "max_in_flight_default")]
    pub max_in_flight: u32,
}

impl PersistentDefinition {
    /// A group on `$all` from the beginning, with the default settings.
    ///
    /// ```
    /// use quiver_client::PersistentDefinition;
    /// // An audit log of everything, from the first event on.
    /// let audit = PersistentDefinition::all("audit");
    /// assert_eq!(audit.stream, "$all");
    /// assert_eq!(audit.start, 0);
    /// assert!(audit.type_prefix.is_none() && audit.stream_prefix.is_none());
    /// ```
    pub fn all(name: impl Into<String>) -> Self {
        PersistentDefinition {
            name: name.into(),
            stream: all(),
            type_prefix: None,
            stream_prefix: None,
            start: 0,
            max_retries: max_retries_default(),
            message_timeout_ms: message_timeout_default(),
            strategy: Strategy::RoundRobin,
            max_in_flight: max_in_flight_default(),
        }
    }

    /// A group on one stream from its first version, with the default settings.
    ///
    /// ```
    /// use quiver_client::PersistentDefinition;
    /// // The consumers that send statements for one busy merchant account.
    /// let statements = PersistentDefinition::stream("statements", "account-1");
    /// assert_eq!(statements.name, "statements");
    /// assert_eq!(statements.stream, "account-1");
    /// assert_eq!(statements.start, 0);
    /// ```
    pub fn stream(name: impl Into<String>, stream: impl Into<String>) -> Self {
        PersistentDefinition {
            stream: stream.into(),
            ..PersistentDefinition::all(name)
        }
    }

    /// Keeps event types with this prefix (`$all` only).
    ///
    /// ```
    /// use quiver_client::PersistentDefinition;
    /// // PaymentReceived, PaymentRefunded, ... from every stream.
    /// let payments = PersistentDefinition::all("payments").type_prefix("Payment");
    /// assert_eq!(payments.type_prefix.as_deref(), Some("Payment"));
    /// ```
    pub fn type_prefix(mut self, p: impl Into<String>) -> Self {
        self.type_prefix = Some(p.into());
        self
    }

    /// Keeps streams with this prefix (`$all` only).
    ///
    /// ```
    /// use quiver_client::PersistentDefinition;
    /// // Every event of every order stream.
    /// let orders = PersistentDefinition::all("fulfilment").stream_prefix("order-");
    /// assert_eq!(orders.stream_prefix.as_deref(), Some("order-"));
    /// ```
    pub fn stream_prefix(mut self, p: impl Into<String>) -> Self {
        self.stream_prefix = Some(p.into());
        self
    }

    /// Starts at this position (`$all`) or version (a stream).
    ///
    /// ```
    /// use quiver_client::{PersistentDefinition, Position};
    /// // A new sales report takes over where the old one stopped, not from the beginning.
    /// let handed_over = Position(52_000);
    /// let report = PersistentDefinition::all("sales-report")
    ///     .stream_prefix("order-")
    ///     .start(handed_over.get());
    /// assert_eq!(report.start, 52_000);
    /// ```
    pub fn start(mut self, at: u64) -> Self {
        self.start = at;
        self
    }

    /// Sets the retries after which an event is parked.
    ///
    /// ```
    /// use quiver_client::PersistentDefinition;
    /// // A charge that failed three times is parked for a person to look at.
    /// let charges = PersistentDefinition::all("charges")
    ///     .type_prefix("OrderPlaced")
    ///     .max_retries(3);
    /// assert_eq!(charges.max_retries, 3);
    /// ```
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Sets the message timeout.
    ///
    /// ```
    /// use quiver_client::PersistentDefinition;
    /// // Issuing an invoice can take a minute: do not deliver it to another consumer sooner.
    /// let invoices = PersistentDefinition::all("invoices")
    ///     .type_prefix("OrderPaid")
    ///     .message_timeout_ms(60_000);
    /// assert_eq!(invoices.message_timeout_ms, 60_000);
    /// ```
    pub fn message_timeout_ms(mut self, ms: u64) -> Self {
        self.message_timeout_ms = ms;
        self
    }

    /// Sets the strategy.
    ///
    /// ```
    /// use quiver_client::{PersistentDefinition, Strategy};
    /// // One consumer handles all of an order's events, in order.
    /// let fulfilment = PersistentDefinition::all("fulfilment")
    ///     .stream_prefix("order-")
    ///     .strategy(Strategy::Pinned);
    /// assert_eq!(fulfilment.strategy, Strategy::Pinned);
    /// ```
    pub fn strategy(mut self, s: Strategy) -> Self {
        self.strategy = s;
        self
    }

    /// Sets the most events in flight.
    ///
    /// ```
    /// use quiver_client::PersistentDefinition;
    /// // A slow mail gateway: at most 10 receipts out at a time, across all consumers.
    /// let receipts = PersistentDefinition::all("receipts")
    ///     .type_prefix("OrderPaid")
    ///     .max_in_flight(10);
    /// assert_eq!(receipts.max_in_flight, 10);
    /// ```
    pub fn max_in_flight(mut self, n: u32) -> Self {
        self.max_in_flight = n;
        self
    }
}

/// A group's state, as the server reports it.
///
/// ```
/// use quiver_client::{PersistentDefinition, PersistentInfo, Position};
/// // An alert on a group's state, as `Client::persistent_info` reports it.
/// fn needs_attention(group: &PersistentInfo) -> bool {
///     group.consumers == 0 || !group.parked.is_empty()
/// }
/// let billing = PersistentInfo {
///     definition: PersistentDefinition::all("billing"),
///     checkpoint: 1_200,
///     next: 1_260,
///     in_flight: 40,
///     waiting: 0,
///     parked: vec![Position(1_187)],
///     consumers: 2,
/// };
/// assert!(needs_attention(&billing));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistentInfo {
    /// Its definition.
    pub definition: PersistentDefinition,
    /// The lowest position (`$all`) or version (a stream) not yet acknowledged, skipped or
    /// parked: after a restart the group delivers again from here. A plain number because
    /// it is either, as the definition's target says.
    pub checkpoint: u64,
    /// The next position or version the group will read.
    pub next: u64,
    /// Events delivered and not yet acknowledged.
    pub in_flight: u64,
    /// Events waiting to be delivered (again).
    pub waiting: u64,
    /// Positions of the parked events (what [`PersistentSubscription::nack`] and
    /// [`PersistentSubscription::ack`] name them by).
    pub parked: Vec<Position>,
    /// Consumers connected.
    pub consumers: u64,
}

/// What a consumer does with events it could not handle.
///
/// ```
/// use quiver_client::NackAction;
/// // What a billing consumer does with an event it failed to handle.
/// fn after_failure(reason: &str) -> NackAction {
///     match reason {
///         // May work next time.
///         "gateway timeout" => NackAction::Retry,
///         // Needs a person: keep it until the parked events are replayed.
///         "card declined" => NackAction::Park,
///         // Will never work (a malformed event): count it as handled.
///         _ => NackAction::Skip,
///     }
/// }
/// assert_eq!(after_failure("gateway timeout"), NackAction::Retry);
/// assert_eq!(after_failure("card declined"), NackAction::Park);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackAction {
    /// Deliver again later (counts as a retry; past the group's max retries, it is parked).
    Retry = 0,
    /// Park now: it is kept aside until the parked events are replayed.
    Park = 1,
    /// Drop it: it counts as handled.
    Skip = 2,
}

/// One event delivered to a consumer of a persistent subscription.
///
/// ```
/// use quiver_client::{Bytes, Delivery, Position, RecordedEvent, StreamVersion, Uuid};
/// // A consumer that gives up on an event after its second retry, tested with a delivery
/// // made as `PersistentSubscription::next` would hand it over.
/// fn give_up(delivery: &Delivery) -> bool {
///     delivery.retry_count >= 2
/// }
/// let event = RecordedEvent {
///     stream: "order-17".into(),
///     version: StreamVersion(2),
///     position: Position(5_310),
///     id: Uuid::new_v4(),
///     event_type: "OrderPaid".into(),
///     json: true,
///     data: Bytes::from_static(br#"{"amount":120}"#),
///     metadata: Bytes::new(),
///     created_us: 1_700_000_000_000_000,
/// };
/// let first = Delivery { event: event.clone(), retry_count: 0 };
/// let third = Delivery { event, retry_count: 2 };
/// assert!(!give_up(&first) && give_up(&third));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The event; acknowledge it by its `position`.
    pub event: RecordedEvent,
    /// How many times it was retried before this delivery (0 the first time).
    pub retry_count: u32,
}

/// A consumer's membership in a group: events arrive with [`next`](Self::next); acknowledge
/// them with [`ack`](Self::ack) or [`nack`](Self::nack). Dropping it leaves the group; the
/// events it had not acknowledged go to the other consumers (or wait for the next one).
/// If the connection drops or the server restarts, [`next`](Self::next) joins the group
/// again by itself (reconnecting with backoff); the group redelivers what was not
/// acknowledged.
///
/// ```no_run
/// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
/// # fn charge(_: &quiver_client::RecordedEvent) -> Result<(), String> { Ok(()) }
/// use quiver_client::NackAction;
/// let mut billing = client.connect_persistent("billing").await?;
/// while let Some(delivery) = billing.next().await? {
///     let at = [delivery.event.position];
///     match charge(&delivery.event) {
///         Ok(()) => billing.ack(&at).await?,
///         // Delivered again later; parked once the group's max retries are used up.
///         Err(_) => billing.nack(NackAction::Retry, &at).await?,
///     }
/// }
/// # Ok(()) }
/// ```
pub struct PersistentSubscription {
    client: crate::Client,
    group: String,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: BytesMut,
    max_frame: usize,
}

impl PersistentSubscription {
    pub(crate) fn new(
        client: crate::Client,
        group: &str,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        buf: BytesMut,
        max_frame: usize,
    ) -> Self {
        PersistentSubscription {
            client,
            group: group.to_string(),
            send,
            recv,
            buf,
            max_frame,
        }
    }

    /// The next event; waits until the group has one for this consumer. When the membership
    /// ends (connection lost, server restarted) it joins again; `None` when the group no
    /// longer exists.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// let mut billing = client.connect_persistent("billing").await?;
    /// loop {
    ///     match billing.next().await? {
    ///         Some(delivery) => {
    ///             let e = &delivery.event;
    ///             println!("{} {} (retry {})", e.stream, e.event_type, delivery.retry_count);
    ///             billing.ack(&[e.position]).await?;
    ///         }
    ///         None => {
    ///             println!("the billing group was deleted");
    ///             break;
    ///         }
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn next(&mut self) -> Result<Option<Delivery>, Error> {
        let max = crate::RESPONSE_PAYLOAD_BYTES_MAX;
        let frame = loop {
            match read_frame(&mut self.recv, &mut self.buf, max).await {
                Ok(Some(f)) => break f,
                Ok(None) | Err(_) => match self.client.connect_persistent(&self.group).await {
                    Ok(fresh) => *self = fresh,
                    Err(Error::NotFound(_)) => return Ok(None),
                    Err(e) => return Err(e),
                },
            }
        };
        match Response::decode(&frame).map_err(Error::response)? {
            Response::Delivery { retry_count, event } => Ok(Some(Delivery {
                event: recorded(event),
                retry_count,
            })),
            other => Err(Error::unexpected(other)),
        }
    }

    /// Acknowledges events by position: they are handled and will not be delivered again.
    /// If the connection was lost, the ack fails and the group delivers them again to this
    /// consumer once [`next`](Self::next) has joined again (at least once).
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// let mut group = client.connect_persistent("billing").await?;
    /// if let Some(delivery) = group.next().await? {
    ///     group.ack(&[delivery.event.position]).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn ack(&mut self, positions: &[Position]) -> Result<(), Error> {
        self.send_request(&Request::PersistentAck {
            positions: positions.iter().map(|p| p.0).collect(),
        })
        .await
    }

    /// Refuses events by position: retry, park or skip them.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// use quiver_client::NackAction;
    /// let mut group = client.connect_persistent("billing").await?;
    /// if let Some(delivery) = group.next().await? {
    ///     // Cannot be handled now: keep it aside until the parked events are replayed.
    ///     group.nack(NackAction::Park, &[delivery.event.position]).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn nack(&mut self, action: NackAction, positions: &[Position]) -> Result<(), Error> {
        self.send_request(&Request::PersistentNack {
            action: action as u8,
            positions: positions.iter().map(|p| p.0).collect(),
        })
        .await
    }

    async fn send_request(&mut self, req: &Request) -> Result<(), Error> {
        let mut out = BytesMut::new();
        req.encode(&mut out);
        let bytes = out.len() - quiver_net::frame::FRAME_HEADER_BYTES;
        if bytes > self.max_frame {
            return Err(Error::TooLarge {
                bytes,
                max: self.max_frame,
            });
        }
        self.send
            .write_all(&out)
            .await
            .map_err(|e| Error::transport("sending to the group", e))
    }

    /// Leaves the group: events not acknowledged go to other consumers.
    ///
    /// ```no_run
    /// # async fn demo(client: quiver_client::Client) -> Result<(), quiver_client::Error> {
    /// // A consumer that handles one event and leaves: whatever the group had sent it and it
    /// // did not acknowledge goes to the other consumers at once.
    /// let mut billing = client.connect_persistent("billing").await?;
    /// if let Some(delivery) = billing.next().await? {
    ///     billing.ack(&[delivery.event.position]).await?;
    /// }
    /// billing.close();
    /// # Ok(()) }
    /// ```
    pub fn close(mut self) {
        let _ = self.send.finish();
        let _ = self.recv.stop(0u32.into());
    }
}
