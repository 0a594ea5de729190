//! `quiver-bench limits`: the floors under the client path and the engine's, measured on this
//! machine, to put beside the stage timings (`client --stages`, `engine --stages`).
//!
//! | scenario | what is measured | latency sample |
//! |---|---|---|
//! | `limit_fdatasync_300b` | `pwrite` of 300 bytes into a preallocated, synced file, then `fdatasync` | the `fdatasync` |
//! | `limit_fdatasync_32k` | the same with 32,000 bytes (a 100-event append is about that) | the `fdatasync` |
//! | `limit_quic_rtt_64b` | one connection; per request a new bidirectional stream carrying 64 bytes, finished; the server answers 64 bytes and finishes | the round trip |
//! | `limit_quic_rtt_32k` | the same with a 32,000-byte request | the round trip |
//! | `limit_fdatasync_512k` | as `limit_fdatasync_32k` with 512,000 bytes: a group commit of 16 appends of 100 events | the `fdatasync` |
//! | `limit_thread_wake` | two threads handing a message back and forth over a channel, each blocked until the other sends: the engine's writer waking a caller blocked in `Engine::append` | one hand-over: send → the blocked thread running |
//!
//! The file is written where the engine's segments would be (`--dir`), at increasing offsets
//! inside a region zeroed and synced beforehand, as the engine writes its preallocated
//! segments: `fdatasync` then flushes data, not the file's size. `write_us` in those lines is
//! the `pwrite`'s p50.
//!
//! The QUIC scenarios use Quiver's own endpoints (`quiver_net::quic`: the same transport
//! settings, socket buffers and TLS 1.3 over a generated certificate) on loopback, one
//! request at a time, with no Quiver framing, no engine and no fsync: the server reads each
//! stream to its end and answers from its accept loop, without spawning a task. This is the
//! floor of a request/response over one QUIC stream per request, not quinn's best: see the
//! text in docs/BENCHMARKS.md for what it leaves out.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use quiver_server::tls::{load_or_generate, read_certs, tls_dir, CaKey, CA_FILE};

use crate::report::{latency_histogram, Report};
use crate::workload::{nanos_since, scratch_dir, timed};

/// The scenarios, in the order they run.
pub const SCENARIOS: &[&str] = &[
    "limit_fdatasync_300b",
    "limit_fdatasync_32k",
    "limit_quic_rtt_64b",
    "limit_quic_rtt_32k",
    "limit_fdatasync_512k",
    "limit_thread_wake",
];

/// Bytes zeroed and synced before the fdatasync scenarios write into them.
const FILE_BYTES: u64 = 256 << 20;

/// Runs `scenario` with its scratch files under `dir`.
pub fn run(scenario: &str, dir: &Path, quick: bool) -> Result<Report> {
    let duration = timed(quick);
    let scratch = scratch_dir(dir, scenario)?;
    let mut report = match scenario {
        "limit_fdatasync_300b" => fdatasync(scratch.path(), 300, duration)?,
        "limit_fdatasync_32k" => fdatasync(scratch.path(), 32_000, duration)?,
        "limit_quic_rtt_64b" => quic_rtt(scratch.path().to_path_buf(), 64, duration)?,
        "limit_quic_rtt_32k" => quic_rtt(scratch.path().to_path_buf(), 32_000, duration)?,
        "limit_fdatasync_512k" => fdatasync(scratch.path(), 512_000, duration)?,
        "limit_thread_wake" => thread_wake(duration)?,
        other => anyhow::bail!("no scenario {other:?}; known: {}", SCENARIOS.join(", ")),
    };
    report.scenario = scenario.to_string();
    Ok(report.with("quick", quick))
}

/// `pwrite` of `bytes` at increasing offsets, each followed by an `fdatasync`.
fn fdatasync(dir: &Path, bytes: usize, duration: Duration) -> Result<Report> {
    let path = dir.join("fdatasync.probe");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let zeros = vec![0u8; 1 << 20];
    for at in (0..FILE_BYTES).step_by(zeros.len()) {
        file.write_all_at(&zeros, at)?;
    }
    file.sync_all()?;
    let data = vec![0xa5u8; bytes];
    let mut sync = latency_histogram();
    let mut write = latency_histogram();
    let mut offset = 0u64;
    let started = Instant::now();
    while started.elapsed() < duration && offset + bytes as u64 <= FILE_BYTES {
        let began = Instant::now();
        file.write_all_at(&data, offset)?;
        write.saturating_record(nanos_since(began));
        let began = Instant::now();
        file.sync_data()?;
        sync.saturating_record(nanos_since(began));
        offset += bytes as u64;
    }
    let elapsed = started.elapsed();
    let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
    Ok(Report::new("", sync.len(), elapsed, &sync)
        .with("bytes", bytes)
        .with("write_us", us(write.value_at_quantile(0.5)))
        .with("mean_us", us(sync.mean() as u64))
        .with("dir", dir.display().to_string())
        .with(
            "latency_per",
            "fdatasync after a pwrite into zeroed, synced space",
        ))
}

