//! Persistent subscriptions against a real server: consumers of a group share its events
//! (round robin, or pinned by stream), acks move the checkpoint, which survives a restart;
//! nack retry / park / skip, max retries, message timeouts and replaying parked events.
//! Every wait is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use quiver_client::{
    Client, ClientConfig, Delivery, Error, EventData, ExpectedVersion, NackAction,
    PersistentDefinition, PersistentInfo, PersistentSubscription, Position, Strategy,
    StreamVersion,
};
use quiver_server::ServerConfig;

mod common;

use common::Running;

/// Longest wait for something that must happen.
const WAIT: Duration = Duration::from_secs(10);

fn start(dir: &std::path::Path) -> Running {
    common::start(ServerConfig {
        http: None,
        ..common::config(dir)
    })
}

async fn client(dir: &std::path::Path, addr: std::net::SocketAddr) -> Client {
    let config = ClientConfig::local(dir)
        .server(addr)
        .timeout(Duration::from_secs(5));
    tokio::time::timeout(WAIT, Client::connect(config))
        .await
        .expect("connects in time")
        .unwrap()
}

/// Appends one event to each stream in turn, `n` events in all; returns their positions.
async fn append(c: &Client, streams: &[&str], n: usize) -> Vec<Position> {
    let mut positions = Vec::new();
    for i in 0..n {
        let stream = streams[i % streams.len()];
        let e = EventData::json("Happened", format!("{{\"i\":{i}}}").into_bytes());
        let r = c
            .append(stream, ExpectedVersion::Any, vec![e])
            .await
            .unwrap();
        positions.push(r.position_first);
    }
    positions
}

async fn connect(c: &Client, group: &str) -> PersistentSubscription {
    tokio::time::timeout(WAIT, c.connect_persistent(group))
        .await
        .expect("joins in time")
        .unwrap()
}

/// The next delivery, which must come in time.
async fn recv(sub: &mut PersistentSubscription) -> Delivery {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a delivery arrives in time")
        .unwrap()
        .expect("the membership stays open")
}

/// Nothing is delivered for `ms` milliseconds.
async fn quiet(sub: &mut PersistentSubscription, ms: u64) {
    if let Ok(d) = tokio::time::timeout(Duration::from_millis(ms), sub.next()).await {
        panic!("expected no delivery, got {d:?}");
    }
}

/// Polls a group's info until `done` holds.
async fn until(c: &Client, group: &str, done: impl Fn(&PersistentInfo) -> bool) -> PersistentInfo {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = c.persistent_info(group).await.unwrap();
        if done(&info) {
            return info;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the group did not get there: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Receives and acknowledges until nothing arrives for `idle`; returns what arrived.
fn consume(
    mut sub: PersistentSubscription,
    idle: Duration,
) -> tokio::task::JoinHandle<Vec<Delivery>> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        while let Ok(d) = tokio::time::timeout(idle, sub.next()).await {
            let d = d.unwrap().expect("the membership stays open");
            sub.ack(&[d.event.position]).await.unwrap();
            got.push(d);
        }
        got
    })
}

