//! The repository against a real server (in this process): cqrs-es's aggregate tests, then
//! `CqrsFramework` and `PersistedEventStore` over `QuiverEventRepository`.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bank::{Account, AccountCommand, AccountError, AccountEvent, Services};
use common::orders::{BadType, Order, OrderLine, Orders};
use cqrs_es::persist::{
    PersistedEventRepository, PersistedEventStore, PersistenceError, ReplayStream, SerializedEvent,
};
use cqrs_es::test::TestFramework;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework, EventEnvelope, EventStore};
use quiver_client::{Client, EventData, ExpectedVersion, ReadAllOptions, ReadStreamOptions};
use quiver_cqrs::{event_id, event_stream, snapshot_stream, QuiverEventRepository};
use serde_json::json;

type Store = PersistedEventStore<QuiverEventRepository, Account>;

/// The three kinds of store cqrs-es builds on a repository.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Events,
    Aggregate,
    Snapshots(usize),
}

fn store(client: &Client, kind: Kind) -> Store {
    let repo = QuiverEventRepository::new(client.clone());
    match kind {
        Kind::Events => repo.event_store(),
        Kind::Aggregate => repo.aggregate_store(),
        Kind::Snapshots(n) => repo.snapshot_store(n),
    }
}

fn cqrs(client: &Client, kind: Kind, services: Services) -> CqrsFramework<Account, Store> {
    CqrsFramework::new(store(client, kind), vec![], services)
}

fn fresh_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn drain<A: Aggregate>(mut replay: ReplayStream) -> Vec<EventEnvelope<A>> {
    let mut out = Vec::new();
    while let Some(e) = replay.next::<A>(&[]).await {
        out.push(e.expect("a readable event"));
    }
    out
}

fn open(owner: &str) -> AccountCommand {
    AccountCommand::Open {
        owner: owner.into(),
    }
}

fn deposit(amount: i64) -> AccountCommand {
    AccountCommand::Deposit { amount }
}

fn withdraw(amount: i64) -> AccountCommand {
    AccountCommand::Withdraw { amount }
}

/// An account opened by ada with 100 + 50 + 25 deposited.
async fn funded(cqrs: &CqrsFramework<Account, Store>) -> String {
    let id = fresh_id();
    cqrs.execute(&id, open("ada")).await.unwrap();
    for amount in [100, 50, 25] {
        cqrs.execute(&id, deposit(amount)).await.unwrap();
    }
    id
}

/// cqrs-es's own pattern for aggregate logic: given events, when a command, then events or
/// an error (no store involved).
#[test]
fn aggregate_logic() {
    let given = || TestFramework::<Account>::with(Services::default());
    given()
        .given_no_previous_events()
        .when(open("ada"))
        .then_expect_events(vec![AccountEvent::Opened {
            owner: "ada".into(),
        }]);
    given()
        .given(vec![AccountEvent::Opened {
            owner: "ada".into(),
        }])
        .when(open("bob"))
        .then_expect_error(AccountError::AlreadyOpen);
    given()
        .given_no_previous_events()
        .when(deposit(5))
        .then_expect_error_message("no such account");
    let opened_with_100 = || {
        given()
            .given(vec![AccountEvent::Opened {
                owner: "ada".into(),
            }])
            .and(vec![AccountEvent::Deposited { amount: 100 }])
    };
    opened_with_100()
        .when(withdraw(60))
        .then_expect_events(vec![AccountEvent::Withdrawn { amount: 60 }]);
    opened_with_100()
        .when(withdraw(150))
        .then_expect_error(AccountError::InsufficientFunds {
            balance: 100,
            asked: 150,
        });
    opened_with_100()
        .when(AccountCommand::DepositEach {
            amounts: vec![1, 2],
        })
        .then_expect_events(vec![
            AccountEvent::Deposited { amount: 1 },
            AccountEvent::Deposited { amount: 2 },
        ]);
}

