//! The client's errors: what the server refused, typed, and what went wrong on the way.

use quiver_net::message::Response;
use quiver_net::{ErrorCode, Text};

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream's version is not what the writer expected; `actual` is its version
    /// (`None`: the stream does not exist).
    #[error("{}", conflict(.message, *.actual))]
    WrongExpectedVersion {
        /// The stream's version.
        actual: Option<u64>,
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
    #[error("connecting: {0}")]
    Connect(String),
    /// The connection or stream failed.
    #[error("transport: {0}")]
    Transport(String),
    /// The server answered something that does not fit the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// An event's data is not what the caller expected it to decode as
    /// ([`crate::RecordedEvent::json`]).
    #[error("decoding: {0}")]
    Decode(String),
    /// The deadline passed, here or on the server (whose `Timeout` code arrives as this):
    /// the request's outcome is unknown.
    #[error("the request timed out")]
    Timeout,
}

/// A conflict as the server said it (it names the stream, what the writer expected and what
/// the stream is, in words), or in words here when it said nothing.
fn conflict(message: &str, actual: Option<u64>) -> String {
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
            Error::Connect(_) | Error::Transport(_) | Error::Timeout => true,
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
                actual,
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
            other => Error::Protocol(format!("unexpected response {:?}", other.kind())),
        }
    }

    /// For moving to another node of a cluster: a connection that could not be made is as
    /// good as `NotLeader` (nothing was sent); a request cut off or unanswered is `None`
    /// (it may have been applied); anything else does not move.
    pub(crate) fn moving_code(&self) -> Option<ErrorCode> {
        match self {
            Error::Connect(_) => Some(ErrorCode::NotLeader),
            Error::Transport(_) | Error::Timeout => None,
            _ => Some(ErrorCode::Internal),
        }
    }

    pub(crate) fn transport(e: impl std::fmt::Display) -> Error {
        Error::Transport(e.to_string())
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
            _ => Error::transport(e),
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
            actual: Some(1),
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
            Error::Connect("refused".into()),
            Error::Transport("reset".into()),
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
}
