//! The PostgreSQL peer of the `client` suite: a throwaway PostgreSQL server started by
//! `quiver-bench` itself, used as an event store the way teams use it, and driven with the
//! same workloads as Quiver in the same run, so that the Quiver reports can carry
//! `vs_postgres` (DESIGN.md: "≥ 10× PostgreSQL on batch appends", same machine, same run).
//!
//! | scenario | what is measured | latency sample | Quiver counterpart |
//! |---|---|---|---|
//! | `pg_append_batch100` | 1 connection, appends of 100 events in turn | append call | `client_append_batch100` |
//! | `pg_append_batch100_c16` | 16 connections, a stream each, appends of 100 | append call | `client_append_batch100_c16` |
//! | `pg_append_concurrent64` | 64 connections, a stream each, 1 event per append | append call | `client_append_concurrent64` |
//! | `pg_read_stream` | read a 1,000,000-event stream (200,000 `--quick`) by version, pages of 1,000 | 1,000 events | `client_read_stream` |
//! | `pg_scan_all` | read the whole table in position order, pages of 1,000 | 1,000 events | `client_scan_all` |
//!
//! Events are the client suite's: 256 bytes of binary data, an event type of 11 characters,
//! empty metadata, a UUID each; timed runs last 3 s (1 s with `--quick`); the read table is
//! filled beforehand over one connection in appends of 1,000 (`fill_events_per_sec`), one
//! event in ten of type `bench-tenth`, as Quiver's read store is. Each append scenario starts
//! on freshly created tables (dropped and created again, then a `CHECKPOINT`, untimed), as
//! each Quiver append scenario starts on a fresh store; after it, the table's row count must
//! equal the events acknowledged. Connections are opened and their statements prepared
//! before the clock starts (as a connection pool with a statement cache would have them).
//! Latency is what the client sees, from an HDR histogram, as in the client suite.
//!
//! ## Schema
//!
//! ```sql
//! CREATE TABLE streams (stream text PRIMARY KEY, version bigint NOT NULL);
//! CREATE TABLE events (
//!     position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- a sequence, like bigserial
//!     stream   text NOT NULL,
//!     version  bigint NOT NULL,
//!     id       uuid NOT NULL UNIQUE,
//!     type     text NOT NULL,
//!     data     bytea NOT NULL,
//!     metadata bytea NOT NULL,
//!     created  timestamptz NOT NULL DEFAULT now(),
//!     UNIQUE (stream, version));
//! ```
//!
//! and a PL/pgSQL function `append_events(stream, expected, ids[], types[], data[],
//! metadata[])` ([`SCHEMA`] holds it all). An append is **one call of that function, one
//! transaction** (autocommit), committed when the WAL is flushed: a single round trip, as
//! PostgreSQL event stores that append through a server-side function (Message DB's
//! `write_message`, for one) do it. That is the cheapest correct shape we know for
//! PostgreSQL: a client-side transaction (`BEGIN`, version check, `INSERT`, `COMMIT`) costs
//! four round trips instead of one. The batch goes in as one multi-row
//! `INSERT … SELECT … FROM unnest($ids, $types, $data, $metadata) WITH ORDINALITY`: one
//! statement whatever the batch size, the arrays bound as parameters; `COPY` would add its own
//! protocol exchange per append and buys nothing at 1–100 rows.
//!
//! **The expected-version check: a `streams` row, locked.** The function first upserts the
//! stream's row, `INSERT INTO streams … ON CONFLICT (stream) DO UPDATE SET version =
//! streams.version + n RETURNING version`, which takes that row's lock until the
//! transaction ends and returns the stream's new last version; the previous one (`last -
//! n`, -1 for a new stream) is checked against the expected version (`NULL` any, -1 no
//! stream, -2 stream exists, ≥ 0 exactly that), and a mismatch raises SQLSTATE `QV001`
//! with the actual version (the whole transaction rolls back). Concurrent writers to one
//! stream queue on the row lock, and under READ COMMITTED the upsert of the second one
//! works on the first one's committed row, so versions are handed out strictly one after
//! another, and an `Any` append never fails for a race. The alternative, `SELECT
//! max(version) FROM events WHERE stream = $1` and then insert, is also correct thanks to
//! `UNIQUE (stream, version)`, but only by failing the loser of every race with a unique
//! violation that the application must retry, and `max()` cannot be locked `FOR UPDATE` (nor
//! can a stream that has no row yet): hence the `streams` table. A unit test checks that a
//! stale expected version is refused and that concurrent appends to one stream get dense
//! versions.
//!
//! Positions come from a sequence, which is what teams do, and is weaker than Quiver's
//! `$all`: a sequence value is drawn before the transaction commits, so positions commit
//! out of order and a reader following the table by position can miss an event that
//! commits late. Making them gap-free in commit order needs one global lock around every
//! append, which would slow PostgreSQL down further; the comparison gives PostgreSQL the
//! cheaper, weaker scheme.
//!
//! ## The server
//!
//! Binaries: `pg_config --bindir`, else the newest `/usr/lib/postgresql/<version>/bin`
//! (Debian's layout), else `initdb` and `pg_ctl` on `PATH`. `initdb` (role `quiver`,
//! `trust` authentication: the server listens on 127.0.0.1 only and lives for one run,
//! UTF8, locale C) into a scratch directory under the bench directory (`--dir`: on the disk
//! to measure, never a tmpfs such as /tmp, whose fsync is free), then `pg_ctl start` with
//! these lines appended to its `postgresql.conf`: a free loopback TCP port, a Unix socket
//! directory inside the scratch directory (none if that path would be too long for a
//! socket), and [`SETTINGS`]:
//!
//! | setting | value | why |
//! |---|---|---|
//! | `fsync` | on | the default: a commit is on disk before it is answered |
//! | `synchronous_commit` | on | the default: the commit waits for its WAL flush |
//! | `full_page_writes` | on | the default: torn pages are recoverable |
//! | `max_connections` | 100 | the default; the 64-connection scenario needs 65 |
//! | `shared_buffers` | 256MB | a modest production value (the default is 128MB) |
//!
//! Everything else keeps PostgreSQL's defaults (WAL sync method `fdatasync` on Linux,
//! `commit_delay` 0, autovacuum on). The settings in force are read back with `SHOW` and
//! reported in every PostgreSQL line (`postgres_settings`), with the server's version.
//! Starting is bounded (`pg_ctl -w -t 30`, and the command is killed 5 s after that);
//! `initdb` and stopping are bounded too. The server is stopped with `pg_ctl stop -m fast`
//! and the directory deleted when the peer is dropped (scenario error or panic included) or
//! stopped, which the client suite does before its first Quiver scenario, so that Quiver
//! runs on a machine without an idle PostgreSQL. pg_ctl detaches the server, so if
//! `quiver-bench` itself is killed (SIGKILL) the server is left running: stop it with
//! `pg_ctl -D <dir>/postgres-XXXX/data stop` and delete the directory.
//!
//! **As root.** `initdb` refuses to run as root, and so do `pg_ctl` and `postgres`. When
//! `quiver-bench` runs as root (this project's machines do), the scratch directory is
//! chowned to an unprivileged account, `postgres` (which Debian's package creates), else
//! `nobody`, and `initdb` and `pg_ctl` are started as that account: `Command::uid`/`gid`
//! (std's `setgroups`/`setgid`/`setuid` in the child before exec; `runuser -u nobody --` does
//! the same and works here too, but needs util-linux). That account must be able to reach
//! the bench directory: a `--dir` under a directory closed to others (say `/root`) fails
//! with "Permission denied" in initdb's output.
//!
//! **Without PostgreSQL** (not installed, or it does not start) the client suite prints one
//! message on stderr saying why and how to install it (`apt-get install postgresql`), skips
//! these scenarios, and reports `vs_postgres: null`; the Quiver scenarios still run.