/// The bank account through `CqrsFramework` on each kind of store: the state, the events
/// and where they are in Quiver (stream, versions, ids), and the snapshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_account_on_every_kind_of_store() {
    let node = common::start();
    let client = node.client().await;
    for kind in [Kind::Events, Kind::Aggregate, Kind::Snapshots(2)] {
        let cqrs = cqrs(&client, kind, Services::default());
        let id = funded(&cqrs).await;
        cqrs.execute(&id, withdraw(100)).await.unwrap();
        let refused = cqrs.execute(&id, withdraw(100)).await.unwrap_err();
        assert!(
            matches!(
                refused,
                AggregateError::UserError(AccountError::InsufficientFunds {
                    balance: 75,
                    asked: 100
                })
            ),
            "{kind:?}: {refused:?}"
        );

        let store = store(&client, kind);
        let loaded = store.load_aggregate(&id).await.unwrap();
        assert_eq!(loaded.aggregate.balance, 75, "{kind:?}");
        assert_eq!(loaded.aggregate.owner.as_deref(), Some("ada"));
        assert_eq!(loaded.current_sequence, 5, "{kind:?}");
        let events = store.load_events(&id).await.unwrap();
        let sequences: Vec<usize> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, [1, 2, 3, 4, 5], "{kind:?}");

        // In Quiver: stream `account~{id}`, versions from 0, ids from (type, id, sequence).
        let stream = event_stream("account", &id).unwrap();
        assert_eq!(stream, format!("account~{id}"));
        let raw = client
            .read_stream(&stream, ReadStreamOptions::default())
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let versions: Vec<u64> = raw.iter().map(|e| e.version.get()).collect();
        assert_eq!(versions, [0, 1, 2, 3, 4]);
        for e in &raw {
            assert_eq!(e.id, event_id("account", &id, e.version.get() as usize + 1));
            assert!(e.json);
        }
        assert_eq!(raw[0].event_type, "Opened");

        let repo = QuiverEventRepository::new(client.clone());
        let snapshot = repo.get_snapshot::<Account>(&id).await.unwrap();
        let snapshots = snapshot_stream("account", &id).unwrap();
        match kind {
            Kind::Events => assert!(snapshot.is_none()),
            Kind::Aggregate | Kind::Snapshots(_) => {
                let s = snapshot.expect("a snapshot");
                let (sequence, balance) = match kind {
                    Kind::Aggregate => (5, 75),
                    _ => (4, 175),
                };
                assert_eq!(s.current_sequence, sequence, "{kind:?}");
                assert_eq!(s.aggregate["balance"], json!(balance), "{kind:?}");
                assert_eq!(s.aggregate_id, id);
                // Only the newest snapshot is kept.
                let info = client.stream_info(&snapshots).await.unwrap().unwrap();
                assert_eq!(info.metadata.max_count, Some(1));
                let kept = client
                    .read_stream(&snapshots, ReadStreamOptions::default())
                    .await
                    .unwrap()
                    .collect()
                    .await
                    .unwrap();
                assert_eq!(kept.len(), 1, "{kind:?}");
            }
        }
    }
    client.close().await;
    node.stop().await;
}

fn event(id: &str, sequence: usize, payload: serde_json::Value, version: &str) -> SerializedEvent {
    let event_type = payload.as_object().unwrap().keys().next().unwrap().clone();
    SerializedEvent::new(
        id.into(),
        sequence,
        "account".into(),
        event_type,
        version.into(),
        payload,
        json!({ "user": "ada", "trace": format!("t-{sequence}") }),
    )
}

/// `event_version`, `metadata`, payload and sequence come back as given, through every read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_fields_round_trip() {
    let node = common::start();
    let client = node.client().await;
    let repo = QuiverEventRepository::new(client.clone());
    let id = fresh_id();
    let events = vec![
        event(&id, 1, json!({"Opened": {"owner": "ada"}}), "1.0"),
        event(&id, 2, json!({"Deposited": {"amount": 7}}), "2.3-beta"),
        event(&id, 3, json!({"Withdrawn": {"amount": 2}}), ""),
    ];
    repo.persist::<Account>(&events[..1], None).await.unwrap();
    repo.persist::<Account>(&events[1..], None).await.unwrap();
    assert_eq!(repo.get_events::<Account>(&id).await.unwrap(), events);
    assert_eq!(
        repo.get_last_events::<Account>(&id, 1).await.unwrap(),
        events[1..]
    );
    assert!(repo
        .get_last_events::<Account>(&id, 3)
        .await
        .unwrap()
        .is_empty());
    assert!(repo
        .get_events::<Account>("nobody")
        .await
        .unwrap()
        .is_empty());
    let replayed = drain::<Account>(repo.stream_events::<Account>(&id).await.unwrap()).await;
    assert_eq!(replayed.len(), 3);
    assert_eq!(replayed[1].sequence, 2);
    assert_eq!(replayed[1].payload, AccountEvent::Deposited { amount: 7 });
    assert_eq!(replayed[1].metadata["trace"], "t-2");
    // As stored: the payload is the data, event_version and metadata in the envelope.
    let raw = client
        .read_stream(
            &event_stream("account", &id).unwrap(),
            ReadStreamOptions::default(),
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let data: serde_json::Value = serde_json::from_slice(&raw[1].data).unwrap();
    assert_eq!(data, json!({"Deposited": {"amount": 7}}));
    let meta: serde_json::Value = serde_json::from_slice(&raw[1].metadata).unwrap();
    assert_eq!(meta["event_version"], "2.3-beta");
    assert_eq!(meta["metadata"]["trace"], "t-2");
    assert_eq!(
        quiver_cqrs::serialized_event(&raw[2]).unwrap(),
        events[2],
        "a subscriber can decode what it receives"
    );
    client.close().await;
    node.stop().await;
}

