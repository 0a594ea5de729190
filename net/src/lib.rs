//! # quiver-net
//!
//! Quiver's network layer: length-prefixed frames and messages with decoders that never
//! panic, the QUIC transport (quinn, rustls with the `ring` provider) and UDP broadcast
//! discovery authenticated by the cluster secret.
//!
//! This crate knows nothing of storage: it must never depend on `quiver-engine`.
//!
//! Status: not built yet. The issue "A single-node Quiver server and the Rust client, over
//! QUIC" fills this crate; until then the workspace keeps its place in the layout.
#![warn(missing_docs, unreachable_pub)]
