//! Where the kernel refuses io_uring (Docker's default seccomp profile does), `IoMode::Auto`
//! falls back to pwrite + fdatasync and the store works. The refusal is real: the test runs
//! itself again in a child process that installs a seccomp filter making `io_uring_setup`
//! fail with EPERM, as Docker's profile does, before it opens the engine.

use std::process::Command;

use quiver_engine::*;

const CHILD: &str = "QUIVER_URING_REFUSED_CHILD";
const EVENTS: u64 = 50;

#[test]
fn auto_falls_back_to_pwrite_when_io_uring_is_refused() {
    if let Ok(dir) = std::env::var(CHILD) {
        return child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "auto_falls_back_to_pwrite_when_io_uring_is_refused",
            "--nocapture",
        ])
        .env(CHILD, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("child: pwrite fallback ok"),
        "child output:\n{stdout}\n{stderr}"
    );
    // Without the filter, the same store opens and holds what the fallback wrote.
    let e = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let n = e
        .read_stream("s", ReadFrom::Start, Direction::Forward, u64::MAX)
        .unwrap()
        .count();
    assert_eq!(n as u64, EVENTS);
}

fn child(dir: &str) {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};
    let rules = [(libc::SYS_io_uring_setup, vec![])].into_iter().collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(1), // EPERM, what Docker's default profile returns
        std::env::consts::ARCH.try_into().unwrap(),
    )
    .unwrap();
    let program: BpfProgram = filter.try_into().unwrap();
    seccompiler::apply_filter(&program).unwrap();

    let forced = Engine::open(dir, EngineConfig::default().io_mode(IoMode::Uring));
    assert!(
        matches!(forced, Err(OpenError::Io { .. })),
        "io_uring must be refused here"
    );
    let e = Engine::open(dir, EngineConfig::default()).unwrap();
    assert_eq!(e.io_mode(), IoMode::Pwrite);
    for i in 0..EVENTS {
        let ev = EventData::json("T", format!("{{\"i\":{i}}}").into_bytes());
        e.append("s", ExpectedVersion::Any, vec![ev]).unwrap();
    }
    println!("child: pwrite fallback ok");
}