/// Two tellers withdraw 100 each from 175 at once, both deciding on the same state: one
/// commits, the other gets `AggregateConflict` (not a silent success: its events are equal to
/// the stored ones, ids included, but they are not its own), and on retrying is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_conflict() {
    let node = common::start();
    let client = node.client().await;
    for kind in [Kind::Events, Kind::Aggregate] {
        let plain = cqrs(&client, kind, Services::default());
        let id = funded(&plain).await;
        let gate = Services {
            gate: Some(Arc::new(tokio::sync::Barrier::new(2))),
        };
        let gated = cqrs(&client, kind, gate);
        let (a, b) = tokio::join!(
            gated.execute(&id, withdraw(100)),
            gated.execute(&id, withdraw(100))
        );
        let outcomes = [a, b];
        let committed = outcomes.iter().filter(|r| r.is_ok()).count();
        let conflicts = outcomes
            .iter()
            .filter(|r| matches!(r, Err(AggregateError::AggregateConflict)))
            .count();
        assert_eq!((committed, conflicts), (1, 1), "{kind:?}: {outcomes:?}");
        // The loser runs its command again, on the new state.
        let again = plain.execute(&id, withdraw(100)).await;
        assert!(
            matches!(
                again,
                Err(AggregateError::UserError(
                    AccountError::InsufficientFunds { .. }
                ))
            ),
            "{again:?}"
        );
        let loaded = store(&client, kind).load_aggregate(&id).await.unwrap();
        assert_eq!(loaded.aggregate.balance, 75, "{kind:?}");
        let events = store(&client, kind).load_events(&id).await.unwrap();
        assert_eq!(events.len(), 5, "{kind:?}");
    }
    client.close().await;
    node.stop().await;
}

