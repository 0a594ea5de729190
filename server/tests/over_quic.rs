//! A real server (in-process, real QUIC on loopback, real TLS with the generated CA, real
//! engine on disk) driven through `quiver-client`: every operation, its error paths, a
//! restart between writes and reads, peers that send garbage, and concurrent writers racing
//! on one stream.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
mod common;

use common::{client, config, start};
use quiver_client::{
    Client, ClientConfig, Error, EventData, ExpectedVersion, ReadAllOptions, ReadStreamOptions,
    StreamVersion,
};
use quiver_server::{Server, ServerConfig};

fn ev(t: &str, data: &str) -> EventData {
    EventData::json(t, data.as_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_over_quic() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(dir.path()));
    let c = client(dir.path(), server.addr).await;

    // Appends and every expected-version kind.
    let r = c
        .append(
            "acct-1",
            ExpectedVersion::NoStream,
            vec![ev("Opened", "{}")],
        )
        .await
        .unwrap();
    assert_eq!(
        (r.next_expected_version.get(), r.position_first.get()),
        (0, 0)
    );
    let e = ev("Deposited", r#"{"amount":5}"#);
    let r = c
        .append("acct-1", ExpectedVersion::Exact(0), vec![e.clone()])
        .await
        .unwrap();
    assert_eq!(r.next_expected_version, 1);
    // A retry with the same id is idempotent.
    let again = c
        .append("acct-1", ExpectedVersion::Exact(0), vec![e])
        .await
        .unwrap();
    assert!(again.idempotent);
    assert_eq!(again.position_first, r.position_first);
    match c
        .append("acct-1", ExpectedVersion::Exact(5), vec![ev("X", "{}")])
        .await
    {
        Err(Error::WrongExpectedVersion {
            actual: Some(StreamVersion(1)),
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    match c
        .append("nope", ExpectedVersion::StreamExists, vec![ev("X", "{}")])
        .await
    {
        Err(Error::WrongExpectedVersion { actual: None, .. }) => {}
        other => panic!("{other:?}"),
    }
    c.append(
        "acct-1",
        ExpectedVersion::StreamExists,
        vec![ev("Withdrawn", "{}")],
    )
    .await
    .unwrap();
    // Multi-stream append: atomic.
    let w = c
        .append_multi(vec![
            (
                "acct-2".into(),
                ExpectedVersion::NoStream,
                vec![ev("Opened", "{}")],
            ),
            (
                "ledger".into(),
                ExpectedVersion::Any,
                vec![ev("Moved", "{}"), ev("Moved", "{}")],
            ),
        ])
        .await
        .unwrap();
    assert_eq!((w.position_first.get(), w.position_last.get()), (3, 5));
    let failed = c
        .append_multi(vec![
            (
                "acct-3".into(),
                ExpectedVersion::NoStream,
                vec![ev("Opened", "{}")],
            ),
            (
                "acct-2".into(),
                ExpectedVersion::NoStream,
                vec![ev("Opened", "{}")],
            ),
        ])
        .await;
    assert!(matches!(
        failed,
        Err(Error::WrongExpectedVersion {
            actual: Some(StreamVersion(0)),
            ..
        })
    ));
    assert_eq!(
        c.stream_info("acct-3").await.unwrap(),
        None,
        "nothing of a failed batch lands"
    );

    // Reads.
    let all = c
        .read_stream("acct-1", ReadStreamOptions::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let types: Vec<_> = all.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["Opened", "Deposited", "Withdrawn"]);
    assert_eq!(&all[1].data[..], br#"{"amount":5}"#);
    let back = c
        .read_stream(
            "acct-1",
            ReadStreamOptions::default().backward().max_count(2),
        )
        .await
        .unwrap();
    let v: Vec<u64> = back
        .collect()
        .await
        .unwrap()
        .iter()
        .map(|e| e.version.get())
        .collect();
    assert_eq!(v, [2, 1]);
    let opened = c
        .read_all(ReadAllOptions::default().type_prefix("Open"))
        .await
        .unwrap();
    let streams: Vec<_> = opened
        .collect()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.stream)
        .collect();
    assert_eq!(streams, ["acct-1", "acct-2"]);
    assert!(matches!(
        c.read_stream("missing", ReadStreamOptions::default()).await,
        Err(Error::NotFound(_))
    ));

    // Streams, metadata, deletes.
    let list = c.list_streams("acct-", None, 10).await.unwrap();
    assert_eq!(
        list.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["acct-1", "acct-2"]
    );
    let meta = quiver_client::StreamMetadata {
        max_count: Some(1),
        ..Default::default()
    };
    c.set_metadata("acct-1", meta).await.unwrap();
    let last = c
        .read_stream("acct-1", ReadStreamOptions::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(last.iter().map(|e| e.version).collect::<Vec<_>>(), [2]);
    c.delete_stream("acct-2", ExpectedVersion::Any)
        .await
        .unwrap();
    assert!(c.stream_info("acct-2").await.unwrap().unwrap().soft_deleted);
    c.tombstone_stream("ledger", ExpectedVersion::Exact(1))
        .await
        .unwrap();
    assert!(matches!(
        c.append("ledger", ExpectedVersion::Any, vec![ev("X", "{}")])
            .await,
        Err(Error::StreamDeleted(_))
    ));
    assert!(matches!(
        c.read_stream("ledger", ReadStreamOptions::default()).await,
        Err(Error::StreamDeleted(_))
    ));

    // Snapshots.
    c.put_snapshot("acct-1", 1, &b"state-1"[..]).await.unwrap();
    c.put_snapshot("acct-1", 2, &b"state-2"[..]).await.unwrap();
    assert_eq!(
        c.get_snapshot("acct-1", 1).await.unwrap().as_deref(),
        Some(&b"state-1"[..])
    );
    assert_eq!(
        c.latest_snapshot("acct-1", 9).await.unwrap().map(|s| s.0),
        Some(StreamVersion(2))
    );
    assert_eq!(c.list_snapshots("acct-1").await.unwrap(), [1, 2]);
    c.delete_snapshot("acct-1", 2).await.unwrap();
    assert_eq!(c.list_snapshots("acct-1").await.unwrap(), [1]);

    // Admin.
    c.scavenge().await.unwrap();
    let status = c.status().await.unwrap();
    assert_eq!(
        (status.store_id.as_str(), status.commit_position.get()),
        ("quiver", 6)
    );
    c.close().await;
    server.stop().await;

    // A restart between writes and reads.
    let server = start(config(dir.path()));
    let c = client(dir.path(), server.addr).await;
    let all = c
        .read_all(ReadAllOptions::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    // acct-1 shows its newest only (max count 1); acct-2 is soft-deleted; ledger is gone.
    let seen: Vec<_> = all
        .iter()
        .map(|e| (e.stream.as_str(), e.version.get()))
        .collect();
    assert_eq!(seen, [("acct-1", 2)]);
    c.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(ServerConfig {
        token: Some("s3cret".into()),
        ..config(dir.path())
    });
    let base = ClientConfig::local(dir.path()).server(server.addr);
    assert!(matches!(
        Client::connect(base.clone()).await,
        Err(Error::Unauthenticated(_))
    ));
    let wrong = Client::connect(base.clone().token("nope")).await;
    assert!(matches!(wrong, Err(Error::Unauthenticated(_))));
    let c = Client::connect(base.token("s3cret")).await.unwrap();
    c.append("s", ExpectedVersion::Any, vec![ev("T", "{}")])
        .await
        .unwrap();
    c.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_disconnects_only_its_sender() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(ServerConfig {
        frame_bytes_max: 4096,
        ..config(dir.path())
    });
    let good = client(dir.path(), server.addr).await;

    // A raw peer: hello, then a frame claiming more than the limit.
    let ca = quiver_server::tls::read_certs(&dir.path().join("tls/ca.pem")).unwrap();
    let endpoint = quiver_net::quic::client_endpoint(&ca).unwrap();
    let conn = endpoint
        .connect(server.addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut out = BytesMut::new();
    quiver_net::message::Request::Hello {
        version: quiver_net::PROTOCOL_VERSION,
        client: "raw".into(),
        token: Default::default(),
    }
    .encode(&mut out);
    send.write_all(&out).await.unwrap();
    send.finish().unwrap();
    let _ = recv.read_to_end(1 << 16).await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut bad = BytesMut::new();
    quiver_net::frame::put_header(&mut bad, 0x0101, 0, 1 << 20);
    bad.put_slice(&[0u8; 64]);
    let _ = send.write_all(&bad).await;
    let _ = send.finish();
    let answer = recv.read_to_end(1 << 16).await.unwrap_or_default();
    let mut buf = BytesMut::from(&answer[..]);
    let frame = quiver_net::frame::parse(&mut buf, 1 << 16)
        .unwrap()
        .unwrap();
    match quiver_net::message::Response::decode(&frame).unwrap() {
        quiver_net::message::Response::Error { code, .. } => {
            assert_eq!(code, quiver_net::ErrorCode::Malformed)
        }
        other => panic!("{other:?}"),
    }
    // The garbling peer is gone; the well-behaved one is not.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), conn.closed()).await;
    assert!(
        closed.is_ok(),
        "the server closes a connection that sent a bad frame"
    );
    good.append("still-fine", ExpectedVersion::NoStream, vec![ev("T", "{}")])
        .await
        .unwrap();
    // And an honest request over the limit is refused by the client before it is sent.
    let big = EventData::binary("Big", vec![0u8; 8192]);
    assert!(matches!(
        good.append("s", ExpectedVersion::Any, vec![big]).await,
        Err(Error::TooLarge { .. })
    ));
    good.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_each_version_has_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(dir.path()));
    let writers = 8;
    let versions = 20u64;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let c = Arc::new(client(dir.path(), server.addr).await);
        tasks.push(tokio::spawn(async move {
            let (mut won, mut lost) = (Vec::new(), 0u32);
            let mut expected = None::<StreamVersion>;
            loop {
                let exp = ExpectedVersion::from(expected);
                if expected.is_some_and(|v| v.get() + 1 >= versions) {
                    return (won, lost);
                }
                let e = EventData::json("Bid", format!("{{\"writer\":{w}}}").into_bytes());
                match c.append("auction", exp, vec![e]).await {
                    Ok(r) => {
                        won.push(r.next_expected_version.get());
                        expected = Some(r.next_expected_version);
                    }
                    Err(Error::WrongExpectedVersion { actual, .. }) => {
                        lost += 1;
                        assert!(actual > expected, "the actual version moved on");
                        expected = actual;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (won, _) = t.await.unwrap();
        winners.extend(won);
    }
    winners.sort_unstable();
    assert_eq!(
        winners,
        (0..versions).collect::<Vec<_>>(),
        "each version won exactly once"
    );
    let c = client(dir.path(), server.addr).await;
    let stored = c
        .read_stream("auction", ReadStreamOptions::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(stored.len() as u64, versions);
    c.close().await;
    server.stop().await;
}

/// A plain HTTP/1.1 GET over the real socket: status code and body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let code = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoint_reports_health_metrics_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&config(dir.path())).unwrap();
    let (quic, http) = (server.local_addr(), server.http_addr().unwrap());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    let c = client(dir.path(), quic).await;
    c.append(
        "s",
        ExpectedVersion::NoStream,
        vec![ev("A", "{}"), ev("B", "{}")],
    )
    .await
    .unwrap();
    let conflict = c
        .append("s", ExpectedVersion::NoStream, vec![ev("C", "{}")])
        .await;
    assert!(conflict.is_err());

    assert_eq!(http_get(http, "/health/live").await.0, 200);
    assert_eq!(http_get(http, "/health/ready").await.0, 200);
    let (code, metrics) = http_get(http, "/metrics").await;
    assert_eq!(code, 200);
    for line in [
        "quiver_events_appended_total 2",
        "quiver_connections 1",
        "quiver_commit_position 2",
        "quiver_errors_total{code=\"WrongExpectedVersion\"} 1",
        "quiver_requests_total{kind=\"Append\"} 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
    // A persistent group shows up with its lag (nothing consumed: both events).
    let group = quiver_client::PersistentDefinition::all("billing");
    c.create_persistent(&group).await.unwrap();
    let (_, metrics2) = http_get(http, "/metrics").await;
    for line in [
        "quiver_persistent_lag{group=\"billing\"} 2",
        "quiver_persistent_consumers{group=\"billing\"} 0",
    ] {
        assert!(
            metrics2.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics2}"
        );
    }
    // A consumer acks one event, refuses the other once, then acks its redelivery.
    let mut sub = c.connect_persistent("billing").await.unwrap();
    let first = sub.next().await.unwrap().unwrap();
    sub.ack(&[first.event.position]).await.unwrap();
    let second = sub.next().await.unwrap().unwrap();
    let nack = quiver_client::NackAction::Retry;
    sub.nack(nack, &[second.event.position]).await.unwrap();
    let again = sub.next().await.unwrap().unwrap();
    assert_eq!(
        (again.event.position, again.retry_count),
        (second.event.position, 1)
    );
    sub.ack(&[again.event.position]).await.unwrap();
    let counted = async {
        loop {
            let (_, m) = http_get(http, "/metrics").await;
            if m.lines()
                .any(|l| l == "quiver_persistent_acks_total{group=\"billing\"} 2")
            {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let metrics3 = tokio::time::timeout(std::time::Duration::from_secs(10), counted)
        .await
        .expect("the acks are counted");
    for line in [
        "quiver_persistent_deliveries_total{group=\"billing\"} 3",
        "quiver_persistent_redeliveries_total{group=\"billing\"} 1",
        "quiver_persistent_nacks_total{group=\"billing\"} 1",
    ] {
        assert!(
            metrics3.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics3}"
        );
    }
    sub.close();
    let syncs = metrics
        .lines()
        .find(|l| l.starts_with("quiver_engine_syncs_total "))
        .unwrap();
    assert_ne!(syncs, "quiver_engine_syncs_total 0");
    let (code, status) = http_get(http, "/status").await;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["commit_position"], 2);
    assert_eq!(status["streams"], 1);
    assert_eq!(status["writable"], true);
    assert_eq!(http_get(http, "/nope").await.0, 404);
    c.close().await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reconnects_after_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(dir.path()));
    let addr = server.addr;
    let c = client(dir.path(), addr).await;
    c.append("s", ExpectedVersion::NoStream, vec![ev("A", "{}")])
        .await
        .unwrap();
    server.stop().await;
    // Same address, new process state: the next call reconnects by itself.
    let server = start(ServerConfig {
        listen: addr,
        ..config(dir.path())
    });
    let r = c
        .append("s", ExpectedVersion::Exact(0), vec![ev("B", "{}")])
        .await
        .unwrap();
    assert_eq!(r.next_expected_version, 1);
    c.close().await;
    server.stop().await;
}

/// A response may be larger than the largest request: a snapshot stored by a request of
/// exactly 64 MiB comes back in a `SnapshotReply` one byte larger. The client reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_larger_than_the_largest_request_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let max = quiver_net::frame::FRAME_PAYLOAD_BYTES_MAX;
    let server = start(ServerConfig {
        frame_bytes_max: max,
        segment_mib: 80,
        ..config(dir.path())
    });
    let c = client(dir.path(), server.addr).await;
    // SnapshotPut payload: str8 stream (1 + 1), u64 version, bytes32 data (4 + n).
    let data = vec![7u8; max - 14];
    c.put_snapshot("s", 1, data.clone()).await.unwrap();
    let got = c.get_snapshot("s", 1).await.unwrap().expect("stored");
    assert!(got.len() == data.len() && got.iter().all(|b| *b == 7));
    c.close().await;
    server.stop().await;
}

/// A client configured from a connection string reaches a server listening on IPv6 loopback
/// (the client's socket follows the servers' address family), with the CA, token and timeout
/// the string gives; a conflict then reads as a person would say it, and is not retryable.
#[tokio::test]
async fn a_connection_string_reaches_a_server_on_ipv6() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.listen = "[::1]:0".parse().unwrap();
    config.token = Some("s3cret".into());
    let server = start(config);
    let ca = dir.path().join("tls").join("ca.pem");
    let url = format!(
        "quiver://[::1]:{}?ca={}&token=s3cret&timeout=5",
        server.addr.port(),
        ca.display()
    );
    let client = Client::connect(ClientConfig::from_url(&url).unwrap())
        .await
        .unwrap();
    let event = || vec![EventData::json("Opened", "{}")];
    client
        .append("acct-v6", ExpectedVersion::NoStream, event())
        .await
        .unwrap();
    let e = client
        .append("acct-v6", ExpectedVersion::NoStream, event())
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "wrong expected version for 'acct-v6': expected no stream, but it exists at version 0"
    );
    assert!(!e.is_retryable());
    // Without the token the same string is refused, with the reason.
    let no_token = url.replace("&token=s3cret", "");
    let refused = Client::connect(ClientConfig::from_url(&no_token).unwrap()).await;
    assert!(
        matches!(refused, Err(Error::Unauthenticated(_))),
        "{:?}",
        refused.err()
    );
    drop(client);
    server.stop().await;
}

/// Appends `n` events to `stream`, one at a time.
async fn ticks(client: &Client, stream: &str, n: usize) {
    for _ in 0..n {
        client
            .append(
                stream,
                ExpectedVersion::Any,
                vec![EventData::json("Ticked", "{}")],
            )
            .await
            .unwrap();
    }
}

/// Reads and subscriptions as `Stream`s: a read's events through `TryStreamExt`, and a
/// subscription that owns its client, moved into a task of its own after the client it came
/// from is dropped, delivering what was there and what is appended after.
#[tokio::test]
async fn reads_and_subscriptions_are_streams() {
    use futures_util::{StreamExt, TryStreamExt};
    use quiver_client::{SubscribeStreamOptions, SubscriptionMessage};
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(dir.path()));
    let client = client(dir.path(), server.addr).await;
    let event = || vec![EventData::json("Ticked", "{}")];
    ticks(&client, "ticks", 3).await;
    let versions: Vec<u64> = client
        .read_stream("ticks", ReadStreamOptions::default())
        .await
        .unwrap()
        .into_stream()
        .map_ok(|e| e.version.get())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(versions, vec![0, 1, 2]);
    let live = client
        .subscribe_stream("ticks", SubscribeStreamOptions::default())
        .await
        .unwrap()
        .into_stream();
    let writer = client.clone();
    drop(client);
    let task = tokio::spawn(async move {
        live.filter_map(|m| async move {
            match m {
                Ok(SubscriptionMessage::Event(e)) => Some(e.version.get()),
                _ => None,
            }
        })
        .take(5)
        .collect::<Vec<u64>>()
        .await
    });
    for _ in 0..2 {
        writer
            .append("ticks", ExpectedVersion::Any, event())
            .await
            .unwrap();
    }
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("the subscription delivered five events")
        .unwrap();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    drop(writer);
    server.stop().await;
}

/// A subscription's resume point is just past what it delivered: a new subscription started
/// there (in another process, say) delivers what came after, nothing twice.
#[tokio::test]
async fn a_subscription_resumes_where_another_stopped() {
    use quiver_client::{SubscribeStreamOptions, SubscriptionMessage};
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(dir.path()));
    let client = client(dir.path(), server.addr).await;
    let event = || vec![EventData::json("Ticked", "{}")];
    ticks(&client, "resumed", 3).await;
    let mut first = client
        .subscribe_stream("resumed", SubscribeStreamOptions::default())
        .await
        .unwrap();
    assert_eq!(first.resume_point(), None);
    let mut seen = 0;
    while seen < 3 {
        if let Some(SubscriptionMessage::Event(_)) = first.next().await.unwrap() {
            seen += 1;
        }
    }
    let at = first
        .resume_point()
        .expect("a resume point after three events");
    assert_eq!(at, 3, "just past version 2");
    drop(first);
    client
        .append("resumed", ExpectedVersion::Any, event())
        .await
        .unwrap();
    let mut second = client
        .subscribe_stream("resumed", SubscribeStreamOptions::default().from(at))
        .await
        .unwrap();
    let next = loop {
        if let Some(SubscriptionMessage::Event(e)) = second.next().await.unwrap() {
            break e.version;
        }
    };
    assert_eq!(next, 3);
    drop(second);
    drop(client);
    server.stop().await;
}

/// An event's JSON decodes into the caller's type (and says which event did not); the newest
/// snapshot is asked for without a sentinel version.
#[tokio::test]
async fn events_decode_as_json_and_the_newest_snapshot_needs_no_sentinel() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Deposited {
        amount: u64,
    }
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(dir.path()));
    let c = client(dir.path(), server.addr).await;
    c.append(
        "acct-json",
        ExpectedVersion::from(None),
        vec![EventData::json("Deposited", r#"{"amount":30}"#)],
    )
    .await
    .unwrap();
    let events = c
        .read_stream("acct-json", ReadStreamOptions::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        events[0].json::<Deposited>().unwrap(),
        Deposited { amount: 30 }
    );
    let wrong = events[0].json::<Vec<u8>>().unwrap_err();
    assert!(
        matches!(&wrong, Error::Decode { context, source: Some(_) }
            if context.contains("'acct-json'") && context.contains("Deposited")),
        "{wrong}"
    );
    assert!(
        wrong.report().contains("invalid type"),
        "{}",
        wrong.report()
    );
    assert_eq!(c.newest_snapshot("acct-json").await.unwrap(), None);
    c.put_snapshot("acct-json", 0, "first").await.unwrap();
    c.append(
        "acct-json",
        ExpectedVersion::from(Some(StreamVersion(0))),
        vec![EventData::json("Deposited", r#"{"amount":5}"#)],
    )
    .await
    .unwrap();
    c.put_snapshot("acct-json", 1, "second").await.unwrap();
    let (version, data) = c.newest_snapshot("acct-json").await.unwrap().unwrap();
    assert_eq!((version, &data[..]), (StreamVersion(1), &b"second"[..]));
    c.close().await;
    server.stop().await;
}

/// With the system's trust roots the CA file is optional: a server whose certificate only
/// Quiver's generated CA signed is refused at the handshake (no public CA vouches for it),
/// not for a missing file; with the CA file as well, the same client connects.
#[tokio::test]
async fn system_trust_roots_sit_beside_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(dir.path()));
    let url = format!(
        "quiver://127.0.0.1:{}?ca=system&timeout=3",
        server.addr.port()
    );
    let system_only = ClientConfig::from_url(&url).unwrap();
    assert!(system_only.system_roots);
    match Client::connect(system_only.clone()).await {
        Err(e @ Error::Connect { .. }) => {
            assert!(
                !e.report().contains("reading the CA file"),
                "{}",
                e.report()
            )
        }
        Err(other) => panic!("refused, but not at the handshake: {other}"),
        Ok(_) => panic!("the system's roots vouched for a private CA"),
    }
    let both = system_only.ca_file(dir.path().join("tls").join("ca.pem"));
    let client = Client::connect(both).await.unwrap();
    client.status().await.unwrap();
    client.close().await;
    server.stop().await;
}

/// A conflict in a multi-stream append names the stream whose check failed and what the
/// writer expected of it, beside the stream's actual version.
#[tokio::test]
async fn a_conflict_names_its_stream_and_the_expected_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(dir.path()));
    let c = client(dir.path(), server.addr).await;
    let event = || vec![EventData::json("Noted", "{}")];
    c.append("order-line-1", ExpectedVersion::NoStream, event())
        .await
        .unwrap();
    let failed = c
        .append_multi(vec![
            ("order-1".into(), ExpectedVersion::NoStream, event()),
            ("order-line-1".into(), ExpectedVersion::Exact(3), event()),
        ])
        .await;
    match failed {
        Err(Error::WrongExpectedVersion {
            stream,
            expected,
            actual,
            ..
        }) => {
            assert_eq!(stream.as_deref(), Some("order-line-1"));
            assert_eq!(expected, Some(ExpectedVersion::Exact(3)));
            assert_eq!(actual, Some(StreamVersion(0)));
        }
        other => panic!("{:?}", other.err()),
    }
    c.close().await;
    server.stop().await;
}

/// A stream never written reads as empty when the caller asks for that, and as `NotFound`
/// otherwise; a hard-deleted stream stays `StreamDeleted` either way.
#[tokio::test]
async fn a_missing_stream_reads_as_empty_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(dir.path()));
    let c = client(dir.path(), server.addr).await;
    let empty = ReadStreamOptions::default().missing_as_empty(true);
    let read = c.read_stream("never", empty.clone()).await.unwrap();
    assert!(read.collect().await.unwrap().is_empty());
    assert!(matches!(
        c.read_stream("never", ReadStreamOptions::default()).await,
        Err(Error::NotFound(_))
    ));
    c.append(
        "gone",
        ExpectedVersion::NoStream,
        vec![EventData::json("Noted", "{}")],
    )
    .await
    .unwrap();
    c.tombstone_stream("gone", ExpectedVersion::Any)
        .await
        .unwrap();
    assert!(matches!(
        c.read_stream("gone", empty).await,
        Err(Error::StreamDeleted(_))
    ));
    c.close().await;
    server.stop().await;
}
