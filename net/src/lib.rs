//! # quiver-net
//!
//! Quiver's network layer: the wire protocol (frames and messages, with decoders that never
//! panic), the QUIC transport (quinn, rustls with the `ring` provider), and — with the
//! cluster — UDP broadcast discovery authenticated by the cluster secret.
//!
//! This crate knows nothing of storage or of the Raft core: it must never depend on
//! `quiver-engine` or `quiver-raft` (the client crate depends on this one; CI checks the
//! dependency direction). Its message types are its own, the peer protocol's included; the
//! server converts (`server/src/peer_map.rs`).
//!
//! ## Layout
//! - `frame.rs` — the 8-byte frame header, size limits, incremental parsing.
//! - `wire.rs` — primitive encodings and the checked `Reader`.
//! - `message.rs` — every request and response, encode and decode.
//! - `peer.rs` — the peer protocol's messages (Raft messages between nodes, mirroring
//!   `quiver-raft`'s without depending on it) and authentication frames, encode and decode.
//! - `quic.rs` — QUIC endpoints (rustls with `ring` only, ALPN `quiver/1`) and frame I/O.
//! - `discovery.rs` — UDP broadcast discovery: announcements authenticated with an
//!   HMAC of the cluster secret, the receiver's filter (store, age, replay), the service.
//! - `peer_quic/` — the peer endpoint: ALPN `quiver-peer/1`, authentication with the
//!   cluster secret, per-peer bounded queues, reconnects.
//!
//! Only `quic.rs` and `peer_quic/` touch tokio or quinn; the protocols (`frame`, `message`,
//! `peer`) are plain bytes, tested without sockets.
//!
//! `docs/PROTOCOL.md` is the client protocol's byte-level specification, `docs/PEERS.md`
//! the peer protocol's.
#![warn(missing_docs, unreachable_pub)]

pub mod discovery;
pub mod frame;
pub mod message;
pub mod peer;
pub mod peer_quic;
pub mod quic;
pub mod wire;

pub use frame::{Frame, FrameError};
pub use message::{ErrorCode, Kind, Request, Response, ALPN, PROTOCOL_VERSION};
pub use wire::{DecodeError, Text};