use std::ffi::CString;
use std::fmt;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context as _, Result};
use hdrhistogram::Histogram;
use quiver_client::ExpectedVersion;
use quiver_engine::Uuid;
use serde_json::{Map, Value};
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tokio_postgres::{Client, Config, NoTls, Statement};

use crate::client_suite::{fill_type, run_tasks};
use crate::report::{latency_histogram, Report};
use crate::workload::{
    nanos_since, scratch_dir, timed, Ids, ReadTimer, Run, EVENT_DATA_BYTES, EVENT_TYPE, FILL_BATCH,
    PAYLOAD, READ_SAMPLE_EVENTS,
};

/// Every scenario of the peer, in the order they are meant to run (before Quiver's).
pub const SCENARIOS: &[&str] = &[
    "pg_append_batch100",
    "pg_append_batch100_c16",
    "pg_append_concurrent64",
    "pg_read_stream",
    "pg_scan_all",
];

/// (Quiver scenario of the client suite, its PostgreSQL counterpart).
pub const COUNTERPARTS: &[(&str, &str)] = &[
    ("client_append_batch100", "pg_append_batch100"),
    ("client_append_batch100_c16", "pg_append_batch100_c16"),
    ("client_append_concurrent64", "pg_append_concurrent64"),
    ("client_read_stream", "pg_read_stream"),
    ("client_scan_all", "pg_scan_all"),
];

/// What to do to get the peer, for the message printed when it cannot run.
pub const INSTALL_HINT: &str = "the PostgreSQL scenarios need PostgreSQL's server installed \
     (Debian or Ubuntu: `apt-get install postgresql`) and able to start under --dir; \
     --no-peer skips them without this message";

/// The settings appended to the throwaway server's `postgresql.conf` (besides its address
/// and socket directory), and read back with `SHOW` into every report.
pub const SETTINGS: &[(&str, &str)] = &[
    ("fsync", "on"),
    ("synchronous_commit", "on"),
    ("full_page_writes", "on"),
    ("max_connections", "100"),
    ("shared_buffers", "256MB"),
];

/// Settings reported besides [`SETTINGS`], left at PostgreSQL's defaults.
const REPORTED_DEFAULTS: &[&str] = &["wal_sync_method", "commit_delay", "wal_level"];

/// The tables and the append function; run on a database without them.
pub const SCHEMA: &str = r#"
CREATE TABLE streams (stream text PRIMARY KEY, version bigint NOT NULL);
CREATE TABLE events (
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream   text NOT NULL,
    version  bigint NOT NULL,
    id       uuid NOT NULL UNIQUE,
    type     text NOT NULL,
    data     bytea NOT NULL,
    metadata bytea NOT NULL,
    created  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream, version));
-- Appends the events to the stream if its version is the expected one: NULL any, -1 no
-- stream, -2 stream exists, >= 0 exactly that; returns the stream's new last version.
CREATE FUNCTION append_events(p_stream text, p_expected bigint, p_ids uuid[],
                              p_types text[], p_data bytea[], p_metadata bytea[])
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint := coalesce(cardinality(p_ids), 0);
    last bigint;
