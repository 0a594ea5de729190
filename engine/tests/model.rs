//! Model-based property test: random sequences of appends (every expected-version kind,
//! multi-stream, retries with the same event ids), soft and hard deletes, metadata
//! (max count, truncate-before), stream and `$all` reads with filters, scavenges, clean
//! reopens and simulated crashes (a torn tail after the last acknowledged record) run against
//! the real engine with tiny segments, and against a small in-memory model of the contract.
//! After every operation its outcome (`Ok` values or the error and its fields) and the whole
//! readable state (`$all`, every stream, stream infos) must match the model exactly.
//!
//! One thing the model cannot know is which invisible events a scavenge really dropped (it
//! only rewrites sealed, summarized segments, and summaries are written in the background),
//! so it never guesses: retries of events a scavenge may have dropped are skipped, and
//! metadata is never relaxed below what a scavenge may have dropped. A run must cover a
//! fixed list of outcomes (`MUST_COVER`), so a weakened generator fails loudly.
//!
//! Engine bugs this test found have a minimal regression test each at the end of the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;
use quiver_engine::format::{
    parse_record, record_header, EntryKind, RecordParse, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use quiver_engine::*;

const STREAMS: [&str; 3] = ["order-1", "order-2", "user-1"];
const TYPES: [&str; 3] = ["Created", "Updated", "Closed"];
const SEGMENT_BYTES: u64 = 8 * 1024;

fn config() -> EngineConfig {
    EngineConfig::default().segment_bytes_max(SEGMENT_BYTES)
}

// ---------------------------------------------------------------------------------------
// Operations

/// An expected version, resolved against the model when the operation runs.
#[derive(Debug, Clone, Copy)]
enum Exp {
    Any,
    NoStream,
    StreamExists,
    /// `Exact(last version)` (or `Exact(0)` for a stream without events).
    ExactRight,
    /// `Exact(last version + delta)`, clamped at 0; right only for delta 0.
    ExactOff(i8),
}

#[derive(Debug, Clone)]
struct EvSpec {
    ty: usize,
    len: usize,
    seed: u8,
    binary: bool,
    meta_len: usize,
}

#[derive(Debug, Clone, Copy)]
enum FromSpec {
    Start,
    End,
    /// Taken modulo (bound + 3), so it sometimes points past the end.
    At(u16),
}

#[derive(Debug, Clone, Copy)]
enum Tail {
    Zeros(usize),
    Random(usize, u8),
    /// A record frame for the next index cut after this many bytes (modulo its length).
    PartialFrame {
        body_len: usize,
        cut: usize,
    },
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: usize,
        exp: Exp,
        events: Vec<EvSpec>,
    },
    AppendMulti {
        writes: Vec<(usize, Exp, Vec<EvSpec>)>,
        /// Name the first stream twice (an invalid request).
        duplicate: bool,
    },
    /// Resends an earlier append request, with the same ids.
    Retry(Index),
    /// Resends an earlier single-stream request with one new event before or after its own.
    RetryWithExtra {
        pick: Index,
        trailing: bool,
        extra: EvSpec,
    },
    Delete {
        stream: usize,
        exp: Exp,
        hard: bool,
    },
    SetMetadata {
        stream: usize,
        max_count: Option<u64>,
        truncate_before: Option<u16>,
        custom_len: usize,
    },
    ReadStream {
        stream: usize,
        from: FromSpec,
        backward: bool,
        max: u64,
    },
    ReadAll {
        from: FromSpec,
        backward: bool,
        max: u64,
        stream_filter: Option<usize>,
        type_filter: Option<usize>,
    },
    Scavenge,
    Reopen,
    Crash(Tail),
}

fn exp_strategy() -> impl Strategy<Value = Exp> {
    prop_oneof![
        3 => Just(Exp::Any),
        2 => Just(Exp::NoStream),
        1 => Just(Exp::StreamExists),
        3 => Just(Exp::ExactRight),
        2 => (-2i8..=2).prop_map(Exp::ExactOff),
    ]
}

fn ev_strategy() -> impl Strategy<Value = EvSpec> {
    (
        0..TYPES.len(),
        0..700usize,
        any::<u8>(),
        any::<bool>(),
        0..24usize,
    )
        .prop_map(|(ty, len, seed, binary, meta_len)| EvSpec {
            ty,
            len,
            seed,
            binary,
            meta_len,
        })
}

fn events_strategy() -> impl Strategy<Value = Vec<EvSpec>> {
    prop::collection::vec(ev_strategy(), 1..6)
}

fn from_strategy() -> impl Strategy<Value = FromSpec> {
    prop_oneof![
        1 => Just(FromSpec::Start),
        1 => Just(FromSpec::End),
        2 => any::<u16>().prop_map(FromSpec::At),
    ]
}

