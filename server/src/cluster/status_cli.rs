//! `quiver cluster status`: asks a node's HTTP operations endpoint for `/status` and prints
//! its `cluster` object. HTTP because that is where a node already publishes its state as
//! JSON, and the client protocol has no cluster command yet (it would need a new message in
//! docs/PROTOCOL.md); one plain HTTP/1.0 GET needs no client library.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::ClusterStatus;

/// The largest response read (a status document is a few KiB).
const RESPONSE_BYTES_MAX: u64 = 1 << 20;

/// `GET path` from the HTTP endpoint at `addr`, within `timeout`: the status code and body.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String)> {
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    s.set_write_timeout(Some(left()))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    s.set_read_timeout(Some(left()))?;
    let mut raw = Vec::new();
    s.take(RESPONSE_BYTES_MAX)
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer of {addr}"))?;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("{addr} sent no HTTP answer");
    };
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("{addr} sent a malformed status line"))?;
    Ok((code, body.to_string()))
}

/// The `cluster` object of the node's `/status`.
pub fn fetch(addr: SocketAddr, timeout: Duration) -> Result<ClusterStatus> {
    let (code, body) = http_get(addr, "/status", timeout)?;
    if code != 200 {
        bail!("{addr} answered /status with HTTP {code}");
    }
    let doc: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("{addr} sent a malformed status"))?;
    let Some(cluster) = doc.get("cluster") else {
        bail!("the node at {addr} is not in cluster mode (its /status has no `cluster`)");
    };
    serde_json::from_value(cluster.clone()).context("reading the cluster status")
}

/// Renders a status for people: the node's view, then one line per peer.
pub fn render(s: &ClusterStatus) -> String {
    let opt = |v: Option<u64>| v.map_or("none".to_string(), |v| v.to_string());
    let mut out = format!(
        "node {}: {} in term {}, leader {}\ncommit {}, applied {}, last index {}, ready {}\n",
        s.node_id,
        s.role,
        s.term,
        opt(s.leader),
        s.commit,
        s.applied,
        s.last_index,
        s.ready
    );
    let ids = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
    out += &format!(
        "voters: {}\nlearners: {}\n",
        ids(&s.voters),
        ids(&s.learners)
    );
    for f in &s.followers {
        out += &format!("  member {}: matched {}, lag {}", f.id, f.matched, f.lag);
        if let Some(us) = f.append_rtt_us {
            out += &format!(", append round trip {:.1} ms", us as f64 / 1000.0);
        }
        out.push('\n');
    }
    for p in &s.peers {
        let state = if p.connected {
            "connected"
        } else {
            "not connected"
        };
        out += &format!("  peer {} at {}: {state}\n", p.id, p.addr);
    }
    out += &format!(
        "peer connections accepted {}, refused {}; messages from non-members {}\n",
        s.peer_connections_accepted, s.peer_connections_refused, s.messages_from_non_members
    );
    for d in &s.discovered {
        out += &format!(
            "  discovered {} at {} ({}, heard {} ms ago): not a member; add it with `quiver \
             cluster add {} {}`\n",
            d.id, d.peer, d.state, d.age_ms, d.id, d.peer
        );
    }
    if let Some(d) = &s.discovery {
        out += &format!(
            "discovery on {}: {} packets accepted; dropped {} forged, {} replayed, {} stale, \
             {} malformed, {} of another store\n",
            d.listen, d.accepted, d.forged, d.replayed, d.stale, d.malformed, d.other_store
        );
    }
    if let Some(why) = &s.failed {
        out += &format!("FAILED: {why}\n");
    }
    out
}