BEGIN
    IF n = 0 THEN
        RAISE EXCEPTION 'an append needs at least one event';
    END IF;
    -- Takes the stream row's lock until commit: writers to one stream go one at a time.
    INSERT INTO streams AS s (stream, version) VALUES (p_stream, n - 1)
        ON CONFLICT (stream) DO UPDATE SET version = s.version + n
        RETURNING s.version INTO last;
    IF p_expected IS NOT NULL
       AND NOT ((p_expected = -2 AND last - n >= 0) OR last - n = p_expected) THEN
        RAISE EXCEPTION 'wrong expected version for stream %: expected %, actual %',
                        p_stream, p_expected, last - n
            USING ERRCODE = 'QV001', DETAIL = (last - n)::text;
    END IF;
    INSERT INTO events (stream, version, id, type, data, metadata)
        SELECT p_stream, last - n + u.o, u.i, u.t, u.d, u.m
        FROM unnest(p_ids, p_types, p_data, p_metadata) WITH ORDINALITY AS u(i, t, d, m, o);
    RETURN last;
END
$$;
"#;

/// Drops what [`SCHEMA`] creates.
const DROP_SCHEMA: &str = "DROP FUNCTION IF EXISTS append_events; \
                           DROP TABLE IF EXISTS events, streams;";

/// The append, as the clients prepare it.
const APPEND_SQL: &str = "SELECT append_events($1, $2, $3, $4, $5, $6)";
/// A page of a stream, by version.
const READ_STREAM_SQL: &str = "SELECT position, version, id, type, data, metadata, created \
     FROM events WHERE stream = $1 AND version >= $2 ORDER BY version LIMIT $3";
/// A page of the whole table, by position.
const SCAN_SQL: &str = "SELECT position, stream, version, id, type, data, metadata, created \
     FROM events WHERE position >= $1 ORDER BY position LIMIT $2";

/// SQLSTATE raised by `append_events` on a wrong expected version.
const WRONG_VERSION_SQLSTATE: &str = "QV001";
/// Events per page of a read.
const PAGE: i64 = 1_000;
/// The database role initdb creates (superuser of the throwaway server).
const ROLE: &str = "quiver";
/// `pg_ctl start -t` and `stop -t`: how long the server may take to start or stop.
const PG_CTL_WAIT: Duration = Duration::from_secs(30);
/// How much longer than [`PG_CTL_WAIT`] pg_ctl itself may take before it is killed.
const PG_CTL_GRACE: Duration = Duration::from_secs(5);
/// How long initdb may take.
const INITDB_MAX: Duration = Duration::from_secs(60);
/// How long opening a connection may take.
const CONNECT_MAX: Duration = Duration::from_secs(10);
/// How long a scenario's set-up, fill and checks may take beyond its timed part.
const SCENARIO_SLACK: Duration = Duration::from_secs(600);
/// Longest Unix socket path (`sun_path` holds 108 bytes with the terminating NUL).
const SOCKET_PATH_MAX: usize = 107;

/// `append_events`'s encoding of an expected version (Quiver's client's own type):
/// `NULL` any, -1 no stream, -2 stream exists, ≥ 0 exact.
fn expected_code(expected: ExpectedVersion) -> Result<Option<i64>> {
    Ok(match expected {
        ExpectedVersion::Any => None,
        ExpectedVersion::NoStream => Some(-1),
        ExpectedVersion::StreamExists => Some(-2),
        ExpectedVersion::Exact(v) => Some(i64::try_from(v).context("version beyond i64")?),
    })
}

/// An append refused because the stream's version was not the expected one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongExpectedVersion {
    /// The stream appended to.
    pub stream: String,
    /// What the append expected.
    pub expected: ExpectedVersion,
    /// The stream's last version when the append was refused; `None`: no stream.
    pub actual: Option<u64>,
}

impl fmt::Display for WrongExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wrong expected version for {}: expected {:?}, actual {}",
            self.stream,
            self.expected,
            self.actual
                .map_or_else(|| "no stream".to_string(), |v| v.to_string())
        )
    }
}

impl std::error::Error for WrongExpectedVersion {}

/// The PostgreSQL scenario measured against Quiver's `scenario`, if any.
pub fn counterpart(scenario: &str) -> Option<&'static str> {
    COUNTERPARTS
        .iter()
        .find(|(quiver, _)| *quiver == scenario)
        .map(|(_, pg)| *pg)
}

/// Whether `scenario` is one of the peer's.
pub fn is_peer_scenario(scenario: &str) -> bool {
    SCENARIOS.contains(&scenario)
}

/// Adds Quiver's ratio to its PostgreSQL counterpart's rate, `null` when that did not run.
pub fn vs_postgres(report: Report, postgres: Option<u64>, counterpart: &str) -> Report {
    let ratio = postgres
        .filter(|&p| p > 0)
        .map(|p| (report.events_per_sec as f64 / p as f64 * 100.0).round() / 100.0);
    report
        .with("vs_postgres", ratio)
        .with("postgres_events_per_sec", postgres)
        .with("postgres_counterpart", counterpart)
}

/// The account that runs initdb and the server when `quiver-bench` runs as root.
#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

impl RunAs {
    /// `postgres` if the machine has that account, else `nobody`.
    fn unprivileged() -> Result<RunAs> {
        for name in ["postgres", "nobody"] {
            if let Some((uid, gid)) = lookup_user(name) {
                if uid != 0 {
                    return Ok(RunAs {
                        name: name.to_string(),
                        uid,
                        gid,
                    });
                }
            }
        }
        bail!(
            "running as root, and neither a `postgres` nor a `nobody` account exists to run \
             initdb as (initdb refuses root)"
        )
    }
}

