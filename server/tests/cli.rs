//! The `quiver` client commands end to end: a real `quiver serve` child process on a free
//! loopback port with its data in a temporary directory, driven through the `quiver` binary
//! the way a script would — output (human and JSON lines), exit codes and token auth.
//! Every child process is bounded in time and killed, even when a test fails.

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const QUIVER: &str = env!("CARGO_BIN_EXE_quiver");
/// Longest any one CLI invocation may take before the test fails.
const CLI_LIMIT: Duration = Duration::from_secs(30);

/// A `quiver serve` child; stopped with SIGTERM (then SIGKILL) when dropped.
struct Node {
    child: Child,
    addr: String,
    // Dropped after the child is stopped (fields drop after `Drop::drop`).
    dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn stop(child: &mut Child) {
    let pid = child.id() as libc::pid_t;
    if matches!(child.try_wait(), Ok(None)) {
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
}

fn free_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// Starts a node and waits (≤ 10 s) until `quiver health` succeeds against it.
fn start(token: Option<&str>) -> Node {
    for _attempt in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut cmd = Command::new(QUIVER);
        cmd.args(["serve", "--listen", &addr, "--data-dir"])
            .arg(dir.path().join("data"))
            .env_remove("QUIVER_TOKEN")
            // No HTTP operations endpoint: its fixed default port would collide between
            // the nodes of tests running at once.
            .env("QUIVER_HTTP", "off")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        let child = cmd.spawn().expect("starting quiver serve");
        let mut node = Node { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if node.child.try_wait().unwrap().is_some() {
                break; // It exited (the port was taken meanwhile?): try another.
            }
            let mut args = vec!["health", "--timeout", "1"];
            if let Some(t) = token {
                args.extend(["--token", t]);
            }
            let health = node.run(&args, None);
            if health.status.success() {
                assert_eq!(stdout(&health), "ok\n");
                return node;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(node.dir.path().join("server.log")).unwrap();
        eprintln!("the node did not become healthy; its log:\n{log}");
    }
    panic!("no healthy node after 3 attempts");
}

impl Node {
    /// Runs `quiver ARGS --server ADDR` with QUIVER_DATA_DIR set to the node's data
    /// directory (so the default CA is the node's) and no other QUIVER_* variable.
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(QUIVER);
        cmd.args(args)
            .args(["--server", &self.addr])
            .env("QUIVER_DATA_DIR", self.dir.path().join("data"));
        for var in [
            "QUIVER_SERVER",
            "QUIVER_CA",
            "QUIVER_TOKEN",
            "QUIVER_TIMEOUT",
            "RUST_LOG",
        ] {
            cmd.env_remove(var);
        }
        run_bounded(cmd, stdin)
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(
            out.status.success(),
            "quiver {args:?} failed ({:?}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout(&out)
    }

    /// Runs a command that must succeed and print JSON lines; returns them parsed.
    fn json(&self, args: &[&str]) -> Vec<Value> {
        let mut args = args.to_vec();
        args.extend(["--output", "json"]);
        lines(&self.ok(&args))
    }

    /// Runs a command that must fail with `code`; returns its stderr.
    fn fails(&self, args: &[&str], stdin: Option<&str>, code: i32) -> String {
        let out = self.run(args, stdin);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "quiver {args:?}: stdout {:?}, stderr {stderr:?}",
            stdout(&out)
        );
        assert!(stderr.contains("error"), "an error is reported: {stderr:?}");
        stderr
    }
}

/// Runs a command with a wall-clock bound, killing it when it overruns.
fn run_bounded(mut cmd: Command, stdin: Option<&str>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("starting quiver");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        // The command may exit before reading it all (a usage error).
        let _ = pipe.write_all(input.as_bytes());
    }
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(CLI_LIMIT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: our child; wait_with_output has not returned, so it is not reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("quiver {cmd:?} took longer than {CLI_LIMIT:?}");
        }
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn field<'a>(values: &'a [Value], key: &str) -> Vec<&'a Value> {
    values.iter().map(|v| &v[key]).collect()
}