/// Every way another writer can be in the stream is an `OptimisticLockError`: its events at
/// the same sequences (ids equal), more or fewer of them (some ids equal), or events under
/// other ids (the expected version).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_conflict_is_an_optimistic_lock_error() {
    let node = common::start();
    let client = node.client().await;
    let repo = QuiverEventRepository::new(client.clone());
    let opened = |id: &str| event(id, 1, json!({"Opened": {"owner": "ada"}}), "1.0");
    let deposited =
        |id: &str, s, amount: i64| event(id, s, json!({"Deposited": {"amount": amount}}), "1.0");
    let lock = |r: Result<(), PersistenceError>| {
        assert!(
            matches!(r, Err(PersistenceError::OptimisticLockError)),
            "{r:?}"
        )
    };

    // The same sequences, other content.
    let id = fresh_id();
    repo.persist::<Account>(&[opened(&id), deposited(&id, 2, 1)], None)
        .await
        .unwrap();
    lock(repo.persist::<Account>(&[deposited(&id, 2, 9)], None).await);
    // Stored: one event at 2; sent: 2 and 3 (only some ids are stored).
    lock(
        repo.persist::<Account>(&[deposited(&id, 2, 1), deposited(&id, 3, 1)], None)
            .await,
    );
    // Stored: 2 and 3; sent: 3 from a writer that saw 2 (its ids partly match too).
    repo.persist::<Account>(&[deposited(&id, 3, 5)], None)
        .await
        .unwrap();
    lock(
        repo.persist::<Account>(
            &[
                deposited(&id, 2, 1),
                deposited(&id, 3, 1),
                deposited(&id, 4, 1),
            ],
            None,
        )
        .await,
    );
    // Events the repository did not write (other ids): the expected version decides.
    let foreign = fresh_id();
    client
        .append(
            &event_stream("account", &foreign).unwrap(),
            ExpectedVersion::NoStream,
            vec![EventData::json("Opened", r#"{"Opened":{"owner":"eve"}}"#)],
        )
        .await
        .unwrap();
    lock(repo.persist::<Account>(&[opened(&foreign)], None).await);
    // A gap: sequence 5 after 3 stored.
    lock(repo.persist::<Account>(&[deposited(&id, 5, 1)], None).await);
    assert_eq!(repo.get_events::<Account>(&id).await.unwrap().len(), 3);
    client.close().await;
    node.stop().await;
}

/// The same events persisted twice are stored once: the server recognises the ids. The
/// second call is not this repository's retry but another commit of the same sequences, so
/// it is refused as a conflict rather than reported as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persisting_the_same_events_again_stores_them_once() {
    let node = common::start();
    let client = node.client().await;
    let repo = QuiverEventRepository::new(client.clone());
    let id = fresh_id();
    let events = vec![
        event(&id, 1, json!({"Opened": {"owner": "ada"}}), "1.0"),
        event(&id, 2, json!({"Deposited": {"amount": 7}}), "1.0"),
    ];
    repo.persist::<Account>(&events, None).await.unwrap();
    let again = repo.persist::<Account>(&events, None).await;
    assert!(
        matches!(again, Err(PersistenceError::OptimisticLockError)),
        "{again:?}"
    );
    assert_eq!(repo.get_events::<Account>(&id).await.unwrap(), events);
    // The server answered the second append as a retry: same ids, nothing written.
    let position = client.status().await.unwrap().commit_position;
    let resent: Vec<EventData> = (1..=2)
        .map(|s| EventData::json("x", "{}").id(event_id("account", &id, s)))
        .collect();
    let r = client
        .append(
            &event_stream("account", &id).unwrap(),
            ExpectedVersion::NoStream,
            resent,
        )
        .await
        .unwrap();
    assert!(r.idempotent);
    assert_eq!(client.status().await.unwrap().commit_position, position);
    client.close().await;
    node.stop().await;
}

/// An append whose answer is lost (the server stored it, the client timed out) is sent
/// again by `persist`, answered `idempotent`, and counts as written: once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persist_whose_answer_is_lost_is_retried_idempotently() {
    let node = common::start();
    let relay = common::relay(node.addr).await;
    let timeout = Duration::from_millis(700);
    let lossy = node.client_via(relay.addr, timeout).await;
    let direct = node.client().await;
    let repo = QuiverEventRepository::new(lossy.clone());
    let id = fresh_id();
    let events = vec![
        event(&id, 1, json!({"Opened": {"owner": "ada"}}), "1.0"),
        event(&id, 2, json!({"Deposited": {"amount": 7}}), "1.0"),
    ];
    relay.drop_replies.store(true, Ordering::SeqCst);
    let healer = relay.drop_replies.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        healer.store(false, Ordering::SeqCst);
    });
    let started = Instant::now();
    let stored = QuiverEventRepository::new(direct.clone());
    let outcome = repo.persist::<Account>(&events, None).await;
    let took = started.elapsed();
    assert!(outcome.is_ok(), "{outcome:?} after {took:?}");
    assert!(took > timeout, "the first answer was lost: {took:?}");
    assert_eq!(stored.get_events::<Account>(&id).await.unwrap(), events);
    lossy.close().await;
    direct.close().await;
    node.stop().await;
}