/// The uid and gid of account `name`.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let cname = CString::new(name).ok()?;
    // SAFETY: `passwd` is plain data; getpwnam_r fills it with pointers into `buf`, which
    // outlives every read of it below; `result` is null or points at `pwd`.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        (rc == 0 && !result.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
    }
}

/// The directory holding `initdb` and `pg_ctl`: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/<version>/bin`, else a directory of `PATH`.
pub fn find_bindir() -> Result<PathBuf> {
    let usable = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(out) = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && usable(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
                .ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| usable(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    if let Some(dir) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| usable(d))
    {
        return Ok(dir);
    }
    bail!(
        "PostgreSQL is not installed: no initdb and pg_ctl in `pg_config --bindir`, \
         /usr/lib/postgresql/*/bin or PATH"
    )
}

/// A throwaway PostgreSQL server: initdb'd into a scratch directory, listening on a free
/// loopback port; stopped (`pg_ctl stop -m fast`) and its directory deleted when dropped.
pub struct Postgres {
    bindir: PathBuf,
    /// The scratch directory, absolute.
    root: PathBuf,
    port: u16,
    run_as: Option<RunAs>,
    running: bool,
    version: String,
    settings: Map<String, Value>,
    // Last, so deleted after the server has stopped (Drop runs before the fields drop).
    _dir: TempDir,
}

impl Postgres {
    /// Finds the binaries, initdb's a fresh cluster under `base` and starts it.
    pub fn start(base: &Path) -> Result<Postgres> {
        let bindir = find_bindir()?;
        let dir = scratch_dir(base, "postgres")?;
        let root = dir
            .path()
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.path().display()))?;
        // SAFETY: geteuid has no preconditions.
        let run_as = if unsafe { libc::geteuid() } == 0 {
            Some(RunAs::unprivileged()?)
        } else {
            None
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free loopback port")?
            .port();
        let mut pg = Postgres {
            bindir,
            root,
            port,
            run_as,
            running: false,
            version: String::new(),
            settings: Map::new(),
            _dir: dir,
        };
        let socket_dir = pg.root.join("sock");
        std::fs::create_dir(&socket_dir)
            .with_context(|| format!("creating {}", socket_dir.display()))?;
        if let Some(user) = &pg.run_as {
            for d in [&pg.root, &socket_dir] {
                std::os::unix::fs::chown(d, Some(user.uid), Some(user.gid)).with_context(|| {
                    format!("handing {} to the account {}", d.display(), user.name)
                })?;
            }
        }
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                ROLE.as_ref(),
                "--auth=trust".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--locale=C".as_ref(),
            ],
            INITDB_MAX,
        )?;
        pg.configure(&socket_dir)?;
        // From here on a stop is due, even if pg_ctl does not say the server started.
        pg.running = true;
        let wait = PG_CTL_WAIT.as_secs().to_string();
        let log = pg.log();
        pg.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                wait.as_ref(),
                "start".as_ref(),
            ],
            PG_CTL_WAIT + PG_CTL_GRACE,
        )
        .with_context(|| format!("starting PostgreSQL; its log:\n{}", log_tail(&log)))?;
        Ok(pg)
    }

    /// The cluster's data directory.
    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The server's log.
    fn log(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    /// Appends the address, socket directory and [`SETTINGS`] to `postgresql.conf`.
    fn configure(&self, socket_dir: &Path) -> Result<()> {
        use std::io::Write as _;
        let socket = socket_dir.join(format!(".s.PGSQL.{}", self.port));
        // Only TCP is used; a socket path the kernel cannot take would stop the start.
        let sockets = if socket.as_os_str().len() <= SOCKET_PATH_MAX {
            socket_dir.display().to_string()
        } else {
            String::new()
        };
        let mut conf =
            String::from("\n# quiver-bench: a throwaway server for the PostgreSQL peer\n");
        conf += "listen_addresses = '127.0.0.1'\n";
        conf += &format!("port = {}\n", self.port);
        conf += &format!(
            "unix_socket_directories = '{}'\n",
            sockets.replace('\'', "''")
        );
        for (name, value) in SETTINGS {
            conf += &format!("{name} = '{value}'\n");
        }
        let path = self.data().join("postgresql.conf");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Runs `program` of the PostgreSQL binaries (as the unprivileged account when root)
    /// and waits for it, at most `limit`; its output goes to `<program>.out`.
    fn run(&self, program: &str, args: &[&std::ffi::OsStr], limit: Duration) -> Result<()> {
        use std::os::unix::process::CommandExt as _;
        let out_path = self.root.join(format!("{program}.out"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out_path)
            .with_context(|| format!("opening {}", out_path.display()))?;
        let mut cmd = Command::new(self.bindir.join(program));
        cmd.args(args)
            .current_dir(&self.root)
            .env_clear()
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        if let Some(user) = &self.run_as {
            cmd.uid(user.uid).gid(user.gid);
        }
        let what = match &self.run_as {
            Some(user) => format!("{program} (as {})", user.name),
            None => program.to_string(),
        };
        let mut child = cmd.spawn().with_context(|| {
            let mut what = format!("starting {}", self.bindir.join(program).display());
            if let Some(user) = &self.run_as {
                what += &format!(
                    " as {} in {} (that account must be able to reach it: pick a --dir \
                     outside directories closed to others, such as /root)",
                    user.name,
                    self.root.display()
                );
            }
            what
        })?;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait()? {
                ensure!(
                    status.success(),
                    "{what} failed ({status}):\n{}",
                    log_tail(&out_path)
                );
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{what} did not finish within {limit:?}:\n{}",
                    log_tail(&out_path)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How to connect to the server.
    pub fn config(&self) -> Config {
        let mut config = Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(ROLE)
            .dbname("postgres")
            .application_name("quiver-bench")
            .connect_timeout(CONNECT_MAX);
        config
    }

    /// Reads the server's version and the settings in force (for the reports).
    async fn describe_server(&mut self) -> Result<()> {
        let client = connect(&self.config()).await?;
        let version: String = client
            .query_one("SHOW server_version", &[])
            .await
            .context("asking PostgreSQL its version")?
            .try_get(0)?;
        let mut settings = Map::new();
        let names = SETTINGS
            .iter()
            .map(|(name, _)| *name)
            .chain(REPORTED_DEFAULTS.iter().copied());
        for name in names {
            let value: String = client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .with_context(|| format!("reading the setting {name}"))?
                .try_get(0)?;
            settings.insert(name.to_string(), value.into());
        }
        for (name, wanted) in SETTINGS {
            ensure!(
                settings[*name] == *wanted,
                "PostgreSQL runs with {name} = {}, not {wanted}",
                settings[*name]
            );
        }
        self.version = version;
        self.settings = settings;
        Ok(())
    }

    /// Stops the server (`pg_ctl stop -m fast`); if that fails, signals it to quit at once.
    pub fn stop(&mut self) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        let wait = PG_CTL_WAIT.as_secs().to_string();
        let data = self.data();
        let stopped = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                wait.as_ref(),
                "stop".as_ref(),
            ],
            PG_CTL_WAIT + PG_CTL_GRACE,
        );
        if stopped.is_err() {
            self.quit_immediately();
        }
        stopped.context("stopping PostgreSQL")
    }

    /// SIGQUIT to the postmaster (PostgreSQL's immediate shutdown), then SIGKILL if it is
    /// still there after a few seconds: the last resort when pg_ctl could not stop it.
    fn quit_immediately(&self) {
        let pid = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse::<libc::pid_t>().ok());
        let Some(pid) = pid.filter(|&p| p > 0) else {
            return;
        };
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGQUIT) };
        let deadline = Instant::now() + PG_CTL_GRACE;
        // SAFETY: as above; signal 0 only checks that the process exists.
        while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("quiver-bench: {e:#}");
        }
    }
}