fn max_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![0..12u64, Just(u64::MAX)]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let stream = 0..STREAMS.len();
    prop_oneof![
        10 => (stream.clone(), exp_strategy(), events_strategy())
            .prop_map(|(stream, exp, events)| Op::Append { stream, exp, events }),
        3 => (
            prop::sample::subsequence(vec![0usize, 1, 2], 2..=3).prop_shuffle(),
            prop::collection::vec((exp_strategy(), events_strategy()), 3),
            prop::bool::weighted(0.1),
        )
            .prop_map(|(streams, specs, duplicate)| Op::AppendMulti {
                writes: streams
                    .into_iter()
                    .zip(specs)
                    .map(|(s, (e, evs))| (s, e, evs))
                    .collect(),
                duplicate,
            }),
        3 => any::<Index>().prop_map(Op::Retry),
        1 => (any::<Index>(), any::<bool>(), ev_strategy())
            .prop_map(|(pick, trailing, extra)| Op::RetryWithExtra { pick, trailing, extra }),
        2 => (stream.clone(), exp_strategy(), prop::bool::weighted(0.3))
            .prop_map(|(stream, exp, hard)| Op::Delete { stream, exp, hard }),
        2 => (
            stream.clone(),
            prop::option::of(0..5u64),
            prop::option::of(any::<u16>()),
            0..8usize,
        )
            .prop_map(|(stream, max_count, truncate_before, custom_len)| Op::SetMetadata {
                stream,
                max_count,
                truncate_before,
                custom_len,
            }),
        4 => (stream.clone(), from_strategy(), any::<bool>(), max_strategy())
            .prop_map(|(stream, from, backward, max)| Op::ReadStream {
                stream,
                from,
                backward,
                max
            }),
        3 => (
            from_strategy(),
            any::<bool>(),
            max_strategy(),
            prop::option::of(0..STREAM_FILTERS.len()),
            prop::option::of(0..TYPE_FILTERS.len()),
        )
            .prop_map(|(from, backward, max, stream_filter, type_filter)| Op::ReadAll {
                from,
                backward,
                max,
                stream_filter,
                type_filter,
            }),
        2 => Just(Op::Scavenge),
        1 => Just(Op::Reopen),
        2 => prop_oneof![
            (1..5000usize).prop_map(Tail::Zeros),
            (1..5000usize, any::<u8>()).prop_map(|(n, s)| Tail::Random(n, s)),
            (1..2000usize, any::<usize>())
                .prop_map(|(body_len, cut)| Tail::PartialFrame { body_len, cut }),
        ]
        .prop_map(Op::Crash),
    ]
}

/// Stream-name filters for `$all` reads: the engine's matcher and the model's test.
const STREAM_FILTERS: [(&str, bool); 4] = [
    ("order-", false),
    ("user-1", false),
    ("nope", false),
    ("-1$", true),
];
/// Event-type filters for `$all` reads.
const TYPE_FILTERS: [(&str, bool); 3] = [("C", false), ("Updated", false), ("^(Closed|U)", true)];

fn engine_matcher((pattern, regex): (&str, bool)) -> Matcher {
    if regex {
        Matcher::regex(pattern).expect("valid pattern")
    } else {
        Matcher::Prefix(pattern.to_string())
    }
}

/// The model's own reading of each filter (independent of the engine's matcher).
fn stream_filter_passes(i: usize, name: &str) -> bool {
    match i {
        0 => name.starts_with("order-"),
        1 => name.starts_with("user-1"),
        2 => name.starts_with("nope"),
        _ => name.ends_with("-1"),
    }
}

fn type_filter_passes(i: usize, ty: &str) -> bool {
    match i {
        0 => ty.starts_with('C'),
        1 => ty.starts_with("Updated"),
        _ => ty.starts_with("Closed") || ty.starts_with('U'),
    }
}

// ---------------------------------------------------------------------------------------
// The model

#[derive(Debug, Clone)]
struct MEvent {
    stream: usize,
    version: u64,
    position: u64,
    /// Raft index of the entry that holds it.
    index: u64,
    id: Uuid,
    event_type: String,
    content_type: ContentType,
    data: Bytes,
    metadata: Bytes,
    /// Learned from the first read that returns it; must never change afterwards.
    created_us: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct MStream {
    /// The engine knows the stream (an append, delete or metadata change named it).
    touched: bool,
    /// Version the next event gets.
    next_version: u64,
    hard: bool,
    /// `next_version` at the last soft delete.
    soft_before: Option<u64>,
    metadata: StreamMetadata,
    /// Versions below this may have been dropped by a scavenge (they were invisible then).
    scavenge_floor: u64,
}

impl MStream {
    fn exists(&self) -> bool {
        !self.hard && self.next_version > self.soft_before.unwrap_or(0)
    }

    /// Lowest visible version.
    fn visible_from(&self) -> u64 {
        let mut from = self
            .soft_before
            .unwrap_or(0)
            .max(self.metadata.truncate_before.unwrap_or(0));
        if let Some(max) = self.metadata.max_count {
            from = from.max(self.next_version.saturating_sub(max));
        }
        from
    }

    fn visible(&self, version: u64) -> bool {
        !self.hard && version >= self.visible_from()
    }