async fn joined<T>(h: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(WAIT * 2, h)
        .await
        .expect("the consumer finishes in time")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_consumers_get_disjoint_events_covering_all() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let c = client(dir.path(), server.addr).await;
    c.create_persistent(&PersistentDefinition::all("rr"))
        .await
        .unwrap();
    let a = connect(&c, "rr").await;
    let b = connect(&c, "rr").await;
    let written = append(&c, &["s-1", "s-2", "s-3"], 30).await;
    let idle = Duration::from_millis(800);
    let (a, b) = (consume(a, idle), consume(b, idle));
    let (a, b) = (joined(a).await, joined(b).await);
    let pa: BTreeSet<Position> = a.iter().map(|d| d.event.position).collect();
    let pb: BTreeSet<Position> = b.iter().map(|d| d.event.position).collect();
    assert!(
        !pa.is_empty() && !pb.is_empty(),
        "both consumers get events"
    );
    assert!(pa.is_disjoint(&pb), "no event goes to both");
    assert_eq!(pa.len() + pb.len(), 30, "no event is delivered twice");
    let all: BTreeSet<Position> = pa.union(&pb).copied().collect();
    assert_eq!(all, written.into_iter().collect::<BTreeSet<_>>());
    assert!(a.iter().chain(&b).all(|d| d.retry_count == 0));
    let info = until(&c, "rr", |i| i.checkpoint == 30).await;
    assert_eq!((info.in_flight, info.waiting), (0, 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_events_are_not_delivered_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let c = client(dir.path(), server.addr).await;
    append(&c, &["before"], 2).await;
    // Starts past the first event.
    c.create_persistent(&PersistentDefinition::all("durable").start(1))
        .await
        .unwrap();
    append(&c, &["a", "b"], 10).await;
    let mut sub = connect(&c, "durable").await;
    let mut got = Vec::new();
    for _ in 0..11 {
        got.push(recv(&mut sub).await.event.position);
    }
    let want: Vec<Position> = (1..12).map(Position).collect();
    assert_eq!(got, want, "in order from the start");
    // Acknowledge 1..=6 (out of order) and 9; 7, 8, 10 and 11 stay in flight.
    sub.ack(&[3, 1, 2, 6, 5, 4, 9].map(Position)).await.unwrap();
    let info = until(&c, "durable", |i| i.checkpoint == 7).await;
    assert_eq!(info.in_flight, 4);
    drop(sub);
    c.close().await;
    server.stop().await;

    let server = start(dir.path());
    let c = client(dir.path(), server.addr).await;
    let info = c.persistent_info("durable").await.unwrap();
    assert_eq!(info.checkpoint, 7, "the checkpoint survived the restart");
    assert_eq!(info.definition.start, 1);
    let mut sub = connect(&c, "durable").await;
    let mut again = Vec::new();
    for _ in 0..5 {
        let d = recv(&mut sub).await;
        again.push(d.event.position);
        sub.ack(&[d.event.position]).await.unwrap();
    }
    // At least once: 9 was acked above the checkpoint, so it comes again; 1..=6 never do.
    assert_eq!(again, vec![7, 8, 9, 10, 11]);
    quiet(&mut sub, 300).await;
    until(&c, "durable", |i| i.checkpoint == 12).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_retry_counts_up_then_parks_and_replay_delivers_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let c = client(dir.path(), server.addr).await;
    c.create_persistent(&PersistentDefinition::all("retry").max_retries(2))
        .await
        .unwrap();
    let mut sub = connect(&c, "retry").await;
    let [p] = append(&c, &["s"], 1).await[..] else {
        unreachable!()
    };
    for want in 0..=2 {
        let d = recv(&mut sub).await;
        assert_eq!((d.event.position, d.retry_count), (p, want));
        sub.nack(NackAction::Retry, &[p]).await.unwrap();
    }
    // The third retry passes max_retries = 2: parked.
    let info = until(&c, "retry", |i| i.parked == vec![p.get()]).await;
    assert_eq!(
        info.checkpoint,
        p.get() + 1,
        "a parked event does not hold the checkpoint"
    );
    quiet(&mut sub, 300).await;

    c.replay_parked("retry").await.unwrap();
    let d = recv(&mut sub).await;
    assert_eq!((d.event.position, d.retry_count), (p, 0));
    sub.ack(&[p]).await.unwrap();
    until(&c, "retry", |i| i.parked.is_empty()).await;
    quiet(&mut sub, 300).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn park_and_skip_and_parked_events_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let c = client(dir.path(), server.addr).await;
    c.create_persistent(&PersistentDefinition::all("ps"))
        .await
        .unwrap();
    let mut sub = connect(&c, "ps").await;
    append(&c, &["s"], 3).await;
    let got: Vec<Position> = [
        recv(&mut sub).await,
        recv(&mut sub).await,
        recv(&mut sub).await,
    ]
    .iter()
    .map(|d| d.event.position)
    .collect();
    assert_eq!(got, [0, 1, 2].map(Position));
    sub.nack(NackAction::Park, &[0].map(Position))
        .await
        .unwrap();
    sub.nack(NackAction::Skip, &[1].map(Position))
        .await
        .unwrap();
    sub.ack(&[2].map(Position)).await.unwrap();
    let info = until(&c, "ps", |i| i.checkpoint == 3).await;
    assert_eq!(info.parked, vec![0]);
    assert_eq!((info.in_flight, info.waiting), (0, 0));
    quiet(&mut sub, 300).await;
    drop(sub);
    c.close().await;
    server.stop().await;

    let server = start(dir.path());
    let c = client(dir.path(), server.addr).await;
    let info = c.persistent_info("ps").await.unwrap();
    assert_eq!(
        (info.checkpoint, info.parked.clone()),
        (3, vec![Position(0)])
    );
    let mut sub = connect(&c, "ps").await;
    quiet(&mut sub, 300).await;
    c.replay_parked("ps").await.unwrap();
    let d = recv(&mut sub).await;
    assert_eq!(d.event.position, 0);
    // Skipping a replayed event also takes it out of the parked set.
    sub.nack(NackAction::Skip, &[0].map(Position))
        .await
        .unwrap();
    until(&c, "ps", |i| i.parked.is_empty()).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_event_is_delivered_again_after_the_message_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let c = client(dir.path(), server.addr).await;
    let def = PersistentDefinition::all("slow").message_timeout_ms(200);
    c.create_persistent(&def).await.unwrap();
    let mut sub = connect(&c, "slow").await;
    append(&c, &["s"], 1).await;
    let first = recv(&mut sub).await;
    let at = tokio::time::Instant::now();
    let again = recv(&mut sub).await;
    assert!(
        at.elapsed() >= Duration::from_millis(150),
        "{:?}",
        at.elapsed()
    );
    assert_eq!(again.event.position, first.event.position);
    assert_eq!((first.retry_count, again.retry_count), (0, 1));
    sub.ack(&[again.event.position]).await.unwrap();
    until(&c, "slow", |i| i.checkpoint == 1).await;
    quiet(&mut sub, 500).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_keeps_each_stream_on_one_consumer_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let c = client(dir.path(), server.addr).await;
    let def = PersistentDefinition::all("pin").strategy(Strategy::Pinned);
    c.create_persistent(&def).await.unwrap();
    let a = connect(&c, "pin").await;
    let b = connect(&c, "pin").await;
    let streams = ["p-0", "p-1", "p-2", "p-3", "p-4", "p-5", "p-6", "p-7"];
    append(&c, &streams, 48).await;
    let idle = Duration::from_millis(800);
    let (a, b) = (consume(a, idle), consume(b, idle));
    let (a, b) = (joined(a).await, joined(b).await);
    assert_eq!(a.len() + b.len(), 48);
    assert!(
        !a.is_empty() && !b.is_empty(),
        "the streams are spread over both"
    );
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    for (who, got) in [(0, &a), (1, &b)] {
        let mut last: BTreeMap<&str, StreamVersion> = BTreeMap::new();
        for d in got {
            let o = *owner.entry(d.event.stream.clone()).or_insert(who);
            assert_eq!(o, who, "stream {} went to both consumers", d.event.stream);
            if let Some(v) = last.insert(&d.event.stream, d.event.version) {
                assert!(v < d.event.version, "a stream's events arrive in order");
            }
        }
    }
    assert_eq!(owner.len(), 8);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_group_follows_one_stream() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let c = client(dir.path(), server.addr).await;
    append(&c, &["orders", "other"], 6).await;
    let def = PersistentDefinition::stream("orders-group", "orders").start(1);
    c.create_persistent(&def).await.unwrap();
    let mut sub = connect(&c, "orders-group").await;
    let d = recv(&mut sub).await;
    assert_eq!(
        (d.event.stream.as_str(), d.event.version.get()),
        ("orders", 1)
    );
    let e = recv(&mut sub).await;
    assert_eq!(
        (e.event.stream.as_str(), e.event.version.get()),
        ("orders", 2)
    );
    sub.ack(&[d.event.position, e.event.position])
        .await
        .unwrap();
    // The checkpoint of a stream group is a version.
    until(&c, "orders-group", |i| i.checkpoint == 3).await;
    quiet(&mut sub, 300).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_created_updated_listed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let c = client(dir.path(), server.addr).await;
    let def = PersistentDefinition::all("g1").type_prefix("Order");
    c.create_persistent(&def).await.unwrap();
    let again = c.create_persistent(&def).await.unwrap_err();
    assert!(matches!(again, Error::AlreadyExists(_)), "{again:?}");
    let bad = PersistentDefinition::all("a/b");
    assert!(c.create_persistent(&bad).await.is_err());
    c.create_persistent(&PersistentDefinition::stream("g0", "s"))
        .await
        .unwrap();
    let missing = c.persistent_info("nope").await.unwrap_err();
    assert!(matches!(missing, Error::NotFound(_)), "{missing:?}");
    let missing = c.connect_persistent("nope").await.err().unwrap();
    assert!(matches!(missing, Error::NotFound(_)), "{missing:?}");

    c.update_persistent(&def.clone().max_retries(3).max_in_flight(5))
        .await
        .unwrap();
    let info = c.persistent_info("g1").await.unwrap();
    assert_eq!(
        (info.definition.max_retries, info.definition.max_in_flight),
        (3, 5)
    );
    let moved = def.clone().stream_prefix("x");
    assert!(
        c.update_persistent(&moved).await.is_err(),
        "filters cannot change"
    );
    let names: Vec<String> = c
        .list_persistent()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.definition.name)
        .collect();
    assert_eq!(names, vec!["g0", "g1"]);

    let mut sub = connect(&c, "g1").await;
    c.delete_persistent("g1").await.unwrap();
    let end = tokio::time::timeout(WAIT, sub.next()).await.unwrap();
    assert!(
        matches!(end, Ok(None)),
        "deleting ends the membership: {end:?}"
    );
    let gone = c.persistent_info("g1").await.unwrap_err();
    assert!(matches!(gone, Error::NotFound(_)), "{gone:?}");
    c.close().await;
    server.stop().await;

    // The delete survives a restart.
    let server = start(dir.path());
    let c = client(dir.path(), server.addr).await;
    let list = c.list_persistent().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].definition.name, "g0");
    // A deleted group's name can be used again.
    c.create_persistent(&def).await.unwrap();
    assert_eq!(
        c.persistent_info("g1")
            .await
            .unwrap()
            .definition
            .max_retries,
        10
    );
    server.stop().await;
}

