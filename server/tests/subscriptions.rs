//! Transient subscriptions against a real server: the delivered sequence is exactly the
//! (filtered) slice of `$all` from the start point, in order, with no gap and no duplicate,
//! while writers append during catch-up and across the switch to live; resuming from the last
//! position seen continues exactly; filtered subscriptions send checkpoints when nothing
//! matches.

use std::sync::Arc;
use std::time::Duration;

use quiver_client::{
    Client, EventData, ExpectedVersion, Position, ReadAllOptions, SubscribeAllOptions,
    SubscribeStreamOptions, SubscriptionMessage as Msg,
};
use quiver_server::ServerConfig;

mod common;

use common::{client, Running};

fn start(dir: &std::path::Path) -> Running {
    common::start(ServerConfig {
        http: None,
        ..common::config(dir)
    })
}

/// Appends `batches` batches of 1–3 events, alternating types and streams, with small pauses.
async fn write(c: Arc<Client>, tag: u64, batches: u64) {
    for b in 0..batches {
        let n = 1 + (b + tag) % 3;
        let events = (0..n)
            .map(|i| {
                let t = if (b + i) % 2 == 0 { "Even" } else { "Odd" };
                EventData::json(t, format!("{{\"w\":{tag},\"b\":{b}}}").into_bytes())
            })
            .collect();
        let stream = format!("s-{}", (b + tag) % 4);
        c.append(&stream, ExpectedVersion::Any, events)
            .await
            .unwrap();
        if b % 7 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Collects events until the subscription has passed `end` (exclusive) or delivered `want`
/// events; checks the caught-up marker comes once.
async fn collect_until(
    sub: &mut quiver_client::Subscription<Position>,
    end: Position,
    want: usize,
) -> Vec<(Position, String)> {
    let mut got = Vec::new();
    let mut caught_up = 0;
    let mut resume = Position(0);
    while resume < end && got.len() < want {
        let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("the subscription keeps delivering")
            .unwrap()
            .expect("the subscription stays open");
        resume = resume.max(m.resume_point());
        match m {
            Msg::Event(e) => got.push((e.position, e.event_type)),
            Msg::CaughtUp { .. } => caught_up += 1,
            Msg::Checkpoint { .. } | Msg::FellBehind { .. } => {}
        }
    }
    assert!(caught_up <= 1, "caught-up is announced once");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_and_filtered_subscriptions_see_exactly_the_log_while_writers_race() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    for round in 0..5u64 {
        let w1 = Arc::new(client(dir.path(), server.addr).await);
        let w2 = Arc::new(client(dir.path(), server.addr).await);
        let reader = client(dir.path(), server.addr).await;
        let start = reader.status().await.unwrap().commit_position;
        // Some history to catch up on, then subscribe while more is being written.
        write(w1.clone(), round, 10).await;
        let writers = tokio::spawn({
            let (w1, w2) = (w1.clone(), w2.clone());
            async move {
                tokio::join!(write(w1, round * 10 + 1, 40), write(w2, round * 10 + 2, 40));
            }
        });
        tokio::time::sleep(Duration::from_millis(round * 3)).await;
        let mut all = reader
            .subscribe_all(SubscribeAllOptions::default().from(start))
            .await
            .unwrap();
        let options = SubscribeAllOptions::default().from(start).type_prefix("Ev");
        let mut even = reader
            .subscribe_all(options.checkpoint_every(5))
            .await
            .unwrap();
        writers.await.unwrap();
        let end = reader.status().await.unwrap().commit_position;

        let expected: Vec<(Position, String)> = reader
            .read_all(ReadAllOptions::default().from(start))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.position < end)
            .map(|e| (e.position, e.event_type))
            .collect();
        assert_eq!(
            expected.len() as u64,
            end.get() - start.get(),
            "round {round}: the log is dense"
        );
        let got = collect_until(&mut all, end, expected.len()).await;
        assert_eq!(
            got, expected,
            "round {round}: $all subscription = the log, exactly"
        );
        let want_even: Vec<_> = expected
            .iter()
            .filter(|(_, t)| t == "Even")
            .cloned()
            .collect();
        let got_even = collect_until(&mut even, end, want_even.len()).await;
        let got_even: Vec<_> = got_even.into_iter().filter(|(p, _)| *p < end).collect();
        assert_eq!(
            got_even, want_even,
            "round {round}: filtered = the filtered log"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_subscription_resumes_exactly_where_it_left_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let c = Arc::new(client(dir.path(), server.addr).await);
    for v in 0..10u64 {
        let e = EventData::json("V", format!("{{\"v\":{v}}}").into_bytes());
        c.append("acct", ExpectedVersion::Any, vec![e])
            .await
            .unwrap();
        c.append(
            "other",
            ExpectedVersion::Any,
            vec![EventData::json("X", "{}")],
        )
        .await
        .unwrap();
    }
    let mut sub = c
        .subscribe_stream("acct", SubscribeStreamOptions::default().from(3))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        if let Some(Msg::Event(e)) = sub.next().await.unwrap() {
            assert_eq!(e.stream, "acct");
            seen.push(e.version);
        }
    }
    drop(sub);
    // More events arrive while nobody listens; resume from the last version seen + 1.
    let writer = c.clone();
    let more = tokio::spawn(async move {
        for _ in 0..10 {
            writer
                .append(
                    "acct",
                    ExpectedVersion::Any,
                    vec![EventData::json("V", "{}")],
                )
                .await
                .unwrap();
        }
    });
    let from = seen.last().unwrap().next();
    let mut sub = c
        .subscribe_stream("acct", SubscribeStreamOptions::default().from(from))
        .await
        .unwrap();
    more.await.unwrap();
    while seen.len() < 17 {
        match tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(Msg::Event(e)) => seen.push(e.version),
            Some(_) => {}
            None => panic!("ended early"),
        }
    }
    assert_eq!(
        seen,
        (3..20).collect::<Vec<_>>(),
        "no gap, no duplicate across the resume"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_that_matches_nothing_still_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let c = Arc::new(client(dir.path(), server.addr).await);
    let options = SubscribeAllOptions::default()
        .type_prefix("Never")
        .checkpoint_every(10);
    let mut sub = c.subscribe_all(options).await.unwrap();
    assert_eq!(
        sub.next().await.unwrap(),
        Some(Msg::CaughtUp { at: Position(0) })
    );
    // A steady trickle of events that never match.
    let writer = c.clone();
    let trickle = tokio::spawn(async move {
        for _ in 0..200 {
            writer
                .append("s", ExpectedVersion::Any, vec![EventData::json("T", "{}")])
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let mut checkpoints = Vec::new();
    while checkpoints.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(Msg::Checkpoint { at: position }) => checkpoints.push(position),
            other => panic!("only checkpoints expected, got {other:?}"),
        }
    }
    // Each checkpoint comes once at least 10 positions passed since the last marker.
    assert!(checkpoints[0] >= 10, "{checkpoints:?}");
    assert!(checkpoints[1] >= checkpoints[0] + 10, "{checkpoints:?}");
    trickle.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_selector_delivers_exactly_the_matching_events() {
    use quiver_client::PayloadOp;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let c = client(dir.path(), server.addr).await;
    for total in [50, 150, 99, 101, 1000] {
        let e = EventData::json(
            "OrderPlaced",
            format!("{{\"total\":{total},\"cur\":\"EUR\"}}"),
        );
        c.append("orders", ExpectedVersion::Any, vec![e])
            .await
            .unwrap();
    }
    c.append(
        "orders",
        ExpectedVersion::Any,
        vec![EventData::binary("OrderPlaced", "x")],
    )
    .await
    .unwrap();
    let options = SubscribeAllOptions::default()
        .payload("total", PayloadOp::Gt, serde_json::json!(100))
        .payload("cur", PayloadOp::Eq, serde_json::json!("EUR"));
    let mut sub = c.subscribe_all(options).await.unwrap();
    let mut totals = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(Msg::Event(e)) => {
                let v: serde_json::Value = serde_json::from_slice(&e.data).unwrap();
                totals.push(v["total"].as_u64().unwrap());
            }
            Some(Msg::CaughtUp { .. }) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(totals, [150, 101, 1000]);
    // Live events pass the same test.
    let e = EventData::json("OrderPlaced", r#"{"total":7,"cur":"EUR"}"#);
    c.append("orders", ExpectedVersion::Any, vec![e])
        .await
        .unwrap();
    let e = EventData::json("OrderPlaced", r#"{"total":700,"cur":"EUR"}"#);
    c.append("orders", ExpectedVersion::Any, vec![e])
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(Msg::Event(e)) => assert_eq!(&e.data[..], br#"{"total":700,"cur":"EUR"}"#),
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_resumes_by_itself_across_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let addr = server.addr;
    let c = client(dir.path(), addr).await;
    for i in 0..5 {
        let e = EventData::json("T", format!("{{\"i\":{i}}}"));
        c.append("s", ExpectedVersion::Any, vec![e]).await.unwrap();
    }
    let mut sub = c
        .subscribe_all(SubscribeAllOptions::default())
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 5 {
        if let Some(Msg::Event(e)) = sub.next().await.unwrap() {
            seen.push(e.position);
        }
    }
    server.stop().await;
    // The server comes back on the same address with more history written meanwhile.
    // Its socket closes asynchronously: common::start retries the just-freed address.
    let server = common::start(ServerConfig {
        listen: addr,
        http: None,
        ..ServerConfig::new(dir.path())
    });
    let writer = client(dir.path(), addr).await;
    for i in 5..10 {
        let e = EventData::json("T", format!("{{\"i\":{i}}}"));
        writer
            .append("s", ExpectedVersion::Any, vec![e])
            .await
            .unwrap();
    }
    while seen.len() < 10 {
        let m = tokio::time::timeout(Duration::from_secs(15), sub.next())
            .await
            .unwrap();
        if let Some(Msg::Event(e)) = m.unwrap() {
            seen.push(e.position);
        }
    }
    assert_eq!(
        seen,
        (0..10).collect::<Vec<_>>(),
        "no gap and no duplicate across the restart"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_told_it_fell_behind_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let writer = client(dir.path(), server.addr).await;
    let reader = client(dir.path(), server.addr).await;
    let mut sub = reader
        .subscribe_all(SubscribeAllOptions::default())
        .await
        .unwrap();
    assert_eq!(
        sub.next().await.unwrap(),
        Some(Msg::CaughtUp { at: Position(0) })
    );
    // The subscriber reads nothing while 30,000 events commit: QUIC flow control stops the
    // server's sends, and the subscription falls far behind the commit point.
    let total = 30_000u64;
    for b in 0..total / 1_000 {
        let events = (0..1_000)
            .map(|i| EventData::json("T", format!("{{\"i\":{}}}", b * 1_000 + i)))
            .collect();
        writer
            .append("s", ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
    let (mut next, mut fell_behind, mut caught_up) = (0u64, 0, 0);
    while next < total || caught_up == 0 {
        let m = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .unwrap();
        match m.unwrap().unwrap() {
            Msg::Event(e) => {
                assert_eq!(e.position, next, "in order, no gap, no duplicate");
                next += 1;
            }
            Msg::FellBehind { .. } => fell_behind += 1,
            Msg::CaughtUp { .. } => caught_up += 1,
            Msg::Checkpoint { .. } => {}
        }
    }
    assert_eq!(next, total);
    assert_eq!(fell_behind, 1, "told once that it fell behind");
    assert_eq!(caught_up, 1, "and once that it caught up again");
    server.stop().await;
}

/// A stream's or `$all`'s subscription, with its markers as plain numbers: the randomized
/// test below draws which kind a round uses.
enum EitherSub {
    Stream(quiver_client::Subscription<quiver_client::StreamVersion>),
    All(quiver_client::Subscription<Position>),
}

impl EitherSub {
    async fn next(&mut self) -> Result<Option<Msg<u64>>, quiver_client::Error> {
        fn plain<P: Into<u64>>(m: Msg<P>) -> Msg<u64> {
            match m {
                Msg::Event(e) => Msg::Event(e),
                Msg::CaughtUp { at } => Msg::CaughtUp { at: at.into() },
                Msg::Checkpoint { at } => Msg::Checkpoint { at: at.into() },
                Msg::FellBehind { at } => Msg::FellBehind { at: at.into() },
            }
        }
        Ok(match self {
            EitherSub::Stream(s) => s.next().await?.map(plain),
            EitherSub::All(s) => s.next().await?.map(plain),
        })
    }
}

/// The subscription under test in a randomized round.
#[derive(Debug, Clone, Copy)]
enum Selector {
    All,
    Type,
    StreamPrefix,
    Payload,
    Stream,
}

/// Every selector and start point, in randomized rounds with writers racing the catch-up and
/// the switch to live: the delivered sequence is exactly the matching slice of the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_selector_and_start_point_delivers_exactly_the_matching_slice() {
    use quiver_client::PayloadOp;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let selectors = [
        Selector::All,
        Selector::Type,
        Selector::StreamPrefix,
        Selector::Payload,
        Selector::Stream,
    ];
    let mut seed = 0x5EEDu64;
    for round in 0..15u64 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let selector = selectors[(round % 5) as usize];
        eprintln!("round {round}: {selector:?}");
        let start_kind = (seed >> 33) % 3; // 0: start, 1: a position in the middle, 2: end
        let w1 = Arc::new(client(dir.path(), server.addr).await);
        let w2 = Arc::new(client(dir.path(), server.addr).await);
        let reader = client(dir.path(), server.addr).await;
        write(w1.clone(), round, 5 + seed % 10).await;
        let base = reader.status().await.unwrap().commit_position.get();
        let mid = base / 2;
        let writers = tokio::spawn({
            let (w1, w2) = (w1.clone(), w2.clone());
            async move {
                tokio::join!(write(w1, round * 7 + 1, 25), write(w2, round * 7 + 2, 25));
            }
        });
        tokio::time::sleep(Duration::from_millis(seed % 5)).await;
        // Checkpoints let a filtered subscription show that it scanned to the end.
        let mut options = SubscribeAllOptions::default().checkpoint_every(1);
        let stream_sub = matches!(selector, Selector::Stream);
        match start_kind {
            0 => {}
            1 => options = options.from(mid),
            _ => options = options.from_end(),
        }
        options = match selector {
            Selector::Type => options.type_prefix("Ev"),
            Selector::StreamPrefix => options.stream_prefix("s-1"),
            Selector::Payload => options.payload("b", PayloadOp::Ge, serde_json::json!(20)),
            _ => options,
        };
        let mut sub = if stream_sub {
            let mut by_version = SubscribeStreamOptions::default();
            match start_kind {
                0 => {}
                1 => by_version = by_version.from(2),
                _ => by_version = by_version.from_end(),
            }
            let sub = reader.subscribe_stream("s-2", by_version).await.unwrap();
            EitherSub::Stream(sub)
        } else {
            EitherSub::All(reader.subscribe_all(options).await.unwrap())
        };
        writers.await.unwrap();
        let end = reader.status().await.unwrap().commit_position.get();
        let log = reader
            .read_all(ReadAllOptions::default())
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let matches = |e: &quiver_client::RecordedEvent| match selector {
            Selector::All => true,
            Selector::Type => e.event_type.starts_with("Ev"),
            Selector::StreamPrefix => e.stream.starts_with("s-1"),
            Selector::Payload => {
                let v: serde_json::Value = serde_json::from_slice(&e.data).unwrap();
                v["b"].as_u64().is_some_and(|b| b >= 20)
            }
            Selector::Stream => e.stream == "s-2",
        };
        // Collect until the subscription has passed the end of the log (or, for a stream,
        // delivered its last version).
        let last_version = log
            .iter()
            .filter(|e| e.stream == "s-2")
            .map(|e| e.version.get())
            .max();
        let mut got = Vec::new();
        let mut first_marker = None;
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), sub.next()).await;
            let m = m
                .expect("the subscription keeps delivering")
                .unwrap()
                .unwrap();
            let done = match m {
                Msg::Event(e) => {
                    let done = if stream_sub {
                        Some(e.version.get()) == last_version
                    } else {
                        e.position.get() + 1 >= end
                    };
                    got.push(e.position.get());
                    done
                }
                Msg::CaughtUp { at: position } | Msg::Checkpoint { at: position } => {
                    first_marker.get_or_insert((position, got.len()));
                    if stream_sub {
                        // Nothing left to deliver at or after this version.
                        last_version.is_none_or(|v| position > v)
                    } else {
                        position >= end
                    }
                }
                Msg::FellBehind { .. } => false,
            };
            if done {
                break;
            }
        }
        // Where the subscription started: the request's start; from the end, the commit
        // point when it subscribed, which the client sees only as the first thing delivered
        // (an event committed meanwhile, or the caught-up marker): check the rest is exact.
        let from_end = start_kind == 2;
        let first = if from_end {
            let marker = first_marker.map(|(p, _)| p);
            let event = got.first().map(|p| {
                if stream_sub {
                    log.iter()
                        .find(|e| e.position == *p)
                        .map_or(0, |e| e.version.get())
                } else {
                    *p
                }
            });
            marker
                .into_iter()
                .chain(event)
                .min()
                .expect("something is delivered")
        } else if start_kind == 1 {
            if stream_sub {
                2
            } else {
                mid
            }
        } else {
            0
        };
        let want: Vec<u64> = log
            .iter()
            .filter(|e| e.position < end && matches(e))
            .filter(|e| {
                if stream_sub {
                    e.version >= first
                } else {
                    e.position >= first
                }
            })
            .map(|e| e.position.get())
            .collect();
        assert_eq!(
            got, want,
            "round {round}: {selector:?}, start kind {start_kind}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regular_expressions_select_exact_types_and_stream_patterns() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let c = client(dir.path(), server.addr).await;
    for (stream, t) in [
        ("order-1", "OrderPlaced"),
        ("order-2", "OrderPlacedLate"),
        ("user-1", "OrderPlaced"),
        ("order-3", "OrderPaid"),
    ] {
        c.append(stream, ExpectedVersion::Any, vec![EventData::json(t, "{}")])
            .await
            .unwrap();
    }
    let options = SubscribeAllOptions::default()
        .type_regex("^OrderPlaced$")
        .stream_regex("^order-");
    let mut sub = c.subscribe_all(options).await.unwrap();
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(Msg::Event(e)) => got.push((e.stream, e.event_type)),
            Some(Msg::CaughtUp { .. }) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, [("order-1".to_string(), "OrderPlaced".to_string())]);
    let bad = c
        .subscribe_all(SubscribeAllOptions::default().type_regex("("))
        .await;
    assert!(
        matches!(bad, Err(quiver_client::Error::Server { .. })),
        "a bad regex is refused"
    );
    server.stop().await;
}
