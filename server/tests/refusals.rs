//! What a client that breaks the connection rules sees, byte for byte, from a raw QUIC peer:
//! every refusal the protocol promises arrives as an `Error` frame before the close, and the
//! close carries the Quiver close code with the message as its reason.

mod common;

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use common::{config, start};
use quiver_net::message::{ReadFrom, Request, Response};
use quiver_net::{ErrorCode, Text};

async fn connect(dir: &std::path::Path, addr: std::net::SocketAddr) -> quinn::Connection {
    let ca = quiver_server::tls::read_certs(&dir.join("tls/ca.pem")).unwrap();
    let endpoint = quiver_net::quic::client_endpoint(&ca).unwrap();
    endpoint.connect(addr, "localhost").unwrap().await.unwrap()
}

/// Sends `bytes` on a new stream, finishes it, and decodes the one frame that comes back.
async fn exchange(conn: &quinn::Connection, bytes: &[u8]) -> Response {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    send.finish().unwrap();
    let answer = recv
        .read_to_end(1 << 20)
        .await
        .expect("an answer before the close");
    let mut buf = BytesMut::from(&answer[..]);
    let frame = quiver_net::frame::parse(&mut buf, 1 << 20)
        .unwrap()
        .unwrap();
    assert!(buf.is_empty(), "one frame");
    Response::decode(&frame).unwrap()
}

fn encode(req: &Request) -> BytesMut {
    let mut out = BytesMut::new();
    req.encode(&mut out);
    out
}

fn hello() -> BytesMut {
    encode(&Request::Hello {
        version: quiver_net::PROTOCOL_VERSION,
        client: Text::from("raw"),
        token: Default::default(),
    })
}

/// Asserts `resp` is an `Error` with `code`, returning its message.
fn error_message(resp: Response, code: ErrorCode) -> String {
    match resp {
        Response::Error {
            code: got, message, ..
        } => {
            assert_eq!(got, code, "{}", message.as_str());
            message.as_str().to_string()
        }
        other => panic!("expected Error {code:?}, got {other:?}"),
    }
}

/// Waits for the server's close and returns its application code and reason.
async fn closed_by_server(conn: &quinn::Connection) -> (u64, String) {
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await;
    match closed.expect("the server closes the connection") {
        quinn::ConnectionError::ApplicationClosed(c) => (
            c.error_code.into_inner(),
            String::from_utf8(c.reason.to_vec()).unwrap(),
        ),
        other => panic!("closed by {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_before_hello_is_answered_malformed_then_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(dir.path()));
    let conn = connect(dir.path(), server.addr).await;
    let status = encode(&Request::Status);
    let message = error_message(exchange(&conn, &status).await, ErrorCode::Malformed);
    assert!(message.contains("must be Hello"), "{message}");
    let (code, reason) = closed_by_server(&conn).await;
    assert_eq!(
        (code, reason),
        (1, message),
        "close code 1 (protocol), the message as reason"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_first_stream_is_answered_malformed_then_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(dir.path()));
    let conn = connect(dir.path(), server.addr).await;
    let message = error_message(exchange(&conn, &[]).await, ErrorCode::Malformed);
    assert!(message.contains("must be Hello"), "{message}");
    assert_eq!(closed_by_server(&conn).await.0, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_hello_is_answered_malformed_then_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(small(dir.path()));
    let conn = connect(dir.path(), server.addr).await;
    // A frame header claiming more than the server's limit.
    let mut bad = BytesMut::new();
    quiver_net::frame::put_header(&mut bad, 0x0100, 0, 1 << 20);
    bad.put_slice(&[0u8; 16]);
    let message = error_message(exchange(&conn, &bad).await, ErrorCode::Malformed);
    assert!(message.contains("must be Hello"), "{message}");
    assert_eq!(closed_by_server(&conn).await.0, 1);
    server.stop().await;
}

/// A server whose frame limit is small enough to overrun cheaply.
fn small(dir: &std::path::Path) -> quiver_server::ServerConfig {
    quiver_server::ServerConfig {
        frame_bytes_max: 4096,
        ..config(dir)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_request_stream_is_answered_invalid_request_and_the_connection_stays() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(dir.path()));
    let conn = connect(dir.path(), server.addr).await;
    assert!(matches!(
        exchange(&conn, &hello()).await,
        Response::HelloOk { .. }
    ));
    let message = error_message(exchange(&conn, &[]).await, ErrorCode::InvalidRequest);
    assert!(message.contains("empty request stream"), "{message}");
    // A request given up on (its stream reset) is no error either.
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode(&Request::Status)[..4])
        .await
        .unwrap();
    send.reset(0u8.into()).unwrap();
    // The connection still serves.
    let read = encode(&Request::ReadStream {
        stream: Text::from("nothing-here"),
        from: ReadFrom::Start,
        backward: false,
        max_count: 1,
    });
    error_message(exchange(&conn, &read).await, ErrorCode::StreamNotFound);
    assert!(matches!(
        exchange(&conn, &encode(&Request::Status)).await,
        Response::Status { .. }
    ));
    assert!(conn.close_reason().is_none());
    conn.close(0u8.into(), b"done");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_any_token_is_accepted_and_an_empty_one_configured_is_none() {
    let dir = tempfile::tempdir().unwrap();
    // `QUIVER_TOKEN=` in an environment gives an empty token: no authentication, not a
    // requirement that refuses every client that sends one.
    let server = start(quiver_server::ServerConfig {
        token: Some(String::new()),
        ..config(dir.path())
    });
    let conn = connect(dir.path(), server.addr).await;
    let hello = encode(&Request::Hello {
        version: quiver_net::PROTOCOL_VERSION,
        client: Text::from("raw"),
        token: bytes::Bytes::from_static(b"not-needed"),
    });
    assert!(matches!(
        exchange(&conn, &hello).await,
        Response::HelloOk { .. }
    ));
    conn.close(0u8.into(), b"done");
    server.stop().await;
}
