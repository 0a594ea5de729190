//! Bug 5 of issue 10: the io_uring write path returned on EINTR while its writes and syncs
//! were still in flight. A no-op signal handler installed with SA_RESTART (as the server's
//! SIGTERM/SIGINT handlers are) failed the engine within a few appends. Here a thread sends
//! SIGUSR1 to the writer thread without pause while appends run: every one must succeed.
//! Its own test binary, because the signals would reach the writers of other tests too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use quiver_engine::*;

extern "C" fn ignore(_: libc::c_int) {}

fn install_noop_handler(signal: libc::c_int) {
    // SAFETY: a handler that does nothing is async-signal-safe; sigaction is given a
    // zeroed, then filled, struct it only reads.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(libc::sigaction(signal, &action, std::ptr::null_mut()), 0);
    }
}

/// The kernel thread id of the thread named `name` in this process.
fn thread_id(name: &str) -> libc::pid_t {
    for entry in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = entry.unwrap().path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            return path.file_name().unwrap().to_str().unwrap().parse().unwrap();
        }
    }
    panic!("no thread named {name}");
}

#[test]
fn signals_on_the_writer_thread_fail_no_append() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig::default()
        .segment_bytes_max(256 << 10)
        .io_mode(IoMode::Uring);
    let engine = match Engine::open(dir.path(), config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("skipped: io_uring refused here ({e})");
            return;
        }
    };
    install_noop_handler(libc::SIGUSR1);
    // One append first: the writer thread has then run, so it carries its name.
    let event = EventData::binary("E", vec![0; 200]);
    engine
        .append("s", ExpectedVersion::Any, vec![event])
        .unwrap();
    let writer = thread_id("quiver-writer");
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // SAFETY: plain system calls with integer arguments.
            let pid = unsafe { libc::getpid() };
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: as above; the target thread lives as long as the engine.
                unsafe { libc::syscall(libc::SYS_tgkill, pid, writer, libc::SIGUSR1) };
                sent += 1;
                std::thread::yield_now();
            }
            sent
        })
    };
    let mut failure = None;
    for i in 1..200u64 {
        let event = EventData::binary("E", vec![i as u8; 200]);
        if let Err(e) = engine.append("s", ExpectedVersion::Any, vec![event]) {
            failure = Some((i, e));
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    assert!(sent > 0);
    if let Some((i, e)) = failure {
        panic!("append {i} failed under signals ({sent} sent): {e}");
    }
    assert_eq!(engine.stream_info("s").unwrap().current_version, Some(199));
}