/// `new_aggregate_store` loads the snapshot alone, so a snapshot behind or ahead of the
/// events would be wrong state for ever after. A commit that loses a race leaves neither
/// events nor snapshot; a commit whose events cannot be written leaves no snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_store_snapshots_are_never_stale() {
    let node = common::start();
    let client = node.client().await;
    let repo = QuiverEventRepository::new(client.clone());
    let plain = cqrs(&client, Kind::Aggregate, Services::default());
    let store = store(&client, Kind::Aggregate);

    // A commit on a stale state fails whole: the snapshot is the winner's.
    let id = fresh_id();
    plain.execute(&id, open("ada")).await.unwrap();
    plain.execute(&id, deposit(10)).await.unwrap();
    let stale = store.load_aggregate(&id).await.unwrap();
    plain.execute(&id, deposit(20)).await.unwrap();
    let lost = store
        .commit(
            vec![AccountEvent::Deposited { amount: 1000 }],
            stale,
            HashMap::new(),
        )
        .await;
    assert!(
        matches!(lost, Err(AggregateError::AggregateConflict)),
        "{lost:?}"
    );
    let snapshot = repo.get_snapshot::<Account>(&id).await.unwrap().unwrap();
    assert_eq!(snapshot.current_sequence, 3);
    assert_eq!(snapshot.aggregate["balance"], json!(30));
    let loaded = store.load_aggregate(&id).await.unwrap();
    assert_eq!((loaded.aggregate.balance, loaded.current_sequence), (30, 3));
    plain.execute(&id, withdraw(30)).await.unwrap();
    assert_eq!(
        store.load_aggregate(&id).await.unwrap().aggregate.balance,
        0
    );

    // Two commands decide on the same state and commit at once: the loser leaves nothing,
    // so the snapshot is the winner's state at the winner's sequence.
    let id = fresh_id();
    plain.execute(&id, open("ada")).await.unwrap();
    let gated = cqrs(
        &client,
        Kind::Aggregate,
        Services {
            gate: Some(Arc::new(tokio::sync::Barrier::new(2))),
        },
    );
    let (a, b) = tokio::join!(
        gated.execute(&id, deposit(20)),
        gated.execute(&id, deposit(1000))
    );
    assert_eq!(a.is_ok() as u8 + b.is_ok() as u8, 1, "{a:?} {b:?}");
    let events = repo.get_events::<Account>(&id).await.unwrap();
    let balance: i64 = events
        .iter()
        .filter_map(|e| e.payload["Deposited"]["amount"].as_i64())
        .sum();
    let snapshot = repo.get_snapshot::<Account>(&id).await.unwrap().unwrap();
    assert_eq!(snapshot.current_sequence, 2);
    assert_eq!(snapshot.aggregate["balance"], json!(balance));
    assert_eq!(events.len(), 2);

    // Between a command's load and its commit, its event stream is deleted for ever, so the
    // events are refused: the snapshot is not written either. (The other way round, a
    // snapshot refused with events that fit, is `a_snapshot_too_large_to_write_leaves_no_events`.)
    let id = fresh_id();
    plain.execute(&id, open("ada")).await.unwrap();
    plain.execute(&id, deposit(10)).await.unwrap();
    let gate = Arc::new(tokio::sync::Barrier::new(2));
    let gated = cqrs(
        &client,
        Kind::Aggregate,
        Services {
            gate: Some(gate.clone()),
        },
    );
    let command = {
        let id = id.clone();
        tokio::spawn(async move { gated.execute(&id, deposit(20)).await })
    };
    gate.wait().await; // the command has loaded
    client
        .tombstone_stream(&event_stream("account", &id).unwrap(), ExpectedVersion::Any)
        .await
        .unwrap();
    gate.wait().await; // let it commit
    let failed = command.await.unwrap();
    assert!(failed.is_err(), "{failed:?}");
    let s = repo.get_snapshot::<Account>(&id).await.unwrap().unwrap();
    assert_eq!(
        s.current_sequence, 2,
        "the failed commit left its snapshot behind"
    );
    assert_eq!(s.aggregate["balance"], json!(10));
    client.close().await;
    node.stop().await;
}

/// A commit whose snapshot is too large for the server (here, a frame limit of 64 KiB and
/// a 40 KB state) fails whole: its events, small enough on their own, are not stored either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_too_large_to_write_leaves_no_events() {
    let node = common::start_with(|c| c.frame_bytes_max = 64 << 10);
    let client = node.client().await;
    let repo = QuiverEventRepository::new(client.clone());
    let big = open(&"x".repeat(40_000));
    let id = fresh_id();
    let refused = cqrs(&client, Kind::Aggregate, Services::default())
        .execute(&id, big.clone())
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(repo.get_events::<Account>(&id).await.unwrap().is_empty());
    assert!(repo.get_snapshot::<Account>(&id).await.unwrap().is_none());
    // Without a snapshot the same event fits.
    cqrs(&client, Kind::Events, Services::default())
        .execute(&id, big)
        .await
        .unwrap();
    client.close().await;
    node.stop().await;
}