    /// (current version, delete kind) as `stream_info` must report them, or `None`.
    fn info(&self) -> Option<(Option<u64>, Option<DeleteKind>)> {
        if !self.touched {
            return None;
        }
        if self.hard {
            return Some((None, Some(DeleteKind::Hard)));
        }
        if self.soft_before.is_some_and(|b| self.next_version <= b) {
            return Some((None, Some(DeleteKind::Soft)));
        }
        if self.next_version == 0 {
            return None;
        }
        Some((Some(self.next_version - 1), None))
    }
}

/// What an operation returned, in a form both sides produce.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Appended(AppendResult),
    Index(u64),
    WrongExpectedVersion {
        stream: String,
        expected: ExpectedVersion,
        actual: Option<u64>,
    },
    AppendStreamDeleted(String),
    IdempotencyMismatch(String),
    InvalidRequest,
    ReadNotFound(String),
    ReadDeleted(String),
    /// (stream, version, position) of each event returned, in order.
    Events(Vec<(String, u64, u64)>),
    /// An operation without a comparable value (scavenge, reopen, crash), and what it did.
    Done(&'static str),
    /// Not run, and why.
    Skipped(&'static str),
}

fn append_outcome(r: Result<AppendResult, AppendError>) -> Outcome {
    match r {
        Ok(r) => Outcome::Appended(r),
        Err(e) => append_error(e),
    }
}

fn index_outcome(r: Result<u64, AppendError>) -> Outcome {
    match r {
        Ok(i) => Outcome::Index(i),
        Err(e) => append_error(e),
    }
}

fn append_error(e: AppendError) -> Outcome {
    match e {
        AppendError::WrongExpectedVersion {
            stream,
            expected,
            actual,
        } => Outcome::WrongExpectedVersion {
            stream,
            expected,
            actual,
        },
        AppendError::StreamDeleted(s) => Outcome::AppendStreamDeleted(s),
        AppendError::IdempotencyMismatch(s) => Outcome::IdempotencyMismatch(s),
        AppendError::InvalidRequest(_) => Outcome::InvalidRequest,
        other => panic!("unexpected append error: {other:?}"),
    }
}

#[derive(Debug, Default)]
struct Model {
    streams: [MStream; 3],
    /// Every event ever acknowledged, by position.
    all: Vec<MEvent>,
    ids: HashMap<Uuid, usize>,
    next_index: u64,
}

/// An append request as sent (kept for retries).
#[derive(Debug, Clone)]
struct Request {
    writes: Vec<(usize, ExpectedVersion, Vec<EventData>)>,
}

impl Request {
    /// Streams, expected versions and event ids (the payloads are too long to print).
    fn describe(&self) -> String {
        let writes: Vec<String> = self
            .writes
            .iter()
            .map(|(s, exp, evs)| {
                let ids: Vec<u128> = evs.iter().map(|e| e.id.as_u128() & 0xFFFF_FFFF).collect();
                format!("{} {exp:?} ids {ids:?}", STREAMS[*s])
            })
            .collect();
        writes.join("; ")
    }
}

impl Model {
    fn new() -> Model {
        Model {
            next_index: 1,
            ..Model::default()
        }
    }

    fn resolve(&self, stream: usize, exp: Exp) -> ExpectedVersion {
        let last = self.streams[stream].next_version as i64 - 1;
        match exp {
            Exp::Any => ExpectedVersion::Any,
            Exp::NoStream => ExpectedVersion::NoStream,
            Exp::StreamExists => ExpectedVersion::StreamExists,
            Exp::ExactRight => ExpectedVersion::Exact(last.max(0) as u64),
            Exp::ExactOff(d) => ExpectedVersion::Exact((last + d as i64).max(0) as u64),
        }
    }

    /// The contract's expected-version check.
    fn check(&self, stream: usize, expected: ExpectedVersion) -> Result<(), Outcome> {
        let s = &self.streams[stream];
        let name = STREAMS[stream].to_string();
        if s.hard {
            return Err(Outcome::AppendStreamDeleted(name));
        }
        let last = s.next_version.checked_sub(1);
        let ok = match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => !s.exists(),
            ExpectedVersion::StreamExists => s.exists(),
            // Versions continue after a soft delete, so the last version still counts.
            ExpectedVersion::Exact(v) => last == Some(v),
        };
        if ok {
            return Ok(());
        }
        Err(Outcome::WrongExpectedVersion {
            stream: name,
            expected,
            actual: if s.exists() { last } else { None },
        })
    }

    /// Whether a scavenge may have dropped this stored event (so the engine may have
    /// forgotten its id).
    fn maybe_scavenged(&self, id: &Uuid) -> bool {
        self.ids.get(id).is_some_and(|&p| {
            let e = &self.all[p];
            e.version < self.streams[e.stream].scavenge_floor
        })
    }

    fn append(&mut self, req: &Request) -> Outcome {
        let mut seen = Vec::new();
        for (s, _, _) in &req.writes {
            if seen.contains(s) {
                return Outcome::InvalidRequest;
            }
            seen.push(*s);
        }
        // Idempotency: every id of a write already stored, consecutively, in its stream.
        let mut found_writes = 0;
        let mut retry: Option<AppendResult> = None;
        for (s, _, events) in &req.writes {
            let found: Vec<Option<usize>> = events
                .iter()
                .map(|e| self.ids.get(&e.id).copied())
                .collect();
            if found.iter().all(Option::is_none) {
                continue;
            }
            let mismatch = || Outcome::IdempotencyMismatch(STREAMS[*s].to_string());
            let Some(Some(first)) = found.first().copied() else {
                return mismatch();
            };
            let f = &self.all[first];
            for (k, p) in found.iter().enumerate() {
                let Some(p) = p else { return mismatch() };
                let e = &self.all[*p];
                if e.stream != *s || e.version != f.version + k as u64 {
                    return mismatch();
                }
            }
            let last = &self.all[found.last().copied().flatten().expect("all found")];
            found_writes += 1;
            retry = Some(match retry {
                None => AppendResult {
                    next_expected_version: last.version,
                    position_first: f.position,
                    position_last: last.position,
                    index: f.index,
                    idempotent: true,
                },
                Some(r) => AppendResult {
                    next_expected_version: last.version,
                    position_first: r.position_first.min(f.position),
                    position_last: r.position_last.max(last.position),
                    ..r
                },
            });
        }
        if found_writes == req.writes.len() {
            return Outcome::Appended(retry.expect("at least one write"));
        }
        if found_writes > 0 {
            return Outcome::IdempotencyMismatch(STREAMS[req.writes[0].0].to_string());
        }
        for (s, exp, _) in &req.writes {
            if let Err(o) = self.check(*s, *exp) {
                return o;
            }
        }
        let index = self.next_index;
        self.next_index += 1;
        let position_first = self.all.len() as u64;
        let mut last_version = 0;
        for (s, _, events) in &req.writes {
            let st = &mut self.streams[*s];
            st.touched = true;
            for e in events {
                let version = st.next_version;
                st.next_version += 1;
                last_version = version;
                self.ids.insert(e.id, self.all.len());
                self.all.push(MEvent {
                    stream: *s,
                    version,
                    position: self.all.len() as u64,
                    index,
                    id: e.id,
                    event_type: e.event_type.clone(),
                    content_type: e.content_type,
                    data: e.data.clone(),
                    metadata: e.metadata.clone(),
                    created_us: None,
                });
            }
        }
        Outcome::Appended(AppendResult {
            next_expected_version: last_version,
            position_first,
            position_last: self.all.len() as u64 - 1,
            index,
            idempotent: false,
        })
    }

    fn delete(&mut self, stream: usize, expected: ExpectedVersion, kind: DeleteKind) -> Outcome {
        if let Err(o) = self.check(stream, expected) {
            return o;
        }
        let s = &mut self.streams[stream];
        s.touched = true;
        match kind {
            DeleteKind::Hard => s.hard = true,
            DeleteKind::Soft => s.soft_before = Some(s.next_version),
        }
        self.next_index += 1;
        Outcome::Index(self.next_index - 1)
    }

    fn set_metadata(&mut self, stream: usize, metadata: StreamMetadata) -> Outcome {
        if let Err(o) = self.check(stream, ExpectedVersion::Any) {
            return o;
        }
        let s = &mut self.streams[stream];
        s.touched = true;
        s.metadata = metadata;
        self.next_index += 1;
        Outcome::Index(self.next_index - 1)
    }

    fn scavenge(&mut self) {
        for s in &mut self.streams {
            let cut = if s.hard {
                s.next_version
            } else {
                s.visible_from().min(s.next_version)
            };
            s.scavenge_floor = s.scavenge_floor.max(cut);
        }
    }

    fn read_stream(&self, stream: usize, from: ReadFrom, dir: Direction, max: u64) -> Outcome {
        let s = &self.streams[stream];
        let name = STREAMS[stream].to_string();
        if !s.touched {
            return Outcome::ReadNotFound(name);
        }
        if s.hard {
            return Outcome::ReadDeleted(name);
        }
        let next = s.next_version;
        if next == 0 || next <= s.soft_before.unwrap_or(0) {
            return Outcome::ReadNotFound(name);
        }
        let lo = s.visible_from();
        let versions: Vec<u64> = match dir {
            Direction::Forward => {
                let start = match from {
                    ReadFrom::Start => 0,
                    ReadFrom::End => next,
                    ReadFrom::At(v) => v,
                };
                (start.max(lo)..next).take(clamp(max)).collect()
            }
            Direction::Backward => {
                let start = match from {
                    ReadFrom::Start => 0,
                    ReadFrom::End => next - 1,
                    ReadFrom::At(v) => v.min(next - 1),
                };
                if start < lo {
                    Vec::new()
                } else {
                    (lo..=start).rev().take(clamp(max)).collect()
                }
            }
        };
        let events = self.all.iter().filter(|e| e.stream == stream);
        let by_version: HashMap<u64, &MEvent> = events.map(|e| (e.version, e)).collect();
        Outcome::Events(
            versions
                .into_iter()
                .map(|v| (name.clone(), v, by_version[&v].position))
                .collect(),
        )
    }

    fn read_all(
        &self,
        from: ReadFrom,
        dir: Direction,
        max: u64,
        stream_filter: Option<usize>,
        type_filter: Option<usize>,
    ) -> Outcome {
        let passes = |e: &&MEvent| {
            self.streams[e.stream].visible(e.version)
                && stream_filter.is_none_or(|f| stream_filter_passes(f, STREAMS[e.stream]))
                && type_filter.is_none_or(|f| type_filter_passes(f, &e.event_type))
        };
        let commit = self.all.len() as u64;
        let picked: Vec<&MEvent> = match dir {
            Direction::Forward => {
                let start = match from {
                    ReadFrom::Start => 0,
                    ReadFrom::End => commit,
                    ReadFrom::At(p) => p,
                };
                let from = start.min(commit) as usize;
                self.all[from..]
                    .iter()
                    .filter(passes)
                    .take(clamp(max))
                    .collect()
            }
            Direction::Backward if commit == 0 => Vec::new(),
            Direction::Backward => {
                let start = match from {
                    ReadFrom::Start => 0,
                    ReadFrom::End => commit - 1,
                    ReadFrom::At(p) => p.min(commit - 1),
                };
                self.all[..=start as usize]
                    .iter()
                    .rev()
                    .filter(passes)
                    .take(clamp(max))
                    .collect()
            }
        };
        Outcome::Events(
            picked
                .into_iter()
                .map(|e| (STREAMS[e.stream].to_string(), e.version, e.position))
                .collect(),
        )
    }
}

fn clamp(max: u64) -> usize {
    usize::try_from(max).unwrap_or(usize::MAX)
}

// ---------------------------------------------------------------------------------------
// Running a case

struct Harness {
    dir: tempfile::TempDir,
    engine: Option<Engine>,
    model: Model,
    requests: Vec<Request>,
    next_id: u128,
}

fn event_data(id: Uuid, spec: &EvSpec) -> EventData {
    let data: Vec<u8> = (0..spec.len)
        .map(|i| spec.seed.wrapping_add((i as u8).wrapping_mul(31)))
        .collect();
    let metadata: Vec<u8> = (0..spec.meta_len).map(|i| spec.seed ^ (i as u8)).collect();
    EventData {
        id,
        event_type: TYPES[spec.ty].to_string(),
        content_type: if spec.binary {
            ContentType::Binary
        } else {
            ContentType::Json
        },
        data: data.into(),
        metadata: metadata.into(),
    }
}

/// Offset just past the last whole record of a segment file.
fn log_end(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let mut at = SEGMENT_HEADER_BYTES;
    while let RecordParse::Ok { body, .. } = parse_record(&bytes[at.min(bytes.len())..]) {
        at += RECORD_HEADER_BYTES + body.len();
    }
    at as u64
}

fn last_segment(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "qseg"))
        .max()
}