/// The last lines of a file, for an error message.
fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(8 * 1024)));
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A connection, its driver task spawned on the current runtime.
async fn connect(config: &Config) -> Result<Client> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    // Ends when the client is dropped; an error surfaces in the client's next call.
    tokio::spawn(connection);
    Ok(client)
}

/// Drops and creates the tables and the function, then checkpoints, so that the next
/// scenario starts on empty tables and no earlier writing is flushed during it.
async fn reset_schema(client: &Client) -> Result<()> {
    client
        .batch_execute(DROP_SCHEMA)
        .await
        .context("dropping the schema")?;
    client
        .batch_execute(SCHEMA)
        .await
        .context("creating the schema")?;
    client
        .batch_execute("CHECKPOINT")
        .await
        .context("checkpointing")
}

/// One connection that appends through `append_events`, its statement prepared.
pub struct Appender {
    client: Client,
    append: Statement,
}

impl Appender {
    /// Connects and prepares the append.
    pub async fn connect(config: &Config) -> Result<Appender> {
        let client = connect(config).await?;
        let append = client
            .prepare(APPEND_SQL)
            .await
            .context("preparing the append")?;
        Ok(Appender { client, append })
    }

    /// Appends `ids.len()` events of type `event_type` with the benchmark's payload and
    /// empty metadata to `stream`; returns the stream's new last version. A wrong expected
    /// version is an error that downcasts to [`WrongExpectedVersion`].
    pub async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        ids: Vec<Uuid>,
        types: Vec<&str>,
    ) -> Result<u64> {
        let n = ids.len();
        ensure!(n > 0 && types.len() == n, "an append needs events, typed");
        let data: Vec<&[u8]> = vec![&PAYLOAD[..]; n];
        let metadata: Vec<&[u8]> = vec![&[][..]; n];
        let answer = self
            .client
            .query_one(
                &self.append,
                &[
                    &stream,
                    &expected_code(expected)?,
                    &ids,
                    &types,
                    &data,
                    &metadata,
                ],
            )
            .await;
        match answer {
            Ok(row) => {
                let last: i64 = row.try_get(0)?;
                u64::try_from(last).context("append_events returned a negative version")
            }
            Err(e) => {
                let refused = e
                    .as_db_error()
                    .filter(|d| d.code().code() == WRONG_VERSION_SQLSTATE);
                let Some(db) = refused else {
                    return Err(anyhow::Error::new(e).context(format!("appending to {stream}")));
                };
                let actual: i64 = db
                    .detail()
                    .and_then(|d| d.parse().ok())
                    .context("a wrong-version error without the actual version")?;
                Err(WrongExpectedVersion {
                    stream: stream.to_string(),
                    expected,
                    actual: u64::try_from(actual).ok(),
                }
                .into())
            }
        }
    }
}