/// A snapshot store snapshots when a commit crosses a multiple of its size; the snapshot
/// holds the state after the commit's last event, each event applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_store_snapshots_where_the_size_says() {
    let node = common::start();
    let client = node.client().await;
    let repo = QuiverEventRepository::new(client.clone());
    let cqrs = cqrs(&client, Kind::Snapshots(3), Services::default());
    let id = fresh_id();
    cqrs.execute(&id, open("ada")).await.unwrap(); // 1
    let each = AccountCommand::DepositEach {
        amounts: vec![1, 2, 4],
    };
    cqrs.execute(&id, each).await.unwrap(); // 2, 3, 4: crosses 3
    let snapshot = repo.get_snapshot::<Account>(&id).await.unwrap().unwrap();
    assert_eq!(snapshot.current_sequence, 4);
    assert_eq!(snapshot.aggregate["balance"], json!(7));
    cqrs.execute(&id, deposit(8)).await.unwrap(); // 5: no snapshot
    let snapshot = repo.get_snapshot::<Account>(&id).await.unwrap().unwrap();
    assert_eq!(snapshot.current_sequence, 4);
    let loaded = store(&client, Kind::Snapshots(3))
        .load_aggregate(&id)
        .await
        .unwrap();
    assert_eq!((loaded.aggregate.balance, loaded.current_sequence), (15, 5));
    // 6 crosses 6: the snapshot folds the one at 4, event 5 and event 6.
    cqrs.execute(&id, deposit(16)).await.unwrap();
    let snapshot = repo.get_snapshot::<Account>(&id).await.unwrap().unwrap();
    assert_eq!(snapshot.current_sequence, 6);
    assert_eq!(snapshot.aggregate["balance"], json!(31));
    assert_eq!(snapshot.current_snapshot, 2);
    client.close().await;
    node.stop().await;
}

/// `stream_all_events` reads one aggregate type: `order`, not `order-line` nor `orders`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_all_events_selects_exactly_one_type() {
    let node = common::start();
    let client = node.client().await;
    let repo = QuiverEventRepository::new(client.clone());
    let orders = quiver_cqrs::quiver_cqrs::<Order>(client.clone(), vec![], ());
    let lines = CqrsFramework::new(repo.clone().event_store::<OrderLine>(), vec![], ());
    let others = CqrsFramework::new(repo.clone().event_store::<Orders>(), vec![], ());
    for i in 0..3 {
        orders.execute("1", format!("o1-{i}")).await.unwrap();
        lines.execute("1", format!("l1-{i}")).await.unwrap();
        orders.execute("2", format!("o2-{i}")).await.unwrap();
        others.execute("1", format!("s1-{i}")).await.unwrap();
        // An order-line whose id makes its stream `order-line~x`: still not an order.
        lines.execute("x", format!("lx-{i}")).await.unwrap();
    }
    let all = drain::<Order>(repo.stream_all_events::<Order>().await.unwrap()).await;
    let notes: Vec<(String, usize, String)> = all
        .iter()
        .map(|e| (e.aggregate_id.clone(), e.sequence, e.payload.0.clone()))
        .collect();
    let mut expected = Vec::new();
    for i in 0..3 {
        expected.push(("1".to_string(), i + 1, format!("o1-{i}")));
        expected.push(("2".to_string(), i + 1, format!("o2-{i}")));
    }
    assert_eq!(notes, expected);
    let all_lines = drain::<OrderLine>(repo.stream_all_events::<OrderLine>().await.unwrap()).await;
    assert_eq!(all_lines.len(), 6);
    assert!(all_lines.iter().all(|e| e.payload.0.starts_with('l')));
    client.close().await;
    node.stop().await;
}

/// An aggregate type that could collide with another (it holds the separator) is refused
/// before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_types_with_the_separator_are_refused() {
    let node = common::start();
    let client = node.client().await;
    let cqrs = CqrsFramework::new(
        QuiverEventRepository::new(client.clone()).event_store::<BadType>(),
        vec![],
        (),
    );
    let refused = cqrs.execute("1", "note".into()).await.unwrap_err();
    assert!(refused.to_string().contains("contains '~'"), "{refused}");
    let written = client.read_all(ReadAllOptions::default()).await.unwrap();
    assert!(
        written.collect().await.unwrap().is_empty(),
        "nothing was written"
    );
    client.close().await;
    node.stop().await;
}
