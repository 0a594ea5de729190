//! A real `quiver serve` process killed with SIGKILL in the middle of a persistent
//! subscription, then restarted on the same data directory: every acknowledged append is
//! still there, the group resumes from its recorded checkpoint (acknowledged events below it
//! are not delivered again, nothing above it is skipped), and a parked event is still parked.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use quiver_client::{
    Client, ClientConfig, EventData, ExpectedVersion, NackAction, PersistentDefinition, Position,
    ReadStreamOptions,
};

const QUIVER: &str = env!("CARGO_BIN_EXE_quiver");
const WAIT: Duration = Duration::from_secs(10);

/// A server child process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

fn serve(dir: &std::path::Path, port: u16) -> Proc {
    let child = Command::new(QUIVER)
        .args([
            "serve",
            "--http",
            "off",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--data-dir")
        .arg(dir)
        .env_remove("QUIVER_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

/// Connects, retrying while the server starts.
async fn connect(dir: &std::path::Path, port: u16) -> Client {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = std::time::Instant::now();
    loop {
        let config = ClientConfig::local(dir)
            .server(addr)
            .timeout(Duration::from_secs(2));
        match Client::connect(config).await {
            Ok(c) => return c,
            Err(e) if started.elapsed() > WAIT => panic!("the server did not come up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_resumes_from_its_checkpoint_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = serve(dir.path(), port);
    let c = connect(dir.path(), port).await;
    for i in 0..100 {
        let e = EventData::json("T", format!("{{\"i\":{i}}}"));
        c.append("s", ExpectedVersion::Any, vec![e]).await.unwrap();
    }
    c.create_persistent(&PersistentDefinition::all("g").max_in_flight(10))
        .await
        .unwrap();
    let mut sub = c.connect_persistent("g").await.unwrap();
    // Acknowledge 0..40 and park 45; leave the rest delivered or waiting.
    let (mut acked, mut parked) = (0, false);
    while acked < 40 || !parked {
        let d = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let p = d.event.position;
        if p < 40 {
            sub.ack(&[p]).await.unwrap();
            acked += 1;
        } else if p == 45 {
            sub.nack(NackAction::Park, &[p]).await.unwrap();
            parked = true;
        }
    }
    // The checkpoint is recorded within 100 ms of moving.
    let wait_recorded = async {
        loop {
            let info = c.persistent_info("g").await.unwrap();
            if info.checkpoint >= 40 && info.parked == [45] {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, wait_recorded).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(sub);
    drop(server); // SIGKILL: no shutdown path runs.

    let _server = serve(dir.path(), port);
    let c = connect(dir.path(), port).await;
    let all = c
        .read_stream("s", ReadStreamOptions::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 100, "every acknowledged append survived");
    let info = c.persistent_info("g").await.unwrap();
    assert!(
        info.checkpoint >= 40,
        "the recorded checkpoint survived: {}",
        info.checkpoint
    );
    let mut sub = c.connect_persistent("g").await.unwrap();
    let mut seen = BTreeSet::new();
    assert_eq!(info.parked, vec![45], "the parked set survived");
    while seen.len() < 59 {
        let d = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let p = d.event.position;
        assert!(
            p >= info.checkpoint,
            "{p} is below the checkpoint {}: delivered again",
            info.checkpoint
        );
        assert_ne!(p, 45, "a parked event stays parked");
        sub.ack(&[p]).await.unwrap();
        seen.insert(p);
    }
    let want: BTreeSet<Position> = (40..100).filter(|p| *p != 45).map(Position).collect();
    assert_eq!(seen, want, "nothing above the checkpoint was skipped");
    assert_eq!(c.persistent_info("g").await.unwrap().parked, vec![45]);
}