/// Bytes of a record frame (header then body) for the next index: what a crash in the
/// middle of writing it could leave behind, once cut.
fn frame_bytes(index: u64, position: u64, body: &[u8]) -> Vec<u8> {
    let h = record_header(EntryKind::Membership, index, 1, position, 0, body);
    let mut out = Vec::with_capacity(40 + body.len());
    out.extend_from_slice(&h.len.get().to_le_bytes());
    out.extend_from_slice(&h.crc.get().to_le_bytes());
    out.extend_from_slice(&h.index.get().to_le_bytes());
    out.extend_from_slice(&h.term.get().to_le_bytes());
    out.extend_from_slice(&h.position.get().to_le_bytes());
    out.extend_from_slice(&h.count.get().to_le_bytes());
    out.push(h.kind);
    out.extend_from_slice(&h.durable_lag);
    out.extend_from_slice(body);
    out
}

fn pseudo_random(n: usize, seed: u8) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ seed as u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), config()).unwrap();
        Harness {
            dir,
            engine: Some(engine),
            model: Model::new(),
            requests: Vec::new(),
            next_id: 1,
        }
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("open")
    }

    fn fresh_event(&mut self, spec: &EvSpec) -> EventData {
        let id = Uuid::from_u128(0x5157_0000_0000_0000_0000_0000_0000_0000 | self.next_id);
        self.next_id += 1;
        event_data(id, spec)
    }

    fn send(&mut self, req: &Request) -> Outcome {
        let writes: Vec<StreamWrite> = req
            .writes
            .iter()
            .map(|(s, expected, events)| StreamWrite {
                stream: STREAMS[*s].to_string(),
                expected: *expected,
                events: events.clone(),
            })
            .collect();
        let got = append_outcome(self.engine().append_multi(writes));
        let want = self.model.append(req);
        assert_eq!(got, want, "append {}", req.describe());
        got
    }

    /// A retry's outcome depends on what a scavenge dropped, which the model does not know.
    fn retry_is_predictable(&self, req: &Request) -> bool {
        req.writes
            .iter()
            .flat_map(|(_, _, evs)| evs)
            .all(|e| !self.model.maybe_scavenged(&e.id))
    }

    fn run(&mut self, op: &Op) -> Outcome {
        match op {
            Op::Append {
                stream,
                exp,
                events,
            } => {
                let expected = self.model.resolve(*stream, *exp);
                let events = events.iter().map(|s| self.fresh_event(s)).collect();
                let req = Request {
                    writes: vec![(*stream, expected, events)],
                };
                self.requests.push(req.clone());
                self.send(&req)
            }
            Op::AppendMulti { writes, duplicate } => {
                let mut ws = Vec::new();
                for (s, exp, specs) in writes {
                    let expected = self.model.resolve(*s, *exp);
                    let events = specs.iter().map(|sp| self.fresh_event(sp)).collect();
                    ws.push((*s, expected, events));
                }
                if *duplicate {
                    let (s, e, _) = ws[0].clone();
                    let events = vec![self.fresh_event(&writes[0].2[0])];
                    ws.push((s, e, events));
                }
                let req = Request { writes: ws };
                self.requests.push(req.clone());
                self.send(&req)
            }
            Op::Retry(pick) => {
                if self.requests.is_empty() {
                    return Outcome::Skipped("nothing to retry");
                }
                let req = self.requests[pick.index(self.requests.len())].clone();
                if !self.retry_is_predictable(&req) {
                    return Outcome::Skipped("retry of possibly scavenged events");
                }
                let before = self.model.all.len();
                let out = self.send(&req);
                if let Outcome::Appended(r) = &out {
                    // An idempotent answer writes nothing.
                    assert_eq!(r.idempotent, self.model.all.len() == before);
                }
                out
            }
            Op::RetryWithExtra {
                pick,
                trailing,
                extra,
            } => {
                let singles: Vec<Request> = self
                    .requests
                    .iter()
                    .filter(|r| r.writes.len() == 1)
                    .cloned()
                    .collect();
                if singles.is_empty() {
                    return Outcome::Skipped("nothing to retry");
                }
                let mut req = singles[pick.index(singles.len())].clone();
                if !self.retry_is_predictable(&req) {
                    return Outcome::Skipped("retry of possibly scavenged events");
                }
                let extra = self.fresh_event(extra);
                let events = &mut req.writes[0].2;
                if *trailing {
                    events.push(extra);
                } else {
                    events.insert(0, extra);
                }
                self.send(&req)
            }
            Op::Delete { stream, exp, hard } => {
                let expected = self.model.resolve(*stream, *exp);
                let kind = if *hard {
                    DeleteKind::Hard
                } else {
                    DeleteKind::Soft
                };
                let got = index_outcome(self.engine().delete_stream(
                    STREAMS[*stream],
                    expected,
                    kind,
                ));
                let want = self.model.delete(*stream, expected, kind);
                assert_eq!(got, want, "delete {kind:?} {expected:?}");
                got
            }
            Op::SetMetadata {
                stream,
                max_count,
                truncate_before,
                custom_len,
            } => {
                let s = &self.model.streams[*stream];
                let mut metadata = StreamMetadata {
                    max_count: *max_count,
                    max_age_us: None,
                    truncate_before: truncate_before.map(|t| t as u64 % (s.next_version + 3)),
                    custom: pseudo_random(*custom_len, *custom_len as u8).into(),
                };
                // Widening visibility below what a scavenge may already have dropped has no
                // single right answer (dropped events stay gone, others come back), so the
                // model keeps metadata at or above the scavenge floor. See
                // `relaxed_metadata_after_scavenge_*` for how the engine behaves there.
                let mut trial = s.clone();
                trial.metadata = metadata.clone();
                if trial.visible_from() < s.scavenge_floor {
                    let tb = metadata.truncate_before.unwrap_or(0).max(s.scavenge_floor);
                    metadata.truncate_before = Some(tb);
                }
                let got = index_outcome(
                    self.engine()
                        .set_metadata(STREAMS[*stream], metadata.clone()),
                );
                let want = self.model.set_metadata(*stream, metadata);
                assert_eq!(got, want, "set_metadata");
                got
            }
            Op::ReadStream {
                stream,
                from,
                backward,
                max,
            } => {
                let bound = self.model.streams[*stream].next_version;
                let from = resolve_from(*from, bound);
                let dir = direction(*backward);
                let got = self.read_stream_checked(*stream, from, dir, *max);
                let want = self.model.read_stream(*stream, from, dir, *max);
                assert_eq!(got, want, "read_stream {from:?} {dir:?} max {max}");
                got
            }
            Op::ReadAll {
                from,
                backward,
                max,
                stream_filter,
                type_filter,
            } => {
                let from = resolve_from(*from, self.model.all.len() as u64);
                let dir = direction(*backward);
                let got = self.read_all_checked(from, dir, *max, *stream_filter, *type_filter);
                let want = self
                    .model
                    .read_all(from, dir, *max, *stream_filter, *type_filter);
                assert_eq!(
                    got, want,
                    "read_all {from:?} {dir:?} max {max} filters {stream_filter:?} {type_filter:?}"
                );
                got
            }
            Op::Scavenge => {
                let stats = self.engine().scavenge().expect("scavenge");
                assert!(stats.segments_rewritten <= stats.segments_scanned);
                let invisible = self
                    .model
                    .all
                    .iter()
                    .filter(|e| !self.model.streams[e.stream].visible(e.version))
                    .count() as u64;
                assert!(
                    stats.events_removed <= invisible,
                    "{stats:?} removed more than the {invisible} invisible events"
                );
                self.model.scavenge();
                Outcome::Done(if stats.events_removed > 0 {
                    "events removed"
                } else {
                    "nothing removed"
                })
            }
            Op::Reopen => {
                drop(self.engine.take());
                let engine = Engine::open(self.dir.path(), config()).expect("reopen");
                assert_eq!(
                    engine.open_stats().torn_bytes_cut,
                    0,
                    "a clean close tears nothing"
                );
                self.engine = Some(engine);
                Outcome::Done("reopened")
            }
            Op::Crash(tail) => {
                drop(self.engine.take());
                let tail_bytes = match *tail {
                    Tail::Zeros(n) => vec![0u8; n],
                    Tail::Random(n, seed) => pseudo_random(n, seed),
                    Tail::PartialFrame { body_len, cut } => {
                        let body = pseudo_random(body_len, body_len as u8);
                        let index = self.model.next_index;
                        let frame = frame_bytes(index, self.model.all.len() as u64, &body);
                        frame[..1 + cut % (frame.len() - 1)].to_vec()
                    }
                };
                let Some(seg) = last_segment(self.dir.path()) else {
                    let engine = Engine::open(self.dir.path(), config()).expect("reopen");
                    self.engine = Some(engine);
                    return Outcome::Done("no segment yet");
                };
                // A crash can only tear, garble or zero bytes after the last acknowledged
                // record (every acknowledgement follows an fdatasync): write the tail there,
                // over whatever follows it (nothing, or a pre-zeroed segment's zeros).
                let end = log_end(&seg);
                {
                    use std::os::unix::fs::FileExt;
                    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
                    f.write_all_at(&tail_bytes, end).unwrap();
                    f.sync_all().unwrap();
                }
                let file_len = std::fs::metadata(&seg).unwrap().len();
                let before = std::fs::read(&seg).unwrap()[..end as usize].to_vec();
                let engine = Engine::open(self.dir.path(), config()).expect("reopen after crash");
                let cut = engine.open_stats().torn_bytes_cut;
                let zeros = tail_bytes.iter().all(|b| *b == 0);
                if zeros {
                    // Zeros are space never written: the engine may leave them or cut them,
                    // but never anything before them.
                    assert!(cut == 0 || cut == file_len - end, "zero tail: cut {cut}");
                } else {
                    assert_eq!(cut, file_len - end, "the torn tail ({tail:?}) is cut whole");
                }
                let after = std::fs::read(&seg).unwrap();
                assert!(after.len() as u64 >= end, "nothing before the tail is cut");
                assert!(
                    after[..end as usize] == before[..],
                    "bytes before the tail unchanged"
                );
                self.engine = Some(engine);
                Outcome::Done(if zeros { "zero tail" } else { "torn tail cut" })
            }
        }
    }

    /// Checks every event's content against the model and returns (stream, version, position).
    fn check_events(&mut self, events: Vec<RecordedEvent>) -> Vec<(String, u64, u64)> {
        let mut out = Vec::new();
        for e in events {
            let Some(m) = self.model.all.get_mut(e.position as usize) else {
                panic!("read an event at unknown position {}: {e:?}", e.position);
            };
            assert_eq!(&*e.stream, STREAMS[m.stream], "stream at {}", e.position);
            assert_eq!(e.version, m.version, "version at {}", e.position);
            assert_eq!(e.id, m.id, "id at {}", e.position);
            assert_eq!(e.event_type(), m.event_type, "type at {}", e.position);
            assert_eq!(
                e.content_type, m.content_type,
                "content type at {}",
                e.position
            );
            assert_eq!(e.data, m.data, "data at {}", e.position);
            assert_eq!(e.metadata, m.metadata, "metadata at {}", e.position);
            match m.created_us {
                None => m.created_us = Some(e.created_us),
                Some(c) => assert_eq!(e.created_us, c, "created_us changed at {}", e.position),
            }
            out.push((e.stream.to_string(), e.version, e.position));
        }
        out
    }

    fn read_stream_checked(
        &mut self,
        stream: usize,
        from: ReadFrom,
        dir: Direction,
        max: u64,
    ) -> Outcome {
        match self.engine().read_stream(STREAMS[stream], from, dir, max) {
            Ok(r) => {
                let events: Vec<RecordedEvent> = r.map(|e| e.expect("read")).collect();
                Outcome::Events(self.check_events(events))
            }
            Err(ReadError::StreamNotFound(s)) => Outcome::ReadNotFound(s),
            Err(ReadError::StreamDeleted(s)) => Outcome::ReadDeleted(s),
            Err(e) => panic!("read_stream: {e}"),
        }
    }

    fn read_all_checked(
        &mut self,
        from: ReadFrom,
        dir: Direction,
        max: u64,
        stream_filter: Option<usize>,
        type_filter: Option<usize>,
    ) -> Outcome {
        let filter = AllFilter {
            stream: stream_filter.map(|i| engine_matcher(STREAM_FILTERS[i])),
            event_type: type_filter.map(|i| engine_matcher(TYPE_FILTERS[i])),
        };
        let events: Vec<RecordedEvent> = self
            .engine()
            .read_all(from, dir, max, filter)
            .map(|e| e.expect("read $all"))
            .collect();
        Outcome::Events(self.check_events(events))
    }

    /// Everything a reader can see: `$all` both ways, each stream, infos and the listing.
    fn check_everything(&mut self) {
        let commit = self.engine().commit_position();
        assert_eq!(commit, self.model.all.len() as u64, "commit position");
        for dir in [Direction::Forward, Direction::Backward] {
            let from = if dir == Direction::Forward {
                ReadFrom::Start
            } else {
                ReadFrom::End
            };
            let got = self.read_all_checked(from, dir, u64::MAX, None, None);
            let want = self.model.read_all(from, dir, u64::MAX, None, None);
            assert_eq!(got, want, "$all {dir:?}");
        }
        let mut listed_want = Vec::new();
        for (i, name) in STREAMS.iter().enumerate() {
            let got = self.read_stream_checked(i, ReadFrom::Start, Direction::Forward, u64::MAX);
            let want = self
                .model
                .read_stream(i, ReadFrom::Start, Direction::Forward, u64::MAX);
            assert_eq!(got, want, "stream {name}");
            let info = self.engine().stream_info(name);
            let s = &self.model.streams[i];
            match s.info() {
                None => assert!(info.is_none(), "{name}: {info:?}"),
                Some((current_version, deleted)) => {
                    let info = info.unwrap_or_else(|| panic!("{name}: no info"));
                    assert_eq!(&*info.name, *name);
                    assert_eq!(info.current_version, current_version, "{name} version");
                    assert_eq!(info.deleted, deleted, "{name} deleted");
                    assert_eq!(info.metadata, s.metadata, "{name} metadata");
                    listed_want.push(name.to_string());
                }
            }
        }
        listed_want.sort();
        let listed: Vec<String> = self
            .engine()
            .list_streams("", None, 100)
            .into_iter()
            .map(|i| i.name.to_string())
            .collect();
        assert_eq!(listed, listed_want, "list_streams");
    }
}

