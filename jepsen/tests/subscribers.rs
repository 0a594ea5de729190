//! The subscription workload against a real 3-node cluster: transient subscribers on every
//! node and a persistent group's consumer follow appends while a follower and then the
//! leader are killed and restarted; every subscriber must deliver what the cluster holds,
//! and the deliveries written to `subscriptions.jsonl` must feed the checker.
//!
//! The `quiver` binary is built (`cargo build -p quiver-server --bin quiver`, same profile
//! and target directory as this test) unless `QUIVER_BINARY` names one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use quiver_client::{Client, ClientConfig, Error, EventData, ExpectedVersion, ReadStreamOptions};
use quiver_jepsen::control::{wait_for_leader, Cluster};
use quiver_jepsen::subscribers::{
    check_transient, ConfigSource, FindingKind, Subscribers, LOG_FILE,
};

const STREAMS: u64 = 4;
const EVENTS: u64 = 60;
/// The whole cluster part of the test (the binary's build is not counted).
const TEST_LIMIT: Duration = Duration::from_secs(100);

/// The `quiver` binary: `QUIVER_BINARY`, or built beside this test's target directory.
fn quiver_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("QUIVER_BINARY") {
        return PathBuf::from(path);
    }
    // This test runs from TARGET/PROFILE/deps/.
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("TARGET/PROFILE/deps/TEST");
    let target_dir = profile_dir.parent().expect("TARGET/PROFILE");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a profile directory name");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "quiver-server", "--bin", "quiver"])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    // Not this test's own package variables: a build script that reads one (ring's does)
    // would be rebuilt here, and again by the next `cargo test`.
    for (var, _) in std::env::vars_os() {
        let Some(name) = var.to_str() else { continue };
        let ours = [
            "CARGO_PKG_",
            "CARGO_BIN_",
            "CARGO_CRATE_",
            "CARGO_MANIFEST_",
        ]
        .iter()
        .any(|p| name.starts_with(p))
            || [
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&name);
        if ours {
            cmd.env_remove(name);
        }
    }
    let status = cmd.status().expect("running cargo build");
    assert!(status.success(), "cargo build -p quiver-server failed");
    let binary = profile_dir.join("quiver");
    assert!(binary.exists(), "no binary at {}", binary.display());
    binary
}

fn stream(element: u64) -> String {
    format!("la-{}", element % STREAMS)
}

/// Appends `element` to its stream, retrying (with the same event id: idempotent) until it
/// is acknowledged or `deadline` passes.
async fn append(client: &Client, element: u64, deadline: Instant) -> Result<()> {
    let event = EventData::json("appended", format!("{{\"e\":{element}}}"));
    loop {
        match client
            .append(&stream(element), ExpectedVersion::Any, vec![event.clone()])
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                eprintln!("append of {element}: {e}; again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => bail!("append of {element} never acknowledged: {e}"),
        }
    }
}

async fn append_range(client: &Client, elements: std::ops::RangeInclusive<u64>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for element in elements {
        append(client, element, deadline).await?;
    }
    Ok(())
}