/// Request/response round trips over one QUIC connection on loopback, a stream each.
fn quic_rtt(dir: PathBuf, request_bytes: usize, duration: Duration) -> Result<Report> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let (chain, key) = load_or_generate(&dir, None, None, CaKey::Random)?;
        let roots = read_certs(&tls_dir(&dir).join(CA_FILE))?;
        let server = quiver_net::quic::server_endpoint("127.0.0.1:0".parse()?, chain, key)?;
        let addr = server.local_addr()?;
        let answer = vec![0x5au8; 64];
        let serving = tokio::spawn(async move {
            let Some(incoming) = server.accept().await else {
                return;
            };
            let Ok(conn) = incoming.await else { return };
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                if recv.read_to_end(1 << 20).await.is_err() {
                    return;
                }
                if send.write_all(&answer).await.is_err() || send.finish().is_err() {
                    return;
                }
            }
        });
        let client = quiver_net::quic::client_endpoint(&roots)?;
        let conn = client.connect(addr, "localhost")?.await?;
        let request = vec![0xa5u8; request_bytes];
        let mut latency = latency_histogram();
        let started = Instant::now();
        while started.elapsed() < duration {
            let began = Instant::now();
            let (mut send, mut recv) = conn.open_bi().await?;
            send.write_all(&request).await?;
            send.finish()?;
            let got = recv.read_to_end(1 << 20).await?;
            anyhow::ensure!(got.len() == 64, "answer of {} bytes", got.len());
            latency.saturating_record(nanos_since(began));
        }
        let elapsed = started.elapsed();
        conn.close(0u32.into(), b"done");
        client.wait_idle().await;
        serving.abort();
        let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
        Ok(Report::new("", latency.len(), elapsed, &latency)
            .with("request_bytes", request_bytes)
            .with("answer_bytes", 64)
            .with("mean_us", us(latency.mean() as u64))
            .with(
                "latency_per",
                "round trip: open a stream, send the request and finish, read the answer to \
                 its end; Quiver's QUIC endpoints on loopback, no framing, no engine",
            ))
    })
}

/// Two threads hand a timestamp back and forth over channels, each blocked in `recv` until
/// the other sends: every hand-over is a futex wake of a sleeping thread, as when the
/// engine's writer tells a caller blocked in `Engine::append` that its append is durable.
/// The sample is one hand-over (sent → the receiver running); `cpu_us_per_wake` is the
/// process's CPU time over the run divided by the hand-overs.
fn thread_wake(duration: Duration) -> Result<Report> {
    let (to_b, at_b) = std::sync::mpsc::sync_channel::<Instant>(1);
    let (to_a, at_a) = std::sync::mpsc::sync_channel::<Instant>(1);
    let echo = std::thread::spawn(move || {
        let mut woken = latency_histogram();
        while let Ok(sent) = at_b.recv() {
            woken.saturating_record(nanos_since(sent));
            if to_a.send(Instant::now()).is_err() {
                break;
            }
        }
        woken
    });
    let mut woken = latency_histogram();
    let before = crate::stages::Usage::now();
    let started = Instant::now();
    while started.elapsed() < duration {
        to_b.send(Instant::now())
            .context("the echo thread stopped")?;
        let sent = at_a.recv().context("the echo thread stopped")?;
        woken.saturating_record(nanos_since(sent));
    }
    let elapsed = started.elapsed();
    let cpu = crate::stages::Usage::now().cpu.saturating_sub(before.cpu);
    drop(to_b);
    let other = echo
        .join()
        .map_err(|_| anyhow::anyhow!("the echo thread panicked"))?;
    woken
        .add(&other)
        .context("merging the two threads' samples")?;
    let wakes = woken.len().max(1);
    let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
    Ok(Report::new("", wakes, elapsed, &woken)
        .with("mean_us", us(woken.mean() as u64))
        .with(
            "cpu_us_per_wake",
            (cpu.as_secs_f64() * 1e7 / wakes as f64).round() / 10.0,
        )
        .with(
            "latency_per",
            "hand-over: a message sent → the thread blocked on it running (std mpsc, futex)",
        ))
}
