//! The command line: `check` gives a JSON report on stdout, exit 0 for a valid history, 1 for
//! one with an anomaly, 2 for a file that cannot be read; `run` is the default command.

use std::process::Command;

const OK: &str = r#"{"index":0,"type":"invoke","process":0,"time_ns":0,"wall_ms":0,"f":"txn","value":[["append","x",1]]}
{"index":1,"type":"ok","process":0,"time_ns":5,"wall_ms":0,"f":"txn","value":[["append","x",1]]}
{"index":2,"type":"invoke","process":1,"time_ns":6,"wall_ms":0,"f":"txn","value":[["r","x",null]]}
"#;

fn run(history: &str) -> (i32, serde_json::Value) {
    let dir = std::env::temp_dir().join(format!("quiver-jepsen-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("h{}.jsonl", history.len()));
    std::fs::write(&path, history).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quiver-jepsen"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap(), report)
}

#[test]
fn check_exits_by_verdict() {
    let valid = format!(
        "{OK}{}\n",
        r#"{"index":3,"type":"ok","process":1,"time_ns":7,"wall_ms":0,"f":"txn","value":[["r","x",[1]]]}"#
    );
    let (code, report) = run(&valid);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["valid"], true);
    assert_eq!(report["counts"]["ok"], 2);

    let lost = format!(
        "{OK}{}\n",
        r#"{"index":3,"type":"ok","process":1,"time_ns":7,"wall_ms":0,"f":"txn","value":[["r","x",[]]]}"#
    );
    let (code, report) = run(&lost);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["valid"], false);
    assert_eq!(report["anomaly_counts"]["lost-append"], 1);

    let (code, _) = run("not json\n");
    assert_eq!(code, 2);
}

/// The run's flags work without the `run` subcommand (the issue's command line), and a bad
/// workload is refused before any node starts.
#[test]
fn run_is_the_default_command() {
    for args in [
        &["--nodes", "3", "--workload", "bogus"][..],
        &["run", "--nodes", "3", "--workload", "bogus"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_quiver-jepsen"))
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("unknown workload `bogus`"), "{args:?}: {err}");
    }
}

/// A run refuses a directory that already holds an earlier run's nodes (their data would join
/// the new cluster), before it starts anything.
#[test]
fn a_run_never_starts_on_an_earlier_runs_nodes() {
    let out = std::env::temp_dir().join(format!("quiver-jepsen-reuse-{}", std::process::id()));
    std::fs::create_dir_all(out.join("nodes").join("n1")).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_quiver-jepsen"))
        .args([
            "--nodes",
            "3",
            "--time-limit",
            "1",
            "--binary",
            "/bin/true",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&out);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(err.contains("holds an earlier run's nodes"), "{err}");
}