/// Every stream's elements, read (linearizably) through any node.
async fn final_state(client: &Client) -> Result<BTreeMap<String, Vec<u64>>> {
    let mut state = BTreeMap::new();
    for key in 0..STREAMS {
        let name = format!("la-{key}");
        let events = match client
            .read_stream(&name, ReadStreamOptions::default())
            .await
        {
            Ok(events) => events.collect().await?,
            Err(Error::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let elements = events
            .iter()
            .map(|e| quiver_jepsen::subscribers::element(e).context("an element"))
            .collect::<Result<Vec<u64>>>()?;
        state.insert(name, elements);
    }
    Ok(state)
}

/// Whether `subscriptions.jsonl` has a line of `kind` for `subscriber`.
fn logged(dir: &Path, kind: &str, subscriber: &str) -> bool {
    std::fs::read_to_string(dir.join(LOG_FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|v| v["type"] == kind && v["subscriber"] == subscriber)
}

/// A transient subscriber's deliveries as `subscriptions.jsonl` recorded them.
fn logged_deliveries(log: &str, subscriber: &str) -> Vec<(String, u64)> {
    log.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .filter(|v| v["type"] == "delivery" && v["subscriber"] == subscriber)
        .map(|v| {
            (
                v["stream"].as_str().expect("a stream").to_string(),
                v["element"].as_u64().expect("an element"),
            )
        })
        .collect()
}

async fn scenario(binary: &Path, dir: &Path) -> Result<()> {
    let mut cluster = Cluster::start(binary, 3, &dir.join("nodes"), 13).await?;
    let leader = wait_for_leader(&cluster, Duration::from_secs(30))
        .await
        .context("no leader within 30 s")?;
    let config = ClientConfig::local(dir)
        .ca_file(cluster.ca())
        .timeout(Duration::from_secs(3))
        .servers(cluster.clients());
    let per_node = cluster
        .nodes
        .iter()
        .map(|n| {
            let pinned = config.clone().servers([n.client]);
            let source: ConfigSource = Arc::new(move || pinned.clone());
            (n.id, source)
        })
        .collect();
    let (_stop, stop) = tokio::sync::watch::channel(false);
    let any = config.clone();
    let subscribers =
        Subscribers::start(per_node, Arc::new(move || any.clone()), dir, stop).await?;
    let client = Client::connect(config.clone()).await?;

    append_range(&client, 1..=20).await?;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    eprintln!("leader {leader}; killing follower {follower}");
    cluster.kill(follower);
    append_range(&client, 21..=30).await?;
    // Down long enough for its subscriber to see an error (the client's subscription
    // reconnects by itself for about 20 s first) and to subscribe again after the restart,
    // from where it was.
    let name = format!("transient-n{follower}");
    let noticed = Instant::now() + Duration::from_secs(45);
    while !logged(dir, "error", &name) {
        anyhow::ensure!(Instant::now() < noticed, "{name} saw no error in 45 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    cluster.start_node(follower)?;
    append_range(&client, 31..=40).await?;
    eprintln!("killing the leader {leader}");
    cluster.kill(leader);
    append_range(&client, 41..=50).await?;
    cluster.start_node(leader)?;
    append_range(&client, 51..=EVENTS).await?;
    let now = wait_for_leader(&cluster, Duration::from_secs(30))
        .await
        .context("no leader after the restarts")?;
    eprintln!("leader now {now}; {:?}", subscribers.progress());

    let state = final_state(&client).await?;
    for key in 0..STREAMS {
        let appended: Vec<u64> = (1..=EVENTS).filter(|e| e % STREAMS == key).collect();
        assert_eq!(state[&format!("la-{key}")], appended, "la-{key}");
    }

    let report = subscribers.finish(&state, Duration::from_secs(45)).await;
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    anyhow::ensure!(report.valid, "findings: {:?}", report.findings);
    assert_eq!(report.elements, EVENTS);
    assert_eq!(report.subscribers.len(), 4);
    for s in &report.subscribers {
        anyhow::ensure!(s.complete, "{} did not deliver everything", s.name);
        match s.node {
            // Catch-up from the beginning, each event once.
            Some(_) => assert_eq!(s.delivered, EVENTS, "{}", s.name),
            None => assert!(s.delivered >= EVENTS, "{}", s.name),
        }
    }

    // The killed follower's subscriber subscribed again, from where it was.
    let summary = report.subscribers.iter().find(|s| s.name == name).unwrap();
    assert!(summary.resubscriptions >= 1, "{summary:?}");
    assert!(summary.errors >= 1, "{summary:?}");

    // The log feeds the checker: that subscriber, as recorded, is clean; without one middle
    // element it has a gap, without a stream's last one it misses it.
    let log = std::fs::read_to_string(dir.join(LOG_FILE))?;
    for line in log.lines().filter(|l| !l.contains("\"type\":\"delivery\"")) {
        eprintln!("{line}");
    }
    let delivered = logged_deliveries(&log, &name);
    assert_eq!(delivered.len() as u64, EVENTS);
    assert_eq!(check_transient(&name, &delivered, &state), vec![]);
    let without = |element: u64| -> Vec<(String, u64)> {
        delivered
            .iter()
            .filter(|(_, e)| *e != element)
            .cloned()
            .collect()
    };
    let kinds = |d: &[(String, u64)]| -> Vec<(FindingKind, String, u64)> {
        check_transient(&name, d, &state)
            .into_iter()
            .map(|f| (f.kind, f.stream, f.element))
            .collect()
    };
    assert_eq!(
        kinds(&without(21)),
        vec![(FindingKind::Gap, "la-1".to_string(), 21)]
    );
    assert_eq!(
        kinds(&without(EVENTS)),
        vec![(FindingKind::Missing, stream(EVENTS), EVENTS)]
    );
    for s in &report.subscribers {
        let subscribed = log
            .lines()
            .filter(|l| l.contains("\"type\":\"subscribe\"") && l.contains(&s.name))
            .count();
        assert!(subscribed >= 1, "{} never subscribed", s.name);
    }
    Ok(())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn subscribers_deliver_everything_across_a_follower_and_a_leader_kill() {
    let binary = quiver_binary();
    let dir =
        std::env::temp_dir().join(format!("quiver-jepsen-subscribers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome =
        runtime.block_on(async { tokio::time::timeout(TEST_LIMIT, scenario(&binary, &dir)).await });
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(_) => Some(format!("not done within {TEST_LIMIT:?}")),
    };
    if let Some(failure) = failure {
        let mut logs = String::new();
        for id in 1..=3 {
            let path = dir.join("nodes").join(format!("n{id}.log"));
            logs += &format!("--- node {id}\n{}\n", tail(&path, 20));
        }
        logs += &format!("--- {LOG_FILE}\n{}\n", tail(&dir.join(LOG_FILE), 30));
        panic!("{failure}\n{logs}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
