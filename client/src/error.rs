//! The client's errors: what the server refused, typed, and what went wrong on the way.
//!
//! An error that another one caused keeps that one whole as its
//! [`source`](std::error::Error::source), and its own text says only what the client was
//! doing (`transport: sending the request`), as the Rust API guidelines ask: a reporter
//! (`anyhow`'s `{:#}`, or a walk of `source()`) prints the whole chain, once.

use std::sync::Arc;

use quiver_net::message::Response;
use quiver_net::{ErrorCode, Text};

use crate::StreamVersion;

/// An error beneath a client [`Error`], kept whole: its text is that error's, and its
/// source that error's source. Two are equal when their texts are.
///
/// ```
/// use std::error::Error as _;
/// let e = quiver_client::Error::decode("event 1 of 'acct-1'", serde_json::from_str::<u8>("x").unwrap_err());
/// let cause = e.source().expect("the JSON error");
/// assert!(cause.to_string().contains("expected value"));
/// ```
#[derive(Debug, Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl Cause {
    /// Wraps an error.
    ///
    /// ```
    /// let cause = quiver_client::Cause::new(std::io::Error::other("disk on fire"));
    /// assert_eq!(cause.to_string(), "disk on fire");
    /// ```
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Cause {
        Cause(Arc::new(e))
    }

    /// The error itself, to downcast to the type it is (a `quinn::ConnectionError`, say).
    ///
    /// ```
    /// let cause = quiver_client::Cause::new(std::io::Error::other("disk on fire"));
    /// assert!(cause.get_ref().downcast_ref::<std::io::Error>().is_some());
    /// ```
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Cause) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for Cause {}