fn resolve_from(from: FromSpec, bound: u64) -> ReadFrom {
    match from {
        FromSpec::Start => ReadFrom::Start,
        FromSpec::End => ReadFrom::End,
        FromSpec::At(x) => ReadFrom::At(x as u64 % (bound + 3)),
    }
}

fn direction(backward: bool) -> Direction {
    if backward {
        Direction::Backward
    } else {
        Direction::Forward
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// A short name for what an operation did, to count how much of the contract a run covered.
fn coverage_key(op: &Op, out: &Outcome) -> String {
    let op = format!("{op:?}");
    let op = op.split([' ', '(', '{']).next().unwrap_or("");
    let out = match out {
        Outcome::Appended(r) if r.idempotent => "idempotent".to_string(),
        Outcome::Appended(_) => "written".to_string(),
        Outcome::Index(_) => "ok".to_string(),
        Outcome::WrongExpectedVersion { .. } => "wrong expected version".to_string(),
        Outcome::AppendStreamDeleted(_) => "stream deleted".to_string(),
        Outcome::IdempotencyMismatch(_) => "idempotency mismatch".to_string(),
        Outcome::InvalidRequest => "invalid request".to_string(),
        Outcome::ReadNotFound(_) => "not found".to_string(),
        Outcome::ReadDeleted(_) => "deleted".to_string(),
        Outcome::Events(e) if e.is_empty() => "no events".to_string(),
        Outcome::Events(_) => "events".to_string(),
        Outcome::Done(what) => what.to_string(),
        Outcome::Skipped(why) => format!("skipped: {why}"),
    };
    format!("{op}: {out}")
}

/// Outcomes every full run must have produced at least once, or the generator is too weak.
const MUST_COVER: &[&str] = &[
    "Append: written",
    "Append: wrong expected version",
    "Append: stream deleted",
    "AppendMulti: written",
    "AppendMulti: wrong expected version",
    "AppendMulti: invalid request",
    "Retry: idempotent",
    "Retry: written",
    "RetryWithExtra: idempotency mismatch",
    "Delete: ok",
    "Delete: wrong expected version",
    "SetMetadata: ok",
    "ReadStream: events",
    "ReadStream: no events",
    "ReadStream: not found",
    "ReadStream: deleted",
    "ReadAll: events",
    "ReadAll: no events",
    "Scavenge: events removed",
    "Reopen: reopened",
    "Crash: torn tail cut",
];

/// The default seed of [`engine_matches_model`]'s runs.
const MODEL_SEED: u64 = 0x5175_6976_6572;

#[test]
fn engine_matches_model() {
    let mut config = ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    // The same runs every time, so the coverage check below cannot fail by luck (it did:
    // "no run covered Retry: written", once in a while); PROPTEST_RNG_SEED=N explores others.
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = proptest::test_runner::RngSeed::Fixed(MODEL_SEED);
    }
    let coverage = std::sync::Mutex::new(std::collections::BTreeMap::<String, u64>::new());
    let strategy = prop::collection::vec(op_strategy(), 20..60);
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&strategy, |ops| {
        let mut h = Harness::new();
        for op in &ops {
            let out = h.run(op);
            *coverage
                .lock()
                .unwrap()
                .entry(coverage_key(op, &out))
                .or_default() += 1;
            h.check_everything();
        }
        // And once more from disk.
        h.run(&Op::Reopen);
        h.check_everything();
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let coverage = coverage.into_inner().unwrap();
    eprintln!("coverage: {coverage:#?}");
    if cases() >= 64 {
        for key in MUST_COVER {
            assert!(coverage.contains_key(*key), "no run covered {key:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Regression tests for engine bugs this model found.

/// Closes and reopens: a clean close writes every due segment summary, and a scavenge only
/// rewrites summarized segments (otherwise summaries are written in the background).
fn reopen(e: Engine, dir: &Path) -> Engine {
    drop(e);
    Engine::open(dir, config()).unwrap()
}

fn ev(ty: &str, len: usize) -> EventData {
    EventData::json(ty, vec![b'x'; len])
}

/// Found by this model: `find_retry` used to panic (`expect("checked above")`) when a retry
/// resent a stream's newest events plus one new id at the end. Must be a typed mismatch.
#[test]
fn retry_with_a_trailing_new_event_is_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), config()).unwrap();
    let a = ev("A", 10);
    e.append("s", ExpectedVersion::Any, vec![a.clone()])
        .unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        e.append("s", ExpectedVersion::Any, vec![a, ev("B", 10)])
    }));
    match r {
        Ok(Err(AppendError::IdempotencyMismatch(s))) => assert_eq!(s, "s"),
        Ok(other) => panic!("expected IdempotencyMismatch, got {other:?}"),
        Err(_) => panic!("the engine panicked on a retry with one extra trailing event"),
    }
    // Nothing was written by the refused retry.
    assert_eq!(e.commit_position(), 1);
}

