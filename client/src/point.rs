//! Where an event is: its [`StreamVersion`] in its stream and its [`Position`] in `$all`.
//!
//! Both are numbers on the wire, and a `u64` for each let one be passed where the other was
//! meant (a stream subscription started from an event's position, an ack by version) with
//! no error anywhere: each is its own type here. A literal still converts (`5.into()`), an
//! event's version never becomes a position.

use std::fmt;

use crate::RecordedEvent;

/// An event's number in its stream: the first event is version 0, and each event appended
/// to the stream is the next version.
///
/// ```
/// use quiver_client::StreamVersion;
/// let v = StreamVersion(4);
/// assert_eq!(v.next(), StreamVersion(5));
/// assert_eq!(u64::from(v), 4);
/// assert_eq!(StreamVersion::from(4), v);
/// assert_eq!(v.to_string(), "4");
/// ```
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct StreamVersion(pub u64);

/// An event's place in `$all`, the one order of every commit in the store: events of later
/// commits have larger positions, whatever their streams.
///
/// ```
/// use quiver_client::Position;
/// let p = Position(1_000);
/// assert_eq!(p.next(), Position(1_001));
/// assert_eq!(p.get(), 1_000);
/// ```
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Position(pub u64);

macro_rules! number {
    ($t:ident) => {
        impl $t {
            /// The number.
            ///
            /// ```
            #[doc = concat!("assert_eq!(quiver_client::", stringify!($t), "(7).get(), 7);")]
            /// ```
            pub const fn get(self) -> u64 {
                self.0
            }

            /// The one after this (where a reader resumes after this event).
            ///
            /// ```
            #[doc = concat!("use quiver_client::", stringify!($t), ";")]
            #[doc = concat!("assert_eq!(", stringify!($t), "(7).next(), ", stringify!($t), "(8));")]
            /// ```
            pub const fn next(self) -> Self {
                $t(self.0.saturating_add(1))
            }
        }

        impl From<u64> for $t {
            fn from(n: u64) -> Self {
                $t(n)
            }
        }

        impl From<$t> for u64 {
            fn from(n: $t) -> Self {
                n.0
            }
        }

        /// Compares with a plain number (`assert_eq!(event.version, 0)`); a version and a
        /// position still never compare with each other.
        impl PartialEq<u64> for $t {
            fn eq(&self, n: &u64) -> bool {
                self.0 == *n
            }
        }

        /// Orders against a plain number (`assert!(event.position >= 10)`).
        impl PartialOrd<u64> for $t {
            fn partial_cmp(&self, n: &u64) -> Option<std::cmp::Ordering> {
                self.0.partial_cmp(n)
            }
        }

        /// `n` further on.
        impl std::ops::Add<u64> for $t {
            type Output = $t;
            fn add(self, n: u64) -> $t {
                $t(self.0 + n)
            }
        }

        /// How far apart two are (`end - start`: how many lie between).
        impl std::ops::Sub for $t {
            type Output = u64;
            fn sub(self, earlier: $t) -> u64 {
                self.0 - earlier.0
            }
        }

        /// As a JSON number (for `serde_json` object builders; `json!` needs nothing).
        impl From<$t> for serde_json::Value {
            fn from(n: $t) -> Self {
                serde_json::Value::from(n.0)
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

number!(StreamVersion);
number!(Position);

/// What a subscription counts in: [`StreamVersion`] for a stream's
/// ([`Client::subscribe_stream`](crate::Client::subscribe_stream)), [`Position`] for
/// `$all`'s ([`Client::subscribe_all`](crate::Client::subscribe_all)). Its markers and its
/// resume point are of this type, so a stream subscription's resume point cannot start an
/// `$all` subscription by mistake. Sealed: these two are the only ones.
///
/// ```
/// use quiver_client::{Point, Position, StreamVersion};
/// fn resume_after<P: Point>(last: P) -> P {
///     last.next_point()
/// }
/// assert_eq!(resume_after(StreamVersion(3)), StreamVersion(4));
/// assert_eq!(resume_after(Position(9)), Position(10));
/// ```
pub trait Point:
    sealed::Sealed
    + Copy
    + Ord
    + fmt::Debug
    + fmt::Display
    + From<u64>
    + Into<u64>
    + Send
    + Sync
    + Unpin
    + 'static
{
    /// Where `event` is, counted in this type.
    fn of(event: &RecordedEvent) -> Self;
    /// The one after this.
    fn next_point(self) -> Self;
}

impl Point for StreamVersion {
    fn of(event: &RecordedEvent) -> Self {
        event.version
    }
    fn next_point(self) -> Self {
        self.next()
    }
}

impl Point for Position {
    fn of(event: &RecordedEvent) -> Self {
        event.position
    }
    fn next_point(self) -> Self {
        self.next()
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::StreamVersion {}
    impl Sealed for super::Position {}
}