#[test]
fn every_client_command_against_a_real_server() {
    let node = start(None);

    // append: one event, then a batch from stdin.
    let r = node.json(&[
        "append",
        "acct-1",
        "--type",
        "Opened",
        "--data",
        r#"{"owner": "ada", "limit": 100}"#,
        "--metadata",
        r#"{"by":"cli"}"#,
        "--expected",
        "no-stream",
    ]);
    assert_eq!(
        r,
        [
            serde_json::json!({"stream": "acct-1", "first_version": 0, "last_version": 0,
                            "first_position": 0, "last_position": 0})
        ]
    );
    let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    let batch = format!(
        "{{\"type\":\"Deposited\",\"data\":{{\"amount\":5}}}}\n\
         \n\
         {{\"type\":\"Deposited\",\"data\":{{\"amount\":7}},\"id\":\"{id}\",\
           \"metadata\":{{\"note\":\"x\"}}}}\n\
         {{\"type\":\"Withdrawn\",\"data\":[1,\"two\"]}}\n"
    );
    let out = node.run(
        &[
            "append",
            "acct-1",
            "--stdin",
            "--expected",
            "0",
            "--output",
            "json",
        ],
        Some(&batch),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        lines(&stdout(&out)),
        [
            serde_json::json!({"stream": "acct-1", "first_version": 1, "last_version": 3,
                            "first_position": 1, "last_position": 3})
        ]
    );
    let human = node.ok(&["append", "acct-2", "--type", "Opened", "--data", "{}"]);
    assert!(human.contains("appended 1 event to acct-2"), "{human}");
    node.ok(&[
        "append",
        "ledger",
        "--type",
        "Moved",
        "--data",
        r#""a string""#,
    ]);

    // read: forward, backward, from, max; data embedded as JSON.
    let events = node.json(&["read", "acct-1"]);
    assert_eq!(
        field(&events, "type"),
        ["Opened", "Deposited", "Deposited", "Withdrawn"]
    );
    assert_eq!(field(&events, "version"), [0, 1, 2, 3]);
    assert_eq!(field(&events, "position"), [0, 1, 2, 3]);
    assert_eq!(
        events[0]["data"],
        serde_json::json!({"owner": "ada", "limit": 100})
    );
    assert_eq!(events[0]["metadata"], serde_json::json!({"by": "cli"}));
    assert_eq!(
        events[1]["metadata"], "",
        "no metadata: an empty base64 string"
    );
    assert_eq!(events[2]["id"], id);
    assert_eq!(events[2]["metadata"], serde_json::json!({"note": "x"}));
    assert_eq!(events[3]["data"], serde_json::json!([1, "two"]));
    assert!(events[0]["created_us"].as_u64().unwrap() > 1_600_000_000_000_000);
    assert_eq!(events[0]["stream"], "acct-1");
    let back = node.json(&["read", "acct-1", "--backward", "--max", "2"]);
    assert_eq!(field(&back, "version"), [3, 2]);
    let from = node.json(&["read", "acct-1", "--from", "1", "--max", "2"]);
    assert_eq!(field(&from, "version"), [1, 2]);
    let human = node.ok(&["read", "acct-1", "--max", "1"]);
    assert!(human.starts_with("acct-1@0  pos 0  "), "{human}");
    assert!(
        human.contains(r#"Opened  {"owner": "ada", "limit": 100}"#),
        "{human}"
    );
    assert_eq!(human.lines().count(), 1);

    // read-all with filters.
    let all = node.json(&["read-all"]);
    assert_eq!(field(&all, "position"), [0, 1, 2, 3, 4, 5]);
    let opened = node.json(&["read-all", "--type-prefix", "Open"]);
    assert_eq!(field(&opened, "stream"), ["acct-1", "acct-2"]);
    let ledger = node.json(&["read-all", "--stream-prefix", "led"]);
    assert_eq!(field(&ledger, "data"), ["a string"]);
    let last = node.json(&["read-all", "--backward", "--max", "2"]);
    assert_eq!(field(&last, "position"), [5, 4]);
    let later = node.json(&["read-all", "--from", "4"]);
    assert_eq!(field(&later, "position"), [4, 5]);

    // streams.
    let streams = node.json(&["streams"]);
    assert_eq!(field(&streams, "stream"), ["acct-1", "acct-2", "ledger"]);
    assert_eq!(streams[0]["current_version"], 3);
    let acct = node.json(&["streams", "--prefix", "acct-", "--after", "acct-1"]);
    assert_eq!(field(&acct, "stream"), ["acct-2"]);
    assert_eq!(node.json(&["streams", "--limit", "2"]).len(), 2);
    assert_eq!(
        node.ok(&["streams", "--prefix", "led"]),
        "ledger  version 0\n"
    );

    // stream-meta: set, then show.
    let set = node.json(&[
        "stream-meta",
        "acct-1",
        "--set",
        "--max-count",
        "2",
        "--max-age-secs",
        "86400",
        "--custom",
        r#"{"owner":"ada"}"#,
    ]);
    assert_eq!(set[0]["max_count"], 2);
    let meta = node.json(&["stream-meta", "acct-1"]);
    assert_eq!(
        meta,
        [
            serde_json::json!({"stream": "acct-1", "current_version": 3, "soft_deleted": false,
                            "hard_deleted": false, "max_count": 2,
                            "max_age_us": 86_400_000_000u64, "truncate_before": null,
                            "custom": {"owner": "ada"}})
        ]
    );
    let human = node.ok(&["stream-meta", "acct-1"]);
    assert!(human.contains("max count:        2\n"), "{human}");
    assert!(human.contains("max age:          86400 s\n"), "{human}");
    assert_eq!(field(&node.json(&["read", "acct-1"]), "version"), [2, 3]);

    // delete: soft, then hard.
    node.ok(&["delete", "acct-2"]);
    assert_eq!(
        node.json(&["stream-meta", "acct-2"])[0]["soft_deleted"],
        true
    );
    node.fails(&["read", "acct-2"], None, 4);
    let hard = node.json(&["delete", "ledger", "--hard", "--expected", "0"]);
    assert_eq!(
        hard,
        [serde_json::json!({"stream": "ledger", "deleted": "hard"})]
    );
    node.fails(&["read", "ledger"], None, 4);
    node.fails(&["append", "ledger", "--type", "T", "--data", "1"], None, 4);

    // snapshots.
    let file = node.dir.path().join("state.bin");
    std::fs::write(&file, [0xffu8, 0x00, 0x7f]).unwrap();
    let file = file.to_str().unwrap();
    let put = node.json(&[
        "snapshot",
        "put",
        "acct-1",
        "1",
        "--data",
        r#"{"balance":5}"#,
    ]);
    assert_eq!(
        put,
        [serde_json::json!({"stream": "acct-1", "version": 1, "bytes": 13})]
    );
    node.ok(&["snapshot", "put", "acct-1", "3", "--data-file", file]);
    assert_eq!(
        node.ok(&["snapshot", "get", "acct-1", "1"]),
        r#"{"balance":5}"#
    );
    let raw = node.run(&["snapshot", "get", "acct-1", "3"], None);
    assert!(raw.status.success());
    assert_eq!(raw.stdout, [0xff, 0x00, 0x7f], "bytes come back as stored");
    assert_eq!(
        node.json(&["snapshot", "get", "acct-1", "9", "--latest"]),
        [serde_json::json!({"stream": "acct-1", "version": 3, "data_base64": "/wB/"})]
    );
    assert_eq!(
        node.json(&["snapshot", "get", "acct-1", "2", "--latest"]),
        [serde_json::json!({"stream": "acct-1", "version": 1, "data": {"balance": 5}})]
    );
    assert_eq!(node.ok(&["snapshot", "list", "acct-1"]), "1\n3\n");
    node.ok(&["snapshot", "delete", "acct-1", "3"]);
    assert_eq!(
        node.json(&["snapshot", "list", "acct-1"]),
        [serde_json::json!({"stream": "acct-1", "version": 1})]
    );
    node.fails(&["snapshot", "get", "acct-1", "3"], None, 4);

    // status, scavenge, health.
    let status = node.json(&["status"]);
    assert_eq!(status[0]["store_id"], "quiver");
    assert!(status[0]["commit_position"].as_u64().unwrap() >= 6);
    assert!(status[0]["streams"].as_u64().is_some());
    let human = node.ok(&["status"]);
    assert!(human.starts_with("store id:         quiver\n"), "{human}");
    assert!(node.json(&["scavenge"])[0]["bytes_reclaimed"].is_u64());
    assert_eq!(node.json(&["health"]), [serde_json::json!({"ok": true})]);
}

#[test]
fn errors_have_their_exit_codes() {
    let node = start(None);
    node.ok(&["append", "s", "--type", "T", "--data", "{}"]);

    // A wrong expected version: 3.
    let err = node.fails(
        &[
            "append",
            "s",
            "--type",
            "T",
            "--data",
            "{}",
            "--expected",
            "5",
        ],
        None,
        3,
    );
    assert!(err.contains("wrong expected version"), "{err}");
    node.fails(
        &[
            "append",
            "s",
            "--type",
            "T",
            "--data",
            "{}",
            "--expected",
            "no-stream",
        ],
        None,
        3,
    );
    node.fails(&["delete", "s", "--expected", "7"], None, 3);
    // A missing stream: 4.
    let err = node.fails(&["read", "missing"], None, 4);
    assert!(err.contains("not found"), "{err}");
    node.fails(&["stream-meta", "missing"], None, 4);
    // Invalid JSON data: a usage error, said clearly, and nothing sent.
    let err = node.fails(&["append", "s", "--type", "T", "--data", "{nope"], None, 2);
    assert!(
        err.contains("--data") && err.contains("not valid JSON"),
        "{err}"
    );
    node.fails(
        &[
            "append",
            "s",
            "--type",
            "T",
            "--data",
            "{}",
            "--metadata",
            "x",
        ],
        None,
        2,
    );
    node.fails(&["append", "s", "--type", "T"], None, 2);
    node.fails(&["read", "s", "--output", "yaml"], None, 2);
    // A bad line on stdin: the batch is refused whole, naming the line.
    let err = node.fails(
        &["append", "s", "--stdin"],
        Some("{\"type\":\"T\",\"data\":1}\n{\"type\":\"T\",\"data\":nope}\n"),
        1,
    );
    assert!(err.contains("stdin line 2"), "{err}");
    assert_eq!(
        node.json(&["read", "s"]).len(),
        1,
        "nothing of the batch landed"
    );
    // A node that is not there: a plain failure within the timeout.
    let gone = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(QUIVER);
    cmd.args(["health", "--timeout", "1", "--server", &gone])
        .env("QUIVER_DATA_DIR", node.dir.path().join("data"))
        .env_remove("QUIVER_TOKEN");
    let started = Instant::now();
    let out = run_bounded(cmd, None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // No CA where the default says: a clear failure.
    let mut cmd = Command::new(QUIVER);
    cmd.args(["status", "--server", &node.addr])
        .env("QUIVER_DATA_DIR", node.dir.path().join("elsewhere"))
        .env_remove("QUIVER_CA");
    let out = run_bounded(cmd, None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca"));
    // With --ca given explicitly, the data directory does not matter.
    let ca = node.dir.path().join("data/tls/ca.pem");
    let mut cmd = Command::new(QUIVER);
    cmd.args([
        "status",
        "--server",
        &node.addr,
        "--ca",
        ca.to_str().unwrap(),
    ])
    .env("QUIVER_DATA_DIR", node.dir.path().join("elsewhere"));
    assert!(run_bounded(cmd, None).status.success());
}

#[test]
fn a_server_with_a_token_refuses_a_cli_without_it() {
    let node = start(Some("s3cret"));
    let err = node.fails(&["status"], None, 5);
    assert!(err.contains("unauthenticated"), "{err}");
    node.fails(&["status", "--token", "wrong"], None, 5);
    node.fails(&["health"], None, 5);
    node.fails(&["append", "s", "--type", "T", "--data", "1"], None, 5);
    let status = node.json(&["status", "--token", "s3cret"]);
    assert_eq!(status[0]["store_id"], "quiver");
    node.ok(&[
        "append", "s", "--type", "T", "--data", "1", "--token", "s3cret",
    ]);
    // The token from the environment works too.
    let mut cmd = Command::new(QUIVER);
    cmd.args(["read", "s", "--output", "json", "--server", &node.addr])
        .env("QUIVER_DATA_DIR", node.dir.path().join("data"))
        .env("QUIVER_TOKEN", "s3cret");
    let out = run_bounded(cmd, None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(lines(&stdout(&out))[0]["data"], 1);
}

#[test]
fn subscribe_prints_history_then_live_events_and_stops_at_count() {
    let node = start(None);
    for i in 0..3 {
        let data = format!("{{\"i\":{i}}}");
        node.ok(&["append", "sub-1", "--type", "Tick", "--data", &data]);
    }
    // Catch up on three events, then wait for live ones: a writer adds two more.
    let mut cmd = Command::new(QUIVER);
    cmd.args([
        "subscribe",
        "--stream",
        "sub-1",
        "--count",
        "5",
        "--output",
        "json",
    ])
    .args(["--server", &node.addr])
    .env("QUIVER_DATA_DIR", node.dir.path().join("data"));
    let child = std::thread::spawn(move || run_bounded(cmd, None));
    std::thread::sleep(std::time::Duration::from_millis(300));
    for i in 3..5 {
        let data = format!("{{\"i\":{i}}}");
        node.ok(&["append", "sub-1", "--type", "Tick", "--data", &data]);
    }
    let out = child.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = lines(&stdout(&out));
    let versions: Vec<_> = field(&events, "version").into_iter().cloned().collect();
    assert_eq!(
        versions,
        (0..5).map(serde_json::Value::from).collect::<Vec<_>>()
    );
    let data: Vec<_> = field(&events, "data")
        .into_iter()
        .map(|d| d["i"].clone())
        .collect();
    assert_eq!(
        data,
        (0..5).map(serde_json::Value::from).collect::<Vec<_>>()
    );
}

/// `quiver serve` with `args` and no token from the environment; its output goes to `log`.
fn serve_cmd(data: &std::path::Path, args: &[&str], log: std::fs::File) -> Command {
    let mut cmd = Command::new(QUIVER);
    cmd.args(["serve", "--http", "off", "--data-dir"])
        .arg(data)
        .args(args)
        .env_remove("QUIVER_TOKEN")
        .env_remove("QUIVER_INSECURE")
        .env_remove("QUIVER_CONFIG")
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    cmd
}

#[test]
fn serving_beyond_loopback_needs_a_token_or_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let mut child = serve_cmd(
        &data,
        &["--listen", "0.0.0.0:0"],
        std::fs::File::create(&log).unwrap(),
    )
    .spawn()
    .unwrap();
    // Bounded: a server that does not refuse must fail this test, not hang it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            stop(&mut child);
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        refused.is_some_and(|s| !s.success()),
        "serving 0.0.0.0 with no token was not refused"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("refusing to serve on 0.0.0.0:0 with no token")
            && text.contains("--insecure"),
        "{text}"
    );
    assert!(!data.exists(), "a refused start opened the store");

    // With --insecure (a warning) or with a token, the same address is served.
    for extra in [&["--insecure"][..], &["--token", "t0k3n"][..]] {
        let log = dir.path().join("serve2.log");
        let mut args = vec!["--listen", "0.0.0.0:0"];
        args.extend_from_slice(extra);
        let mut child = serve_cmd(&data, &args, std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let text = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("quiver is serving") || Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        stop(&mut child);
        assert!(text.contains("quiver is serving"), "{extra:?}: {text}");
        assert_eq!(
            text.contains("no token (--insecure)"),
            extra[0] == "--insecure",
            "{text}"
        );
    }
}