/// A soft-deleted stream whose events were all scavenged keeps its versions across a reopen
/// (the delete record carries the next version).
#[test]
fn soft_deleted_stream_keeps_its_version_after_scavenge_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), config()).unwrap();
    e.append(
        "s",
        ExpectedVersion::Any,
        vec![ev("A", 10), ev("A", 10), ev("A", 10)],
    )
    .unwrap();
    e.delete_stream("s", ExpectedVersion::Any, DeleteKind::Soft)
        .unwrap();
    // Roll a few segments so the one holding "s" is sealed and summarized.
    for _ in 0..6 {
        e.append("other", ExpectedVersion::Any, vec![ev("A", 3000)])
            .unwrap();
    }
    let e = reopen(e, dir.path());
    let stats = e.scavenge().unwrap();
    assert!(stats.events_removed > 0, "the scavenge rewrote: {stats:?}");
    drop(e);
    let e = Engine::open(dir.path(), config()).unwrap();
    let r = e
        .append("s", ExpectedVersion::NoStream, vec![ev("A", 1)])
        .unwrap();
    assert_eq!(
        r.next_expected_version, 3,
        "versions continue after a soft delete"
    );
}

/// Was a bug: a scavenge that dropped every event of a stream hidden by truncate-before (or
/// max count 0) left only its metadata record; on reopen the stream's next version is rebuilt
/// from the events that remain (none), so the stream vanishes from `stream_info`,
/// `Exact(last)` fails and the next append reuses version 0.
#[test]
fn fully_scavenged_stream_keeps_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), config()).unwrap();
    e.append(
        "s",
        ExpectedVersion::Any,
        vec![ev("A", 10), ev("A", 10), ev("A", 10)],
    )
    .unwrap();
    let hide_all = StreamMetadata {
        truncate_before: Some(3),
        ..StreamMetadata::default()
    };
    e.set_metadata("s", hide_all).unwrap();
    for _ in 0..6 {
        e.append("other", ExpectedVersion::Any, vec![ev("A", 3000)])
            .unwrap();
    }
    let e = reopen(e, dir.path());
    let stats = e.scavenge().unwrap();
    assert!(stats.events_removed > 0, "the scavenge rewrote: {stats:?}");
    let before = e.stream_info("s").map(|i| i.current_version);
    assert_eq!(before, Some(Some(2)));
    drop(e);
    let e = Engine::open(dir.path(), config()).unwrap();
    let after = e.stream_info("s").map(|i| i.current_version);
    assert_eq!(after, before, "stream_info changed across a reopen");
    let r = e.append("s", ExpectedVersion::Exact(2), vec![ev("A", 1)]);
    assert!(
        matches!(&r, Ok(r) if r.next_expected_version == 3),
        "versions must continue after scavenge + reopen: {r:?}"
    );
}

