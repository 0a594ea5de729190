//! A restart measured in a process of its own, on a store that stays on disk between runs:
//! what `engine_reopen_10m` measures in the process that filled the store (where freed
//! memory and the fill's writeback share the machine with the open).
//!
//! ```sh
//! cargo run --release -p quiver-bench --example restart_probe -- fill DIR 30000000
//! cargo run --release -p quiver-bench --example restart_probe -- fill1 DIR 10000000
//! cargo run --release -p quiver-bench --example restart_probe -- open DIR   # 3 restarts
//! ```
//!
//! `fill` appends the given number of 256-byte events to a new store in DIR, in appends of
//! 1,000 events to 1,000 streams in turn; `fill1` appends them one event per append (one
//! record each: what open's per-record work costs), from 64 threads; `open` opens it three
//! times, appends one event each time, and prints the time to the open and to that append
//! acknowledged, with what the open did (`OpenStats`); then how long 200 appends of 100
//! events take right away and once the event-id loader is done, the time until it is done,
//! the process's anonymous memory then (`RssAnon`), what the id index holds, and how long
//! closing the store takes.

use std::path::Path;
use std::time::Instant;

use quiver_engine::{Engine, EngineConfig, EventData, ExpectedVersion};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["fill", dir, events] => fill(Path::new(dir), events.parse()?),
        ["fill1", dir, events] => fill_single(Path::new(dir), events.parse()?),
        ["open", dir] => open(Path::new(dir)),
        _ => Err("usage: restart_probe fill DIR EVENTS | fill1 DIR EVENTS | open DIR".into()),
    }
}

fn fill(dir: &Path, events: u64) -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::open(dir, EngineConfig::default())?;
    let data = vec![7u8; 256];
    for call in 0..events.div_ceil(1000) {
        let batch = (0..1000)
            .map(|_| EventData::binary("Filled", data.clone()))
            .collect();
        engine.append(&format!("s-{}", call % 1000), ExpectedVersion::Any, batch)?;
    }
    Ok(())
}

fn fill_single(dir: &Path, events: u64) -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::open(dir, EngineConfig::default())?;
    std::thread::scope(|s| {
        for t in 0..64u64 {
            let engine = &engine;
            s.spawn(move || {
                for k in (t..events).step_by(64) {
                    let one = vec![EventData::binary("Filled", vec![7u8; 256])];
                    engine
                        .append(&format!("s-{}", k % 1000), ExpectedVersion::Any, one)
                        .unwrap();
                }
            });
        }
    });
    Ok(())
}

fn open(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    for _ in 0..3 {
        let started = Instant::now();
        let engine = Engine::open(dir, EngineConfig::default())?;
        let opened = started.elapsed();
        let one = vec![EventData::binary("Probe", vec![1u8; 10])];
        engine.append("probe", ExpectedVersion::Any, one)?;
        let writable = started.elapsed();
        println!(
            "open {:.1} ms, writable {:.1} ms, {:?}",
            opened.as_secs_f64() * 1e3,
            writable.as_secs_f64() * 1e3,
            engine.open_stats()
        );
        let early = appends_ms(&engine)?;
        let done_by_then = engine.id_index_loaded();
        while !engine.id_index_loaded() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let loaded = started.elapsed();
        println!(
            "  200 appends of 100 events: {early:.0} ms right after open (loader {}), {:.0} ms once loaded",
            if done_by_then { "done" } else { "running" },
            appends_ms(&engine)?
        );
        println!(
            "  id index loaded {:.0} ms, RssAnon {} MB, {:?}",
            loaded.as_secs_f64() * 1e3,
            quiver_bench::many_streams::rss_anon()? / 1_000_000,
            engine.id_index_stats()
        );
        let closing = Instant::now();
        drop(engine);
        println!(
            "  closed in {:.0} ms",
            closing.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// Milliseconds that 200 appends of 100 new events take.
fn appends_ms(engine: &Engine) -> Result<f64, Box<dyn std::error::Error>> {
    let t = Instant::now();
    for _ in 0..200 {
        let batch = (0..100)
            .map(|_| EventData::binary("Probe", vec![1u8; 10]))
            .collect();
        engine.append("probe", ExpectedVersion::Any, batch)?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e3)
}
