//! # quiver-client
//!
//! The crate Rust services depend on to talk to Quiver over QUIC. It depends on
//! `quiver-net` only, never on the engine or the server.
//!
//! Status: not built yet. The issue "A single-node Quiver server and the Rust client, over
//! QUIC" fills this crate; until then the workspace keeps its place in the layout.
#![warn(missing_docs, unreachable_pub)]