/// Appends batches of `batch` events to `stream` until `duration` has passed; one latency
/// sample per append call.
async fn append_loop(
    appender: Appender,
    stream: String,
    mut ids: Ids,
    batch: usize,
    duration: Duration,
) -> Result<(Histogram<u64>, u64)> {
    let mut latency = latency_histogram();
    let until = Instant::now() + duration;
    let mut events = 0;
    while Instant::now() < until {
        let write: Vec<Uuid> = (0..batch).map(|_| ids.id()).collect();
        let began = Instant::now();
        appender
            .append(
                &stream,
                ExpectedVersion::Any,
                write,
                vec![EVENT_TYPE; batch],
            )
            .await?;
        latency.saturating_record(nanos_since(began));
        events += batch as u64;
    }
    Ok((latency, events))
}

/// How the peer's scenarios run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Timed scenarios run 1 s instead of 3 s.
    pub quick: bool,
    /// Events in the read table (the same as Quiver's read store).
    pub read_events: u64,
}

/// The table the read scenarios read: one stream, filled once.
struct ReadTable {
    stream: String,
    events: u64,
    first_position: i64,
    fill_events_per_sec: u64,
    vacuum_ms: u64,
}

/// The peer: a running throwaway server and what the scenarios share.
pub struct Peer {
    server: Postgres,
    opts: Options,
    reads: Option<ReadTable>,
    sources: u64,
}

impl Peer {
    /// Starts a throwaway PostgreSQL under `base` (see the module doc).
    pub fn start(base: &Path, opts: Options, runtime: &Runtime) -> Result<Peer> {
        let mut server = Postgres::start(base)?;
        bounded(runtime, CONNECT_MAX * 3, server.describe_server())?;
        Ok(Peer {
            server,
            opts,
            reads: None,
            sources: 0,
        })
    }

    /// Stops the server (dropping the peer does too, but can only print a failure).
    pub fn stop(mut self) -> Result<()> {
        self.server.stop()
    }

    /// Runs one scenario of [`SCENARIOS`] on `runtime` and returns its report.
    pub fn run(&mut self, scenario: &str, runtime: &Runtime) -> Result<Report> {
        let report = match scenario {
            "pg_append_batch100" => self.append(scenario, runtime, 1, 100)?,
            "pg_append_batch100_c16" => self.append(scenario, runtime, 16, 100)?,
            "pg_append_concurrent64" => self.append(scenario, runtime, 64, 1)?,
            "pg_read_stream" => self.read_stream(scenario, runtime)?,
            "pg_scan_all" => self.scan_all(scenario, runtime)?,
            other => bail!(
                "no PostgreSQL scenario {other:?}; known: {}",
                SCENARIOS.join(", ")
            ),
        };
        Ok(self.describe(report))
    }

    /// An id generator no other appender of this server shares.
    fn ids(&mut self) -> Ids {
        self.sources += 1;
        Ids::new(self.sources)
    }

    /// What every PostgreSQL report says about the server.
    fn describe(&self, report: Report) -> Report {
        report
            .with("server", "postgresql, throwaway, loopback TCP")
            .with("postgres_version", self.server.version.as_str())
            .with(
                "postgres_settings",
                Value::Object(self.server.settings.clone()),
            )
            .with("event_bytes", EVENT_DATA_BYTES)
    }

    /// Fresh tables; `connections` connections, one appender each on its own stream,
    /// appending batches of `batch` events for the scenario's duration.
    fn append(
        &mut self,
        scenario: &str,
        runtime: &Runtime,
        connections: usize,
        batch: usize,
    ) -> Result<Report> {
        self.reads = None;
        let config = self.server.config();
        let work: Vec<(String, Ids)> = (0..connections)
            .map(|t| (format!("{scenario}-{t}"), self.ids()))
            .collect();
        let duration = timed(self.opts.quick);
        let (run, stored) = bounded(runtime, duration + SCENARIO_SLACK, async {
            let admin = connect(&config).await?;
            reset_schema(&admin).await?;
            let mut appenders = Vec::with_capacity(connections);
            for _ in 0..connections {
                appenders.push(Appender::connect(&config).await?);
            }
            let run = run_tasks(appenders.into_iter().zip(work).map(
                |(appender, (stream, ids))| append_loop(appender, stream, ids, batch, duration),
            ))
            .await?;
            let stored: i64 = admin
                .query_one("SELECT count(*) FROM events", &[])
                .await
                .context("counting the events stored")?
                .try_get(0)?;
            Ok((run, stored))
        })?;
        ensure!(
            u64::try_from(stored).ok() == Some(run.events),
            "{} events acknowledged, but the table holds {stored}",
            run.events
        );
        let report = Report::new(scenario, run.events, run.elapsed, &run.latency);
        Ok(report
            .with("connections", connections)
            .with("appenders", connections)
            .with("batch", batch)
            .with(
                "append",
                "SELECT append_events(...): one transaction (streams row upserted and \
                 locked, expected version checked, batch inserted from unnest arrays), \
                 committed with its WAL flushed",
            )
            .with("latency_per", "append call, as the client sees it"))
    }