/// Was a bug: a scavenge trimmed the in-memory stream index below the visible-from version
/// even for
/// events it did not remove (here: nothing was sealed, so nothing was rewritten). If the
/// metadata is then relaxed, `read_stream` hides those events while `$all` shows them, and a
/// reopen (which rebuilds the index from disk) shows them in `read_stream` too.
#[test]
fn relaxed_metadata_after_scavenge_keeps_reads_in_agreement() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), config()).unwrap();
    e.append(
        "s",
        ExpectedVersion::Any,
        vec![ev("A", 10), ev("A", 10), ev("A", 10)],
    )
    .unwrap();
    let tb = StreamMetadata {
        truncate_before: Some(2),
        ..StreamMetadata::default()
    };
    e.set_metadata("s", tb).unwrap();
    let stats = e.scavenge().unwrap();
    assert_eq!(
        stats.events_removed, 0,
        "nothing is sealed: nothing to rewrite"
    );
    e.set_metadata("s", StreamMetadata::default()).unwrap();
    let stream: Vec<u64> = e
        .read_stream("s", ReadFrom::Start, Direction::Forward, 100)
        .unwrap()
        .map(|x| x.unwrap().version)
        .collect();
    let all: Vec<u64> = e
        .read_all(
            ReadFrom::Start,
            Direction::Forward,
            100,
            AllFilter::default(),
        )
        .map(|x| x.unwrap().version)
        .collect();
    drop(e);
    let e = Engine::open(dir.path(), config()).unwrap();
    let reopened: Vec<u64> = e
        .read_stream("s", ReadFrom::Start, Direction::Forward, 100)
        .unwrap()
        .map(|x| x.unwrap().version)
        .collect();
    assert_eq!(all, reopened, "$all and a reopened store agree");
    assert_eq!(
        stream, all,
        "read_stream and $all disagree on the same committed state"
    );
}
