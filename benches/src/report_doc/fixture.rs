//! A fixed run for the tests: JSON lines shaped as the suites print them (only the fields
//! the report reads), with every kind of outcome: targets met and not met, a scenario that
//! failed, scenarios that did not run, a PostgreSQL counterpart missing.

use std::path::PathBuf;
use std::time::Duration;

use super::machine::{FsyncLatency, Machine, Mount};
use super::{Results, RunInfo};

/// The lines. Left out on purpose: `engine_scan_all`, `client_append_batch1000`,
/// `pg_scan_all` (so `client_scan_all` has no ratio), every cluster and etcd scenario.
const LINES: &str = r#"
{"scenario":"engine_append_batch1","events_per_sec":5180,"p50_us":193.0,"p99_us":310.2,"p999_us":1200.0,"latency_per":"append call"}
{"scenario":"engine_append_batch10","events_per_sec":43400,"p50_us":230.0,"p99_us":400.0,"p999_us":2100.0,"latency_per":"append call"}
{"scenario":"engine_append_batch100","events_per_sec":348634,"p50_us":246.0,"p99_us":404.0,"p999_us":7471.0,"latency_per":"append call"}
{"scenario":"engine_append_batch1000","events_per_sec":890000,"p50_us":1120.0,"p99_us":2400.0,"p999_us":9000.0,"latency_per":"append call"}
{"scenario":"engine_append_batch100_c16","events_per_sec":2000000,"p50_us":700.0,"p99_us":9000.0,"p999_us":20000.0,"latency_per":"append call"}
{"scenario":"engine_append_concurrent64_inflight","events_per_sec":152163,"p50_us":322.0,"p99_us":696.0,"p999_us":6046.0,"latency_per":"append_with call to its callback"}
{"scenario":"engine_read_stream","events_per_sec":4622736,"p50_us":208.0,"p99_us":335.0,"p999_us":391.0,"latency_per":"1000 events read"}
{"scenario":"engine_reopen_10m","events_per_sec":700000,"p50_us":1000.0,"p99_us":3000.0,"p999_us":5000.0,"events":1000000,"reopen_ms":97.5,"writable_ms":98.1,"latency_per":"fill append call (events_per_sec is the fill's)"}
{"scenario":"pg_append_batch100","events_per_sec":88944,"p50_us":854.5,"p99_us":4419.6,"p999_us":14467.1,"latency_per":"append call, as the client sees it"}
{"scenario":"pg_append_batch100_c16","events_per_sec":145942,"p50_us":9486.3,"p99_us":28786.7,"p999_us":37027.8,"latency_per":"append call, as the client sees it"}
{"scenario":"pg_append_concurrent64","events_per_sec":8538,"p50_us":6012.9,"p99_us":29147.1,"p999_us":73793.5,"latency_per":"append call, as the client sees it"}
{"scenario":"pg_read_stream","events_per_sec":564126,"p50_us":1656.8,"p99_us":4448.3,"p999_us":6037.5,"latency_per":"1000 events read"}
{"scenario":"client_append_batch1","events_per_sec":2400,"p50_us":400.0,"p99_us":1900.0,"p999_us":5000.0,"latency_per":"append call, as the client sees it"}
{"scenario":"client_append_batch10","events_per_sec":21000,"p50_us":450.0,"p99_us":2000.0,"p999_us":6000.0,"latency_per":"append call, as the client sees it"}
{"scenario":"client_append_batch100","events_per_sec":157351,"p50_us":507.6,"p99_us":2028.5,"p999_us":5685.2,"vs_postgres":1.77,"postgres_events_per_sec":88944,"latency_per":"append call, as the client sees it"}
{"scenario":"client_append_batch100_c16","events_per_sec":618151,"p50_us":2150.4,"p99_us":18743.3,"p999_us":27820.0,"vs_postgres":4.24,"postgres_events_per_sec":145942,"latency_per":"append call, as the client sees it"}
{"scenario":"client_append_concurrent64","events_per_sec":35320,"p50_us":1657.9,"p99_us":4005.9,"p999_us":18792.4,"vs_postgres":4.14,"postgres_events_per_sec":8538,"latency_per":"append call, as the client sees it"}
{"scenario":"client_append_shared64","events_per_sec":52000,"p50_us":1100.0,"p99_us":3000.0,"p999_us":9000.0,"latency_per":"append call, as the client sees it"}
{"scenario":"client_read_stream","events_per_sec":1107485,"p50_us":462.6,"p99_us":3639.3,"p999_us":4345.9,"vs_postgres":1.96,"postgres_events_per_sec":564126,"latency_per":"1000 events read"}
{"scenario":"client_scan_all","events_per_sec":1109992,"p50_us":586.2,"p99_us":4317.2,"p999_us":6074.4,"vs_postgres":null,"postgres_events_per_sec":null,"latency_per":"1000 events read"}
{"scenario":"subscribe_live_latency","events_per_sec":1698,"p50_us":502.0,"p99_us":1483.0,"p999_us":7135.0,"latency_per":"event: just before its append call to the subscriber receiving it"}
{"scenario":"subscribe_catchup","events_per_sec":796420,"p50_us":1200.0,"p99_us":2500.0,"p999_us":3000.0,"latency_per":"1000 events delivered"}
"#;

/// The fixed run: [`LINES`], with `engine_append_concurrent64` failed between the engine's
/// lines and the peer's.
pub(super) fn results() -> Results {
    let (engine, rest) =
        LINES.split_at(LINES.find("{\"scenario\":\"engine_read_stream\"").unwrap());
    let mut results = Results::from_json_lines(engine).unwrap();
    results.push_failure(
        "engine_append_concurrent64",
        "opening a store in /b/x: Permission denied | (os error 13)",
    );
    let rest = Results::from_json_lines(rest).unwrap();
    results.entries.extend(rest.entries);
    results
}

/// The facts of the fixed run: a machine whose fdatasync p50 is 200 µs.
pub(super) fn info() -> RunInfo {
    RunInfo {
        command: "quiver-bench report --quick --note 'shared machine'".to_string(),
        started_unix_secs: 1_795_000_000,
        duration: Duration::from_secs(252),
        git_rev: Some("3566882aabbccddeeff00112233445566778899a".to_string()),
        git_dirty: Some(false),
        machine: Machine {
            cpu: Some("AMD EPYC 7B13".to_string()),
            cores: 2,
            memory_bytes: Some(24 << 30),
            kernel: Some("6.18.5".to_string()),
            mount: Some(Mount::new("/dev/vda1", "/work", "ext4")),
            fsync: Some(FsyncLatency {
                p10_us: 120.0,
                p50_us: 200.0,
                p90_us: 3_990.0,
                samples: 1_000,
            }),
            load_start: Some(1.5),
            load_end: Some(2.25),
            release_build: true,
        },
        data_dir: PathBuf::from("/work/bench-data"),
        quick: true,
        note: Some("The machine was shared with a build.".to_string()),
        not_run: vec!["the cluster suite (`--skip-cluster`)".to_string()],
        files_href: "bench".to_string(),
    }
}