    /// The read table, filled on first use.
    fn read_table(&mut self, runtime: &Runtime) -> Result<&ReadTable> {
        if self.reads.is_none() {
            let config = self.server.config();
            let events = self.opts.read_events;
            let stream = "pg_read-0".to_string();
            let calls = events / FILL_BATCH as u64;
            ensure!(
                calls * FILL_BATCH as u64 == events,
                "{events} events do not split into batches of {FILL_BATCH}"
            );
            let mut ids = self.ids();
            let table = bounded(runtime, SCENARIO_SLACK, async {
                let admin = connect(&config).await?;
                reset_schema(&admin).await?;
                let appender = Appender::connect(&config).await?;
                let began = Instant::now();
                for call in 0..calls {
                    let first = call * FILL_BATCH as u64;
                    let range = first..first + FILL_BATCH as u64;
                    let write = range.clone().map(|_| ids.id()).collect();
                    let types = range.map(fill_type).collect();
                    appender
                        .append(&stream, ExpectedVersion::Any, write, types)
                        .await?;
                }
                let fill_elapsed = began.elapsed();
                // Untimed, as autovacuum would sooner or later: hint bits set and statistics
                // taken, so the reads neither write nor guess.
                let vacuum = Instant::now();
                // One statement per call: VACUUM cannot run in the implicit transaction of a
                // multi-statement query.
                for sql in ["VACUUM (ANALYZE) events", "CHECKPOINT"] {
                    admin
                        .batch_execute(sql)
                        .await
                        .with_context(|| format!("{sql} after the fill"))?;
                }
                let vacuum_ms = vacuum.elapsed().as_millis() as u64;
                let row = admin
                    .query_one(
                        "SELECT count(*), min(position), max(position) FROM events",
                        &[],
                    )
                    .await
                    .context("measuring the read table")?;
                let (count, first, last): (i64, i64, i64) =
                    (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                ensure!(
                    u64::try_from(count).ok() == Some(events) && last - first + 1 == count,
                    "the fill left {count} events at positions {first}..={last}, not \
                     {events} in a row"
                );
                Ok(ReadTable {
                    stream,
                    events,
                    first_position: first,
                    fill_events_per_sec: (events as f64 / fill_elapsed.as_secs_f64()).round()
                        as u64,
                    vacuum_ms,
                })
            })?;
            self.reads = Some(table);
        }
        Ok(self.reads.as_ref().expect("filled just above"))
    }

    /// Reads the read table's stream by version, a page of [`PAGE`] at a time, checking
    /// every version and payload.
    fn read_stream(&mut self, scenario: &str, runtime: &Runtime) -> Result<Report> {
        let config = self.server.config();
        let table = self.read_table(runtime)?;
        let (stream, events) = (table.stream.clone(), table.events);
        let (run, bytes) = bounded(runtime, SCENARIO_SLACK, async {
            let client = connect(&config).await?;
            let page = client
                .prepare(READ_STREAM_SQL)
                .await
                .context("preparing the stream read")?;
            let mut timer = ReadTimer::start();
            loop {
                let from = i64::try_from(timer.events())?;
                let rows = client
                    .query(&page, &[&stream, &from, &PAGE])
                    .await
                    .with_context(|| format!("reading {stream} from version {from}"))?;
                for row in &rows {
                    let _position: i64 = row.try_get(0)?;
                    let version: i64 = row.try_get(1)?;
                    let _id: Uuid = row.try_get(2)?;
                    let _type: &str = row.try_get(3)?;
                    let data: &[u8] = row.try_get(4)?;
                    let _metadata: &[u8] = row.try_get(5)?;
                    let _created: SystemTime = row.try_get(6)?;
                    let due = timer.events();
                    ensure!(
                        u64::try_from(version).ok() == Some(due),
                        "read version {version} where {due} was due"
                    );
                    timer.event(data.len());
                }
                if (rows.len() as i64) < PAGE {
                    break;
                }
            }
            Ok(timer.finish())
        })?;
        self.read_report(scenario, &run, bytes, events)
    }

    /// Reads the whole table by position, a page of [`PAGE`] at a time, checking that the
    /// positions follow one another.
    fn scan_all(&mut self, scenario: &str, runtime: &Runtime) -> Result<Report> {
        let config = self.server.config();
        let table = self.read_table(runtime)?;
        let (first, events) = (table.first_position, table.events);
        let (run, bytes) = bounded(runtime, SCENARIO_SLACK, async {
            let client = connect(&config).await?;
            let page = client
                .prepare(SCAN_SQL)
                .await
                .context("preparing the scan")?;
            let mut timer = ReadTimer::start();
            loop {
                let from = first + i64::try_from(timer.events())?;
                let rows = client
                    .query(&page, &[&from, &PAGE])
                    .await
                    .with_context(|| format!("scanning from position {from}"))?;
                for row in &rows {
                    let position: i64 = row.try_get(0)?;
                    let _stream: &str = row.try_get(1)?;
                    let _version: i64 = row.try_get(2)?;
                    let _id: Uuid = row.try_get(3)?;
                    let _type: &str = row.try_get(4)?;
                    let data: &[u8] = row.try_get(5)?;
                    let _metadata: &[u8] = row.try_get(6)?;
                    let _created: SystemTime = row.try_get(7)?;
                    let due = first + i64::try_from(timer.events())?;
                    ensure!(
                        position == due,
                        "read position {position} where {due} was due"
                    );
                    timer.event(data.len());
                }
                if (rows.len() as i64) < PAGE {
                    break;
                }
            }
            Ok(timer.finish())
        })?;
        self.read_report(scenario, &run, bytes, events)
    }

    /// The report of a read that should have seen the read table whole.
    fn read_report(&self, scenario: &str, run: &Run, bytes: u64, events: u64) -> Result<Report> {
        let table = self.reads.as_ref().context("no read table")?;
        let report = crate::client_suite::whole_read_report(scenario, run, bytes, events)?;
        Ok(report
            .with("connections", 1)
            .with("streams", 1)
            .with("page", PAGE)
            .with("written_in_batches_of", FILL_BATCH)
            .with("fill_events_per_sec", table.fill_events_per_sec)
            .with("vacuum_analyze_ms", table.vacuum_ms)
            .with("latency_per", format!("{READ_SAMPLE_EVENTS} events read")))
    }
}

/// Runs `work` on `runtime`, failing if it takes longer than `limit`.
fn bounded<T>(
    runtime: &Runtime,
    limit: Duration,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    runtime.block_on(async {
        tokio::time::timeout(limit, work)
            .await
            .with_context(|| format!("PostgreSQL scenario: not done within {limit:?}"))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peer_scenario_has_a_quiver_counterpart_in_the_client_suite() {
        for pg in SCENARIOS {
            let (quiver, _) = COUNTERPARTS
                .iter()
                .find(|(_, p)| p == pg)
                .unwrap_or_else(|| panic!("{pg} has no counterpart"));
            assert!(crate::client_suite::SCENARIOS.contains(quiver), "{quiver}");
            assert_eq!(counterpart(quiver), Some(*pg));
        }
        assert_eq!(counterpart("subscribe_catchup"), None);
    }

    #[test]
    fn ratio_to_postgres_is_null_without_postgres() {
        let r = Report::new("s", 1_000, Duration::from_secs(1), &latency_histogram());
        let with = vs_postgres(r.clone(), Some(300), "p");
        assert_eq!(with.extra["vs_postgres"], serde_json::json!(3.33));
        assert_eq!(
            with.extra["postgres_events_per_sec"],
            serde_json::json!(300)
        );
        let without = vs_postgres(r, None, "p");
        assert!(without.extra["vs_postgres"].is_null());
        assert!(without.extra["postgres_events_per_sec"].is_null());
    }

    /// A refused append's error, as the test expects it.
    fn refused(e: anyhow::Error) -> WrongExpectedVersion {
        match e.downcast::<WrongExpectedVersion>() {
            Ok(w) => w,
            Err(e) => panic!("expected a wrong-expected-version error, got: {e:#}"),
        }
    }

    /// Starts PostgreSQL (a few seconds: initdb and start), unless it is not installed.
    /// Checks the append function's expected-version check and that concurrent appends to
    /// one stream are serialized.
    #[test]
    fn append_events_checks_the_expected_version_and_serializes_one_stream() {
        if let Err(e) = find_bindir() {
            eprintln!("skipped: {e:#}; {INSTALL_HINT}");
            return;
        }
        let base = std::env::temp_dir().join("quiver-bench-pg-test");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = Postgres::start(&base).expect("PostgreSQL starts");
        let config = server.config();
        let types = |n: usize| vec![EVENT_TYPE; n];
        let mut ids = Ids::new(7);
        let mut new_ids = |n: usize| (0..n).map(|_| ids.id()).collect::<Vec<_>>();
        runtime.block_on(async {
            let admin = connect(&config).await.unwrap();
            reset_schema(&admin).await.unwrap();
            let a = Appender::connect(&config).await.unwrap();
            let s = "order-1";
            assert_eq!(
                a.append(s, ExpectedVersion::StreamExists, new_ids(1), types(1))
                    .await
                    .map_err(refused)
                    .unwrap_err()
                    .actual,
                None
            );
            assert_eq!(
                a.append(s, ExpectedVersion::NoStream, new_ids(2), types(2))
                    .await
                    .unwrap(),
                1
            );
            let stale = a
                .append(s, ExpectedVersion::NoStream, new_ids(1), types(1))
                .await;
            assert_eq!(refused(stale.unwrap_err()).actual, Some(1));
            let stale = a
                .append(s, ExpectedVersion::Exact(0), new_ids(1), types(1))
                .await;
            let e = refused(stale.unwrap_err());
            assert_eq!((e.expected, e.actual), (ExpectedVersion::Exact(0), Some(1)));
            assert_eq!(
                a.append(s, ExpectedVersion::Exact(1), new_ids(3), types(3))
                    .await
                    .unwrap(),
                4
            );
            assert_eq!(
                a.append(s, ExpectedVersion::StreamExists, new_ids(1), types(1))
                    .await
                    .unwrap(),
                5
            );
            // The refused appends wrote nothing.
            let count: i64 = admin
                .query_one("SELECT count(*) FROM events WHERE stream = $1", &[&s])
                .await
                .unwrap()
                .get(0);
            assert_eq!(count, 6);

            // Four connections append to one stream at once, 25 appends of 2 each: every
            // append gets its own versions, and the stream ends dense.
            let mut tasks = tokio::task::JoinSet::new();
            for w in 0..4u64 {
                let appender = Appender::connect(&config).await.unwrap();
                tasks.spawn(async move {
                    let mut ids = Ids::new(100 + w);
                    let mut lasts = Vec::new();
                    for _ in 0..25 {
                        let write = vec![ids.id(), ids.id()];
                        let last = appender
                            .append("shared", ExpectedVersion::Any, write, vec![EVENT_TYPE; 2])
                            .await
                            .unwrap();
                        lasts.push(last);
                    }
                    lasts
                });
            }
            let mut lasts: Vec<u64> = tasks.join_all().await.into_iter().flatten().collect();
            lasts.sort_unstable();
            assert_eq!(lasts, (0..100).map(|i| 2 * i + 1).collect::<Vec<u64>>());
            let versions: Vec<i64> = admin
                .query(
                    "SELECT version FROM events WHERE stream = 'shared' ORDER BY version",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert_eq!(versions, (0..200).collect::<Vec<i64>>());
        });
        drop(runtime);
        let mut server = server;
        server.stop().expect("PostgreSQL stops");
    }
}