/// Runs `quiver ARGS --server ADDR --ca CA --output json` with a wall-clock bound.
async fn cli(dir: &std::path::Path, addr: std::net::SocketAddr, args: &[&str]) -> (i32, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_quiver"));
    cmd.args(args)
        .arg("--server")
        .arg(addr.to_string())
        .arg("--ca")
        .arg(dir.join("tls").join("ca.pem"))
        .args(["--output", "json", "--timeout", "5"]);
    let out = tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || cmd.output()))
        .await
        .expect("the command finishes in time")
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    (out.status.code().unwrap_or(-1), stdout)
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_groups() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let d = dir.path();
    let create = [
        "subscription",
        "create",
        "orders",
        "--type-prefix",
        "Order",
        "--strategy",
        "pinned",
        "--max-retries",
        "3",
    ];
    let (code, out) = cli(d, server.addr, &create).await;
    assert_eq!(code, 0, "{out}");
    let info = json(&out);
    assert_eq!(info["definition"]["name"], "orders");
    assert_eq!(info["definition"]["stream"], "$all");
    assert_eq!(info["definition"]["type_prefix"], "Order");
    assert_eq!(info["definition"]["strategy"], "pinned");
    assert_eq!(info["definition"]["max_retries"], 3);
    assert_eq!(info["definition"]["message_timeout_ms"], 30_000);
    let (code, _) = cli(d, server.addr, &create).await;
    assert_eq!(code, 3, "a second create conflicts");

    let update = ["subscription", "update", "orders", "--max-in-flight", "7"];
    let (code, out) = cli(d, server.addr, &update).await;
    assert_eq!(code, 0, "{out}");
    let info = json(&out);
    assert_eq!(info["definition"]["max_in_flight"], 7);
    assert_eq!(info["definition"]["max_retries"], 3, "other settings stay");
    assert_eq!(info["definition"]["strategy"], "pinned");

    let (code, out) = cli(d, server.addr, &["subscription", "list"]).await;
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1);
    assert_eq!(json(&out)["checkpoint"], 0);
    let replay = ["subscription", "replay-parked", "orders"];
    let (code, out) = cli(d, server.addr, &replay).await;
    assert_eq!((code, json(&out)["replayed"].clone()), (0, true.into()));
    let delete = ["subscription", "delete", "orders"];
    let (code, out) = cli(d, server.addr, &delete).await;
    assert_eq!((code, json(&out)["deleted"].clone()), (0, true.into()));
    let (code, _) = cli(d, server.addr, &["subscription", "info", "orders"]).await;
    assert_eq!(code, 4, "a deleted group is not found");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_holds_back_and_a_leaving_consumer_hands_its_events_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let c = client(dir.path(), server.addr).await;
    let def = PersistentDefinition::all("cap").max_in_flight(2);
    c.create_persistent(&def).await.unwrap();
    let mut a = connect(&c, "cap").await;
    append(&c, &["s"], 4).await;
    assert_eq!(recv(&mut a).await.event.position, 0);
    assert_eq!(recv(&mut a).await.event.position, 1);
    quiet(&mut a, 300).await;
    a.ack(&[0].map(Position)).await.unwrap();
    assert_eq!(recv(&mut a).await.event.position, 2);
    quiet(&mut a, 300).await;
    // 1 and 2 are in flight to `a`; when it leaves they go to `b`, retry counts unchanged.
    a.close();
    let mut b = connect(&c, "cap").await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let d = recv(&mut b).await;
        assert_eq!(d.retry_count, 0);
        got.push(d.event.position);
        b.ack(&[d.event.position]).await.unwrap();
    }
    assert_eq!(got, [1, 2].map(Position));
    let d = recv(&mut b).await;
    assert_eq!(d.event.position, 3);
    b.ack(&[3].map(Position)).await.unwrap();
    until(&c, "cap", |i| i.checkpoint == 4 && i.consumers == 1).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_rejoins_its_group_by_itself_after_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let addr = server.addr;
    let c = client(dir.path(), addr).await;
    append(&c, &["s"], 10).await;
    c.create_persistent(&PersistentDefinition::all("g"))
        .await
        .unwrap();
    let mut sub = connect(&c, "g").await;
    for _ in 0..5 {
        let d = recv(&mut sub).await;
        sub.ack(&[d.event.position]).await.unwrap();
    }
    // Let the checkpoint be recorded, then restart the server on the same address.
    until(&c, "g", |i| i.checkpoint >= 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.stop().await;
    let server = common::start(ServerConfig {
        listen: addr,
        http: None,
        ..common::config(dir.path())
    });
    // New events after the restart can only arrive through a new membership: the same
    // subscription object must have joined again by itself.
    append(&c, &["s"], 5).await;
    let mut rest = BTreeSet::new();
    while rest.len() < 10 {
        let d = recv(&mut sub).await;
        assert!(
            d.event.position >= 5,
            "acknowledged events stay acknowledged"
        );
        // Deliveries still buffered from before the restart may be acknowledged on the dead
        // connection: that ack fails, and the group delivers the event again (at least once).
        let _ = sub.ack(&[d.event.position]).await;
        rest.insert(d.event.position);
    }
    assert_eq!(rest, (5..15).map(Position).collect::<BTreeSet<_>>());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_counts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let addr = server.addr;
    let c = client(dir.path(), addr).await;
    append(&c, &["s"], 1).await;
    c.create_persistent(&PersistentDefinition::all("g").max_retries(5))
        .await
        .unwrap();
    let mut sub = connect(&c, "g").await;
    for expected in 0..3 {
        let d = recv(&mut sub).await;
        assert_eq!(d.retry_count, expected);
        sub.nack(NackAction::Retry, &[d.event.position])
            .await
            .unwrap();
    }
    // Three refusals so far: the record says 3 for position 0.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(sub);
    server.stop().await;
    let server = common::start(ServerConfig {
        listen: addr,
        http: None,
        ..common::config(dir.path())
    });
    let c = client(dir.path(), addr).await;
    let mut sub = connect(&c, "g").await;
    let d = recv(&mut sub).await;
    assert_eq!(
        (d.event.position.get(), d.retry_count),
        (0, 3),
        "the count went on across the restart"
    );
    sub.ack(&[0].map(Position)).await.unwrap();
    server.stop().await;
}
