//! # quiver-jepsen
//!
//! Quiver's Jepsen-style consistency harness: it runs real `quiver` processes (in Docker
//! networks or network namespaces), injects faults (partitions, kill -9, SIGSTOP, lost
//! unsynced writes, damaged segment tails), records a history of appends and reads, and
//! checks it as Elle's list-append (stream = key, event = element).
//!
//! Status: not built yet; it needs the server, the client and the cluster first. Until then
//! the workspace keeps its place in the layout.
#![warn(missing_docs, unreachable_pub)]
