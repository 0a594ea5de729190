//! # quiver-net
//!
//! Quiver's network layer: the wire protocol (frames and messages, with decoders that never
//! panic), the QUIC transport (quinn, rustls with the `ring` provider), and — with the
//! cluster — UDP broadcast discovery authenticated by the cluster secret.
//!
//! This crate knows nothing of storage: it must never depend on `quiver-engine` (CI checks
//! the dependency direction). Its message types are its own; the server converts.
//!
//! ## Layout
//! - `frame.rs` — the 8-byte frame header, size limits, incremental parsing.
//! - `wire.rs` — primitive encodings and the checked `Reader`.
//! - `message.rs` — every request and response, encode and decode.
//! - `peer.rs` — the peer protocol's messages (Raft messages between nodes, mirroring
//!   `quiver-raft`'s without depending on it) and authentication frames, encode and decode.
//! - `peer_quic.rs` — the peer endpoint: ALPN `quiver-peer/1`, authentication with the
//!   cluster secret, per-peer bounded queues, reconnects.
//! - `quic.rs` — QUIC endpoints (rustls with `ring` only, ALPN `quiver/1`) and frame I/O;
//!   the only module that touches tokio or quinn.
//!
//! `docs/PROTOCOL.md` is the byte-level specification.
#![warn(missing_docs, unreachable_pub)]

pub mod frame;
pub mod message;
pub mod peer;
pub mod peer_quic;
pub mod quic;
pub mod wire;

pub use frame::{Frame, FrameError};
pub use message::{ErrorCode, Kind, Request, Response, ALPN, PROTOCOL_VERSION};
pub use wire::{DecodeError, Text};