/// Why a client call failed.
///
/// ```
/// use quiver_client::{Error, ExpectedVersion, StreamVersion};
/// // What a command handler does when its append to an account fails.
/// fn after_failed_append(e: &Error) -> &'static str {
///     match e {
///         Error::WrongExpectedVersion { .. } => "reload the account and decide again",
///         Error::StreamDeleted(_) => "refuse: the account is closed for good",
///         // Not sent, or the outcome is unknown: the same events (same ids) may go again.
///         e if e.is_retryable() => "send the same events again",
///         _ => "give up and report it",
///     }
/// }
/// let conflict = Error::WrongExpectedVersion {
///     actual: Some(StreamVersion(5)),
///     message: String::new(),
///     stream: Some("account-1".into()),
///     expected: Some(ExpectedVersion::Exact(4)),
/// };
/// assert_eq!(after_failed_append(&conflict), "reload the account and decide again");
/// assert_eq!(conflict.to_string(), "wrong expected version: the stream is at version 5");
/// assert_eq!(after_failed_append(&Error::Timeout), "send the same events again");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream's version is not what the writer expected; `actual` is its version
    /// (`None`: the stream does not exist).
    #[error("{}", conflict(.message, *.actual))]
    WrongExpectedVersion {
        /// The stream's version.
        actual: Option<StreamVersion>,
        /// The server's message.
        message: String,
        /// The stream in conflict (in a multi-stream append, the one whose check failed),
        /// when the client could tell.
        stream: Option<String>,
        /// What the writer expected of it, when the client could tell.
        expected: Option<crate::ExpectedVersion>,
    },
    /// The stream was hard-deleted.
    #[error("stream deleted: {0}")]
    StreamDeleted(String),
    /// The stream (or persistent subscription group) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A persistent subscription group of that name already exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The server requires a token, or refused the one given.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// Client and server speak different protocol versions.
    #[error("unsupported protocol version: {0}")]
    UnsupportedVersion(String),
    /// A request larger than the server accepts.
    #[error("request of {bytes} bytes exceeds the server's limit of {max}")]
    TooLarge {
        /// The request's size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Any other refusal by the server.
    #[error("server error {code:?}: {message}")]
    Server {
        /// The error code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The connection could not be made.
    #[error("connecting: {context}")]
    Connect {
        /// What the client was doing.
        context: String,
        /// The error that stopped it, if another error did.
        #[source]
        source: Option<Cause>,
    },
    /// The connection or stream failed.
    #[error("transport: {context}")]
    Transport {
        /// What the client was doing.
        context: String,
        /// The error that stopped it.
        #[source]
        source: Option<Cause>,
    },
    /// The server answered something that does not fit the protocol.
    #[error("protocol: {context}")]
    Protocol {
        /// What did not fit.
        context: String,
        /// The decoder's error, if one said why.
        #[source]
        source: Option<Cause>,
    },
    /// An event's data is not what the caller expected it to decode as
    /// ([`crate::RecordedEvent::json`]).
    #[error("decoding {context}")]
    Decode {
        /// What was being decoded.
        context: String,
        /// The decoder's error.
        #[source]
        source: Option<Cause>,
    },
    /// The deadline passed, here or on the server (whose `Timeout` code arrives as this):
    /// the request's outcome is unknown.
    #[error("the request timed out")]
    Timeout,
}

/// A conflict as the server said it (it names the stream, what the writer expected and what
/// the stream is, in words), or in words here when it said nothing.
fn conflict(message: &str, actual: Option<StreamVersion>) -> String {
    match (message.is_empty(), actual) {
        (false, _) => message.to_string(),
        (true, Some(v)) => format!("wrong expected version: the stream is at version {v}"),
        (true, None) => "wrong expected version: the stream does not exist".to_string(),
    }
}

impl Error {
    /// Whether the same request may succeed if it is sent again, unchanged (for an append,
    /// with the same event ids, which makes a retry idempotent): the server could not be
    /// reached, the outcome is unknown (a timeout, a lost connection), or the node was not
    /// the leader, unavailable or out of time. A conflict, a missing stream, a bad request
    /// or refused credentials will be refused again.
    ///
    /// ```
    /// use quiver_client::Error;
    /// assert!(Error::Timeout.is_retryable());
    /// assert!(!Error::NotFound("acct-1".into()).is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Transport { .. } | Error::Timeout => true,
            Error::Server { code, .. } => matches!(
                code,
                ErrorCode::NotLeader | ErrorCode::Unavailable | ErrorCode::Timeout
            ),
            _ => false,
        }
    }

    pub(crate) fn from_wire(code: ErrorCode, message: Text, actual: Option<u64>) -> Error {
        let message = message.as_str().to_string();
        match code {
            ErrorCode::WrongExpectedVersion => Error::WrongExpectedVersion {
                actual: actual.map(StreamVersion),
                message,
                stream: None,
                expected: None,
            },
            ErrorCode::StreamDeleted => Error::StreamDeleted(message),
            ErrorCode::StreamNotFound => Error::NotFound(message),
            ErrorCode::AlreadyExists => Error::AlreadyExists(message),
            ErrorCode::Unauthenticated => Error::Unauthenticated(message),
            ErrorCode::UnsupportedVersion => Error::UnsupportedVersion(message),
            // One timeout for the caller, whoever ran out of time: the outcome is unknown.
            ErrorCode::Timeout => Error::Timeout,
            code => Error::Server { code, message },
        }
    }

    pub(crate) fn unexpected(r: Response) -> Error {
        match r {
            Response::Error {
                code,
                message,
                actual,
            } => Error::from_wire(code, message, actual),
            other => Error::protocol(format!("unexpected response {:?}", other.kind())),
        }
    }

    /// For moving to another node of a cluster: a connection that could not be made is as
    /// good as `NotLeader` (nothing was sent); a request cut off or unanswered is `None`
    /// (it may have been applied); anything else does not move.
    pub(crate) fn moving_code(&self) -> Option<ErrorCode> {
        match self {
            Error::Connect { .. } => Some(ErrorCode::NotLeader),
            Error::Transport { .. } | Error::Timeout => None,
            _ => Some(ErrorCode::Internal),
        }
    }

    /// The transport failed while the client was doing `context`, because of `e`.
    ///
    /// ```
    /// let e = quiver_client::Error::transport("sending the request", std::io::Error::other("reset"));
    /// assert_eq!(e.to_string(), "transport: sending the request");
    /// assert!(e.is_retryable());
    /// ```
    pub fn transport(
        context: impl Into<String>,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::Transport {
            context: context.into(),
            source: Some(Cause::new(e)),
        }
    }

    /// The connection could not be made while the client was doing `context`, because of
    /// `e`.
    ///
    /// ```
    /// let e = quiver_client::Error::connect("reading the CA file ca.pem", std::io::Error::other("no such file"));
    /// assert_eq!(e.to_string(), "connecting: reading the CA file ca.pem");
    /// ```
    pub fn connect(
        context: impl Into<String>,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::Connect {
            context: context.into(),
            source: Some(Cause::new(e)),
        }
    }

    /// The server's answer does not fit the protocol, as `context` says.
    ///
    /// ```
    /// let e = quiver_client::Error::protocol("the read ended without its last frame");
    /// assert_eq!(e.to_string(), "protocol: the read ended without its last frame");
    /// ```
    pub fn protocol(context: impl Into<String>) -> Error {
        Error::Protocol {
            context: context.into(),
            source: None,
        }
    }

    /// What `context` names could not be decoded, because of `e`.
    ///
    /// ```
    /// let bad = serde_json::from_str::<u8>("x").unwrap_err();
    /// let e = quiver_client::Error::decode("event 1 of 'acct-1'", bad);
    /// assert_eq!(e.to_string(), "decoding event 1 of 'acct-1'");
    /// ```
    pub fn decode(
        context: impl Into<String>,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::Decode {
            context: context.into(),
            source: Some(Cause::new(e)),
        }
    }

    /// A response that could not be decoded.
    pub(crate) fn response(e: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Protocol {
            context: "the server's response does not decode".into(),
            source: Some(Cause::new(e)),
        }
    }

    /// This error and each of its sources, joined by ": " (what a person should read).
    ///
    /// ```
    /// let e = quiver_client::Error::transport("sending the request", std::io::Error::other("reset"));
    /// assert_eq!(e.report(), "transport: sending the request: reset");
    /// ```
    pub fn report(&self) -> String {
        let mut text = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            text.push_str(": ");
            text.push_str(&e.to_string());
            next = e.source();
        }
        text
    }

    /// A response stream that failed. A reset with the slow-reader code means the server
    /// dropped this read or subscription to stay within its memory budget.
    pub(crate) fn read(e: quiver_net::quic::ReadFrameError) -> Error {
        use quiver_net::quic::{ReadFrameError, RESET_SLOW_READER};
        match &e {
            ReadFrameError::Read(quinn::ReadError::Reset(code))
                if code.into_inner() == u64::from(RESET_SLOW_READER) =>
            {
                Error::Server {
                    code: ErrorCode::Unavailable,
                    message: "the server dropped this response as the slowest reader (its \
                              memory budget for slow clients was full); read again from the \
                              next event"
                        .into(),
                }
            }
            _ => Error::transport("reading the response", e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflict_reads_as_the_server_said_it() {
        let e = Error::WrongExpectedVersion {
            stream: None,
            expected: None,
            actual: Some(StreamVersion(1)),
            message: "wrong expected version for 'acct-1': expected version 0, but the stream \
                      is at version 1"
                .into(),
        };
        assert_eq!(
            e.to_string(),
            "wrong expected version for 'acct-1': expected version 0, but the stream is at \
             version 1"
        );
        let bare = Error::WrongExpectedVersion {
            stream: None,
            expected: None,
            actual: None,
            message: String::new(),
        };
        assert_eq!(
            bare.to_string(),
            "wrong expected version: the stream does not exist"
        );
        assert!(!bare.to_string().contains("None"));
    }

    #[test]
    fn one_timeout_whoever_ran_out_of_time() {
        assert_eq!(
            Error::from_wire(ErrorCode::Timeout, Text::from("commit wait"), None),
            Error::Timeout
        );
    }

    #[test]
    fn what_may_be_sent_again() {
        let server = |code| Error::Server {
            code,
            message: String::new(),
        };
        for retryable in [
            Error::Timeout,
            Error::connect("handshake", std::io::Error::other("refused")),
            Error::transport("reading", std::io::Error::other("reset")),
            server(ErrorCode::NotLeader),
            server(ErrorCode::Unavailable),
            Error::from_wire(ErrorCode::Timeout, Text::from("waited 5 s"), None),
        ] {
            assert!(retryable.is_retryable(), "{retryable:?}");
        }
        for refused in [
            Error::WrongExpectedVersion {
                actual: None,
                message: String::new(),
                stream: None,
                expected: None,
            },
            Error::StreamDeleted("s".into()),
            Error::Unauthenticated("no token".into()),
            server(ErrorCode::InvalidRequest),
            server(ErrorCode::IdempotencyMismatch),
        ] {
            assert!(!refused.is_retryable(), "{refused:?}");
        }
    }

    #[test]
    fn causes_are_sources_and_a_report_reads_them_once() {
        use std::error::Error as _;
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let e = Error::transport("sending the request", inner);
        assert_eq!(e.to_string(), "transport: sending the request");
        let cause = e.source().expect("a source");
        assert_eq!(cause.to_string(), "reset by peer");
        let Error::Transport {
            source: Some(cause),
            ..
        } = &e
        else {
            panic!("{e:?}")
        };
        let io = cause.get_ref().downcast_ref::<std::io::Error>();
        assert_eq!(
            io.map(|e| e.kind()),
            Some(std::io::ErrorKind::ConnectionReset)
        );
        assert_eq!(e.report(), "transport: sending the request: reset by peer");
        assert_eq!(Error::protocol("odd").report(), "protocol: odd");
    }
}
