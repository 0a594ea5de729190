//! The QUIC transport: endpoints configured for Quiver (TLS through rustls with the `ring`
//! provider only, ALPN `quiver/1`, stream limits), and frame I/O on QUIC streams.
//!
//! This is the only module that touches tokio or quinn; the protocol above it (`frame`,
//! `message`) is plain bytes and is tested without sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::frame::{self, Frame, FrameError};
use crate::message::ALPN;

/// Most bidirectional streams (requests in flight) a peer may open on one connection.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 256;
/// A connection with no traffic for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The idle timeout Quiver's client proposes (QUIC takes the smaller of both sides'), with
/// keep-alives every third of it: a server that dies (a process killed, a machine gone) sends
/// no close and answers nothing, and its client's requests fail this soon after its last
/// packet instead of waiting out their deadline, so the client moves on to another node of
/// a cluster (DESIGN.md: failover ≤ 3 s as a client sees it; docs/BENCHMARKS.md measures
/// it). A live server answers keep-alives at once, however busy its disk.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// The application error code of a `RESET_STREAM` by which the server ends a response it
/// dropped in the middle of a frame: the reader was the slowest when the server's memory
/// budget for slow clients was full (docs/PROTOCOL.md, slow readers).
pub const RESET_SLOW_READER: u32 = 1;
/// Socket buffer asked for (the kernel caps it at `net.core.rmem_max` / `wmem_max`). The
/// default (~208 KB) overflows when many connections send large appends at once: measured
/// 1,342 of 52,336 datagrams dropped with 16 connections of 100-event appends.
pub const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Why an endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The certificate or key was refused by rustls.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// QUIC refused the TLS configuration (e.g. no TLS 1.3 cipher suite).
    #[error("QUIC TLS configuration: {0}")]
    Quic(String),
    /// The socket could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Why reading a frame from a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadFrameError {
    /// The frame was refused (too large, unknown flags).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream ended in the middle of a frame.
    #[error("the stream ended inside a frame")]
    Truncated,
    /// The QUIC stream failed (reset, connection lost).
    #[error(transparent)]
    Read(#[from] quinn::ReadError),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport(idle: Duration) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(STREAMS_PER_CONNECTION_MAX.into());
    t.max_concurrent_uni_streams(0u8.into());
    t.max_idle_timeout(Some(idle.try_into().expect("a valid idle timeout")));
    t.keep_alive_interval(Some(idle / 3));
    t
}

/// A server endpoint on `addr` presenting `chain` (leaf first) with `key`.
pub fn server_endpoint(
    addr: SocketAddr,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<quinn::Endpoint, SetupError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| SetupError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport(IDLE_TIMEOUT)));
    endpoint(addr, Some(config))
}

/// Binds a UDP socket with large buffers and runs a quinn endpoint on it.
fn endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> Result<quinn::Endpoint, SetupError> {
    let bind = |source| SetupError::Bind { addr, source };
    let socket = std::net::UdpSocket::bind(addr).map_err(bind)?;
    let sock = socket2::SockRef::from(&socket);
    // Best effort: a smaller buffer still works, only with more drops under load.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    let runtime = Arc::new(quinn::TokioRuntime);
    quinn::Endpoint::new(quinn::EndpointConfig::default(), server, socket, runtime).map_err(bind)
}

/// A client endpoint that trusts the certificate authorities in `roots`.
pub fn client_endpoint(roots: &[CertificateDer<'static>]) -> Result<quinn::Endpoint, SetupError> {
    client_endpoint_on(
        roots,
        "0.0.0.0:0".parse().expect("a valid wildcard address"),
    )
}

/// [`client_endpoint`] on the socket `bind`: `[::]:0` reaches IPv6 servers (and, dual-stack,
/// IPv4 ones too, where the host allows it).
pub fn client_endpoint_on(
    roots: &[CertificateDer<'static>],
    bind: SocketAddr,
) -> Result<quinn::Endpoint, SetupError> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone())?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(store)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| SetupError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport(CLIENT_IDLE_TIMEOUT)));
    let mut endpoint = endpoint(bind, None)?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// Reads the next whole frame from `recv` into `buf` (which keeps any bytes past it for the
/// next call). `Ok(None)`: the peer finished the stream cleanly between frames.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    buf: &mut BytesMut,
    max_payload: usize,
) -> Result<Option<Frame>, ReadFrameError> {
    loop {
        if let Some(f) = frame::parse(buf, max_payload)? {
            return Ok(Some(f));
        }
        // Read straight into the buffer's spare room: no intermediate copy.
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        let chunk = recv.read_chunk(buf.capacity() - buf.len(), true).await?;
        match chunk {
            Some(c) => buf.extend_from_slice(&c.bytes),
            None if buf.is_empty() => return Ok(None),
            None => return Err(ReadFrameError::Truncated),
        }
    }
}
