//! The subscription workload (issue 13): subscribers that follow the list-append streams
//! while the nemesis works, and the rules their deliveries are checked by.
//!
//! [`Subscribers::start`] runs one *transient* catch-up subscriber on `$all` per node (each
//! pinned to its node, which serves it from its own committed log) and one consumer of a
//! *persistent* group on `$all` (the group runs on the leader; the consumer follows it).
//! Each resubscribes by itself after an error, for as long as it runs. Every delivery of an
//! event of a `la-` stream is kept, and written with every (re)subscription and error to
//! `subscriptions.jsonl`. [`Subscribers::finish`] waits until every subscriber has seen
//! what the healed cluster holds, stops them and checks their deliveries with
//! [`check_transient`], [`check_group`] and [`check_positions`] (pure functions).
//! docs/CONSISTENCY.md ("The subscription workload") states the rules.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use quiver_client::{
    Client, ClientConfig, Error, PersistentDefinition, Position, RecordedEvent,
    SubscribeAllOptions, SubscriptionMessage,
};
use serde_json::{json, Value};
use tokio::sync::watch;

/// Makes the configuration a subscriber connects with, asked again at every (re)connection,
/// so that it can follow the cluster's membership (a subscriber whose nodes were all removed
/// would otherwise never connect again).
pub type ConfigSource = Arc<dyn Fn() -> ClientConfig + Send + Sync>;

/// The streams the subscribers follow: the list-append workload's (`la-{key}`).
pub const STREAM_PREFIX: &str = "la-";

/// The persistent group's name.
pub const GROUP: &str = "jepsen-subscribers";

/// The name of the file of deliveries and (re)subscriptions, in the run's directory.
pub const LOG_FILE: &str = "subscriptions.jsonl";

/// Wait after an error before connecting or subscribing again.
const BACKOFF: Duration = Duration::from_millis(200);

/// How often [`Subscribers::finish`] looks whether every subscriber has caught up.
const POLL: Duration = Duration::from_millis(100);

/// How long [`Subscribers::finish`] waits for a subscriber's task to end once told to.
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// The group's unacknowledged-delivery timeout: short, so a delivery whose ack was lost
/// comes again well within a run.
const GROUP_MESSAGE_TIMEOUT_MS: u64 = 5_000;

/// The group's retries before parking: high, so that no event is parked (a parked event is
/// never delivered, and would show as `missing`) unless something is badly wrong.
const GROUP_MAX_RETRIES: u32 = 1_000;

/// What a [`Finding`] says is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// An element of the final state never delivered, and no later element of its stream
    /// was either (the subscriber stopped short of it); for a group, any element of the
    /// final state never delivered.
    Missing,
    /// An element of the final state never delivered although a later element of its stream
    /// was (transient subscribers only; a group reports every undelivered element as
    /// `missing`).
    Gap,
    /// An element delivered more than once (transient subscribers only: a group delivers
    /// at least once).
    Duplicate,
    /// An element first delivered after an element that follows it in the final state.
    OutOfOrder,
    /// An element delivered that the final state does not hold: delivered but never
    /// committed (or lost since), the worst finding.
    Garbage,
    /// A transient subscriber delivered an element at a `$all` position not above the
    /// previous element's.
    PositionOrder,
    /// Two transient subscribers delivered one element at different `$all` positions
    /// (positions follow from the log, so they are the same on every node).
    PositionMismatch,
}

impl FindingKind {
    /// The kind's name, as in the report (`missing`, `gap`, `out-of-order`, ...).
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::Missing => "missing",
            FindingKind::Gap => "gap",
            FindingKind::Duplicate => "duplicate",
            FindingKind::OutOfOrder => "out-of-order",
            FindingKind::Garbage => "garbage",
            FindingKind::PositionOrder => "position-order",
            FindingKind::PositionMismatch => "position-mismatch",
        }
    }
}

/// One thing wrong with one subscriber's deliveries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The subscriber's name (`transient-n{node}` or `group`).
    pub subscriber: String,
    /// What is wrong.
    pub kind: FindingKind,
    /// The stream.
    pub stream: String,
    /// The element it is about.
    pub element: u64,
    /// What was seen, in words.
    pub detail: String,
}

/// One subscriber's totals.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubscriberSummary {
    /// Its name: `transient-n{node}` or `group`.
    pub name: String,
    /// The node it is pinned to (`None` for the group's consumer, which follows the leader).
    pub node: Option<u64>,
    /// Deliveries of `la-` events, redeliveries included.
    pub delivered: u64,
    /// Subscriptions (or joins of the group) after the first: after an error, a closed
    /// subscription or a lost group. Resubscriptions the client makes by itself inside
    /// `Subscription::next` or `PersistentSubscription::next` are not seen, so not counted.
    pub resubscriptions: u64,
    /// Deliveries of an element delivered before (expected of a group, a `duplicate` for a
    /// transient subscriber).
    pub redeliveries: u64,
    /// Errors: connecting, subscribing, creating or joining the group, the subscription
    /// failing, acknowledgements refused.
    pub errors: u64,
    /// Whether it had delivered every element of the final state when it was stopped.
    pub complete: bool,
}

/// The verdict on the subscribers of one run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubscriptionReport {
    /// True when there is no finding.
    pub valid: bool,
    /// Elements in the final state (a run where this is 0 tested nothing).
    pub elements: u64,
    /// How long [`Subscribers::finish`] waited for the subscribers to catch up, in ms.
    pub waited_ms: u64,
    /// Each subscriber's totals.
    pub subscribers: Vec<SubscriberSummary>,
    /// Findings by kind name.
    pub finding_counts: BTreeMap<String, u64>,
    /// Every finding.
    pub findings: Vec<Finding>,
}

/// The element carried by an event of the list-append workload: `None` for another
/// stream or data that is not `{"e": ELEMENT}`.
pub fn element(event: &RecordedEvent) -> Option<u64> {
    if !event.stream.starts_with(STREAM_PREFIX) {
        return None;
    }
    serde_json::from_slice::<Value>(&event.data).ok()?["e"].as_u64()
}

/// The rules of a catch-up subscription on `$all` (see the module and
/// docs/CONSISTENCY.md): per stream, the elements delivered (in delivery order) must be the
/// final state's exactly, each once and in order. Findings: `garbage`, `duplicate`,
/// `out-of-order`, `gap`, `missing`.
pub fn check_transient(
    name: &str,
    delivered: &[(String, u64)],
    final_state: &BTreeMap<String, Vec<u64>>,
) -> Vec<Finding> {
    check(name, delivered, final_state, false)
}

/// The rules of a persistent group (at least once; see the module and
/// docs/CONSISTENCY.md): every element of the final state delivered at least once
/// (`missing`), nothing outside it (`garbage`), and per stream the first deliveries in the
/// final order (`out-of-order`). Redeliveries are not findings (see [`redeliveries`]).
pub fn check_group(
    name: &str,
    delivered: &[(String, u64)],
    final_state: &BTreeMap<String, Vec<u64>>,
) -> Vec<Finding> {
    check(name, delivered, final_state, true)
}

/// Deliveries of an element delivered before.
pub fn redeliveries(delivered: &[(String, u64)]) -> u64 {
    let distinct: HashSet<(&str, u64)> = delivered.iter().map(|(s, e)| (s.as_str(), *e)).collect();
    (delivered.len() - distinct.len()) as u64
}

fn check(
    name: &str,
    delivered: &[(String, u64)],
    final_state: &BTreeMap<String, Vec<u64>>,
    at_least_once: bool,
) -> Vec<Finding> {
    let finding = |kind, stream: &str, element, detail: String| Finding {
        subscriber: name.to_string(),
        kind,
        stream: stream.to_string(),
        element,
        detail,
    };
    let mut by_stream: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (stream, e) in delivered {
        by_stream.entry(stream.as_str()).or_default().push(*e);
    }
    let empty = Vec::new();
    let mut out = Vec::new();
    for stream in final_state.keys() {
        by_stream.entry(stream.as_str()).or_default();
    }
    for (stream, seq) in &by_stream {
        let final_list = final_state.get(*stream).unwrap_or(&empty);
        // Each element's (first) place in the final order.
        let mut index: HashMap<u64, usize> = HashMap::new();
        for (i, e) in final_list.iter().enumerate() {
            index.entry(*e).or_insert(i);
        }
        // How often each element may be delivered: as often as the final state holds it
        // (once: the workload never appends an element twice; a final state that repeats
        // one is the list-append checker's `duplicate-elements`).
        let mut owed: HashMap<u64, usize> = HashMap::new();
        for e in final_list {
            *owed.entry(*e).or_default() += 1;
        }
        // Deliveries per element, in order of first delivery.
        let mut count: HashMap<u64, usize> = HashMap::new();
        let mut firsts = Vec::new();
        for e in seq {
            let n = count.entry(*e).or_default();
            if *n == 0 {
                firsts.push(*e);
            }
            *n += 1;
        }
        for e in &firsts {
            let n = count[e];
            match owed.get(e) {
                None => {
                    let times = if n == 1 {
                        "once".to_string()
                    } else {
                        format!("{n} times")
                    };
                    let detail = format!(
                        "{e} was delivered ({times}) but the final state of {stream} ({} elements) does not hold it",
                        final_list.len()
                    );
                    out.push(finding(FindingKind::Garbage, stream, *e, detail));
                }
                Some(&m) if n > m && !at_least_once => {
                    let detail = format!("{e} was delivered {n} times");
                    out.push(finding(FindingKind::Duplicate, stream, *e, detail));
                }
                Some(_) => {}
            }
        }
        // First deliveries of final elements must follow the final order.
        let mut last: Option<(u64, usize)> = None;
        for e in &firsts {
            let Some(&i) = index.get(e) else { continue };
            match last {
                Some((prev, j)) if i < j => {
                    let detail = format!(
                        "{e} (at {i} in the final state) was first delivered after {prev} (at {j})"
                    );
                    out.push(finding(FindingKind::OutOfOrder, stream, *e, detail));
                }
                _ => last = Some((*e, i)),
            }
        }
        // Final elements never delivered.
        let furthest = seq.iter().filter_map(|e| index.get(e)).max().copied();
        for (i, e) in final_list.iter().enumerate() {
            if count.contains_key(e) {
                continue;
            }
            let (kind, detail) = match furthest {
                Some(f) if f > i => (
                    if at_least_once {
                        FindingKind::Missing
                    } else {
                        FindingKind::Gap
                    },
                    format!(
                        "{e} (at {i} in the final state) was never delivered, though {} (at {f}) was",
                        final_list[f]
                    ),
                ),
                _ => (
                    FindingKind::Missing,
                    format!(
                        "{e} (at {i} in the final state) was never delivered, nor anything after it"
                    ),
                ),
            };
            out.push(finding(kind, stream, *e, detail));
        }
    }
    out
}

/// A delivery with its `$all` position: `(stream, element, position)`.
pub type Positioned = (String, u64, u64);

/// Position rules for transient subscribers, each given as its name and its deliveries
/// `(stream, element, position)` in delivery order: along one subscriber, the first
/// delivery of each element must come at a higher `$all` position than the one before it
/// (`position-order`; repeated deliveries are `duplicate`s, left to [`check_transient`]);
/// and every subscriber must deliver an element at the same position
/// (`position-mismatch`, reported on the later subscriber in the order given).
pub fn check_positions(subscribers: &[(String, Vec<Positioned>)]) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut at: HashMap<(&str, u64), (u64, &str)> = HashMap::new();
    for (name, deliveries) in subscribers {
        let mut seen: HashSet<(&str, u64)> = HashSet::new();
        let mut previous: Option<(&str, u64, u64)> = None;
        for (stream, e, position) in deliveries {
            if !seen.insert((stream.as_str(), *e)) {
                continue;
            }
            if let Some((ps, pe, pp)) = previous {
                if *position <= pp {
                    out.push(Finding {
                        subscriber: name.clone(),
                        kind: FindingKind::PositionOrder,
                        stream: stream.clone(),
                        element: *e,
                        detail: format!(
                            "{e} was delivered at position {position}, after {pe} of {ps} at {pp}"
                        ),
                    });
                }
            }
            previous = Some((stream.as_str(), *e, *position));
            match at.get(&(stream.as_str(), *e)) {
                Some((p, other)) if p != position => out.push(Finding {
                    subscriber: name.clone(),
                    kind: FindingKind::PositionMismatch,
                    stream: stream.clone(),
                    element: *e,
                    detail: format!(
                        "{e} was delivered at position {position}, but at {p} to {other}"
                    ),
                }),
                Some(_) => {}
                None => {
                    at.insert((stream.as_str(), *e), (*position, name.as_str()));
                }
            }
        }
    }
    out
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `subscriptions.jsonl`: one JSON object per line. Deliveries are buffered; a
/// (re)subscription or an error flushes the file, so it can be followed during a run.
struct Log(Mutex<std::io::BufWriter<std::fs::File>>);

impl Log {
    fn write(&self, mut line: Value) {
        line["wall_ms"] = json!(wall_ms());
        let _ = writeln!(lock(&self.0), "{line}");
    }

    fn flush(&self) {
        let _ = lock(&self.0).flush();
    }
}

/// What one subscriber has done so far.
#[derive(Default)]
struct Tally {
    /// `(stream, element, position)` in delivery order.
    deliveries: Vec<Positioned>,
    subscriptions: u64,
    errors: u64,
}

/// One subscriber: its name, node, kind and tally, shared with its task.
struct Subscriber {
    name: String,
    node: Option<u64>,
    group: bool,
    tally: Mutex<Tally>,
    log: Arc<Log>,
}

impl Subscriber {
    fn deliver(&self, event: &RecordedEvent, retry_count: Option<u32>) {
        let Some(e) = element(event) else {
            self.log.write(json!({
                "type": "skipped", "subscriber": self.name, "node": self.node,
                "stream": event.stream, "position": event.position,
            }));
            return;
        };
        let mut line = json!({
            "type": "delivery", "subscriber": self.name, "node": self.node,
            "stream": event.stream, "element": e, "position": event.position,
        });
        if let Some(r) = retry_count {
            line["retry_count"] = json!(r);
        }
        self.log.write(line);
        lock(&self.tally)
            .deliveries
            .push((event.stream.clone(), e, event.position.get()));
    }

    fn subscribed(&self, from: Option<Position>) {
        lock(&self.tally).subscriptions += 1;
        self.log.write(json!({
            "type": "subscribe", "subscriber": self.name, "node": self.node, "from": from,
        }));
        self.log.flush();
    }

    fn error(&self, during: &str, e: &dyn std::fmt::Display) {
        lock(&self.tally).errors += 1;
        self.log.write(json!({
            "type": "error", "subscriber": self.name, "node": self.node,
            "during": during, "error": e.to_string(),
        }));
        self.log.flush();
    }

    fn note(&self, what: &str) {
        self.log.write(json!({
            "type": what, "subscriber": self.name, "node": self.node,
        }));
    }

    /// Whether every element of `final_state` has been delivered.
    fn complete(&self, final_state: &BTreeMap<String, Vec<u64>>) -> bool {
        let tally = lock(&self.tally);
        let got: HashSet<(&str, u64)> = tally
            .deliveries
            .iter()
            .map(|(s, e, _)| (s.as_str(), *e))
            .collect();
        final_state
            .iter()
            .all(|(s, es)| es.iter().all(|e| got.contains(&(s.as_str(), *e))))
    }
}

/// Waits for `halt` to turn true (or its sender to go).
async fn halted(halt: &mut watch::Receiver<bool>) {
    let _ = halt.wait_for(|h| *h).await;
}

/// Sleeps [`BACKOFF`]; false when halted meanwhile.
async fn backoff(halt: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = halted(halt) => false,
        _ = tokio::time::sleep(BACKOFF) => true,
    }
}

/// A transient catch-up subscriber on `$all`, pinned to one node, until halted.
/// Why [`connect`] gave no client.
enum NoClient {
    /// It failed (logged, backed off): try again.
    Again,
    /// The subscribers are halted.
    Halted,
}

/// Connects through `config` of now; a failure is logged and backed off from.
async fn connect(
    sub: &Subscriber,
    config: &ConfigSource,
    halt: &mut watch::Receiver<bool>,
) -> Result<Client, NoClient> {
    let client = tokio::select! {
        _ = halted(halt) => return Err(NoClient::Halted),
        c = Client::connect(config()) => c,
    };
    match client {
        Ok(c) => Ok(c),
        Err(e) => {
            sub.error("connect", &e);
            if backoff(halt).await {
                Err(NoClient::Again)
            } else {
                Err(NoClient::Halted)
            }
        }
    }
}

/// How long a subscriber waits on `next()` before it starts again (the workload writes all
/// the time, so a silence this long means its node is gone).
const STALL: Duration = Duration::from_secs(10);

async fn transient(sub: Arc<Subscriber>, config: ConfigSource, mut halt: watch::Receiver<bool>) {
    // Resume point: just past the last event delivered.
    let mut from: Option<Position> = None;
    'run: while !*halt.borrow() {
        let client = match connect(&sub, &config, &mut halt).await {
            Ok(c) => c,
            Err(NoClient::Again) => continue,
            Err(NoClient::Halted) => break 'run,
        };
        let mut options = SubscribeAllOptions::default().stream_prefix(STREAM_PREFIX);
        if let Some(at) = from {
            options = options.from(at);
        }
        let subscription = tokio::select! {
            _ = halted(&mut halt) => break 'run,
            s = client.subscribe_all(options) => s,
        };
        let mut subscription = match subscription {
            Ok(s) => s,
            Err(e) => {
                sub.error("subscribe", &e);
                if backoff(&mut halt).await {
                    continue;
                }
                break;
            }
        };
        sub.subscribed(from);
        loop {
            let message = tokio::select! {
                _ = halted(&mut halt) => break 'run,
                m = tokio::time::timeout(STALL, subscription.next()) => m,
            };
            let Ok(message) = message else {
                // The client resubscribes by itself and follows the membership, but learns
                // it only from a node it can reach: if every node it knows left between two
                // of its refreshes, it waits on. Start again from the members of now.
                sub.note("stalled: reconnecting to the members of now");
                break;
            };
            match message {
                Ok(Some(SubscriptionMessage::Event(event))) => {
                    from = Some(event.position.next());
                    sub.deliver(&event, None);
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    sub.note("ended");
                    break;
                }
                Err(e) => {
                    sub.error("next", &e);
                    break;
                }
            }
        }
        drop(subscription);
        if !backoff(&mut halt).await {
            break;
        }
    }
}

/// The persistent group's consumer: creates the group (an existing one is fine), joins it,
/// acknowledges every delivery; after an error joins again, until halted.
async fn group(sub: Arc<Subscriber>, config: ConfigSource, mut halt: watch::Receiver<bool>) {
    let definition = PersistentDefinition::all(GROUP)
        .stream_prefix(STREAM_PREFIX)
        .message_timeout_ms(GROUP_MESSAGE_TIMEOUT_MS)
        .max_retries(GROUP_MAX_RETRIES);
    let mut created = false;
    'run: while !*halt.borrow() {
        let client = match connect(&sub, &config, &mut halt).await {
            Ok(c) => c,
            Err(NoClient::Again) => continue,
            Err(NoClient::Halted) => break 'run,
        };
        if !created {
            let made = tokio::select! {
                _ = halted(&mut halt) => break 'run,
                r = client.create_persistent(&definition) => r,
            };
            match made {
                Ok(()) => sub.note("group-created"),
                Err(Error::AlreadyExists(_)) => sub.note("group-exists"),
                Err(e) => {
                    // Its outcome may be unknown: the next try may find it exists.
                    sub.error("create", &e);
                    if backoff(&mut halt).await {
                        continue;
                    }
                    break;
                }
            }
            created = true;
        }
        let joined = tokio::select! {
            _ = halted(&mut halt) => break 'run,
            r = client.connect_persistent(GROUP) => r,
        };
        let mut consumer = match joined {
            Ok(c) => c,
            Err(e) => {
                if matches!(e, Error::NotFound(_)) {
                    created = false;
                }
                sub.error("join", &e);
                if backoff(&mut halt).await {
                    continue;
                }
                break;
            }
        };
        sub.subscribed(None);
        loop {
            let next = tokio::select! {
                _ = halted(&mut halt) => break 'run,
                d = tokio::time::timeout(STALL, consumer.next()) => d,
            };
            let Ok(next) = next else {
                // As for a transient subscriber: a consumer whose every known node left at
                // once waits on. Join again through the members of now.
                sub.note("stalled: joining again through the members of now");
                break;
            };
            match next {
                Ok(Some(delivery)) => {
                    sub.deliver(&delivery.event, Some(delivery.retry_count));
                    // A lost ack is fine: the group delivers the event again.
                    if let Err(e) = consumer.ack(&[delivery.event.position]).await {
                        sub.error("ack", &e);
                    }
                }
                Ok(None) => {
                    sub.note("group-gone");
                    created = false;
                    break;
                }
                Err(e) => {
                    sub.error("next", &e);
                    break;
                }
            }
        }
        consumer.close();
        if !backoff(&mut halt).await {
            break;
        }
    }
}

/// The running subscribers of one run: one transient subscriber per node and one consumer
/// of a persistent group. Stopped by [`Subscribers::finish`] (or when dropped).
pub struct Subscribers {
    subscribers: Vec<Arc<Subscriber>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    halt: Arc<watch::Sender<bool>>,
    log: Arc<Log>,
}

impl Subscribers {
    /// Starts the subscribers: for each `(node id, config)` of `per_node` a transient
    /// subscriber on `$all` from the beginning through that config (the caller lists the
    /// node first: a pinned subscriber of a node later removed from the cluster could never
    /// catch up, so it may move on to the others); and a consumer of the persistent group [`GROUP`] (created on `$all`
    /// from the beginning, for `la-` streams) through `any_node`, which should name every
    /// node so that the consumer can follow the leader. Deliveries and (re)subscriptions go
    /// to `out/subscriptions.jsonl`.
    ///
    /// The subscribers run until [`Subscribers::finish`], or until `stop` turns true. Do not
    /// pass the workload's stop signal as `stop`: the subscribers must go on through healing
    /// until `finish` has seen them catch up; `stop` is for abandoning a run. Must be called
    /// inside a tokio runtime.
    pub async fn start(
        per_node: Vec<(u64, ConfigSource)>,
        any_node: ConfigSource,
        out: &Path,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Subscribers> {
        std::fs::create_dir_all(out).with_context(|| format!("{}", out.display()))?;
        let path = out.join(LOG_FILE);
        let file = std::fs::File::create(&path).with_context(|| format!("{}", path.display()))?;
        let log = Arc::new(Log(Mutex::new(std::io::BufWriter::new(file))));
        let (halt, halted_rx) = watch::channel(false);
        let halt = Arc::new(halt);
        let mut subscribers = Vec::new();
        let mut tasks = Vec::new();
        let new = |name: String, node, group| {
            Arc::new(Subscriber {
                name,
                node,
                group,
                tally: Mutex::new(Tally::default()),
                log: log.clone(),
            })
        };
        for (node, config) in per_node {
            let sub = new(format!("transient-n{node}"), Some(node), false);
            tasks.push(tokio::spawn(transient(
                sub.clone(),
                config,
                halted_rx.clone(),
            )));
            subscribers.push(sub);
        }
        let sub = new("group".to_string(), None, true);
        tasks.push(tokio::spawn(group(
            sub.clone(),
            any_node,
            halted_rx.clone(),
        )));
        subscribers.push(sub);
        // The caller's stop halts every subscriber (a stop whose sender is gone does not).
        let forward = halt.clone();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                r = stop.wait_for(|s| *s) => if r.is_ok() {
                    forward.send_replace(true);
                },
                _ = forward.closed() => {}
            }
        }));
        Ok(Subscribers {
            subscribers,
            tasks,
            halt,
            log,
        })
    }

    /// Each subscriber's name and deliveries so far (for progress lines).
    pub fn progress(&self) -> Vec<(String, u64)> {
        self.subscribers
            .iter()
            .map(|s| (s.name.clone(), lock(&s.tally).deliveries.len() as u64))
            .collect()
    }

    /// Waits (up to `limit`, polling) until every subscriber has delivered every element of
    /// `final_state` (stream name → elements in log order, as the healed cluster holds
    /// them), stops the subscribers, and checks their deliveries: [`check_transient`] and
    /// [`check_positions`] for the transient subscribers, [`check_group`] for the group's.
    pub async fn finish(
        mut self,
        final_state: &BTreeMap<String, Vec<u64>>,
        limit: Duration,
    ) -> SubscriptionReport {
        let started = Instant::now();
        while started.elapsed() < limit && !self.subscribers.iter().all(|s| s.complete(final_state))
        {
            tokio::time::sleep(POLL).await;
        }
        let waited_ms = started.elapsed().as_millis() as u64;
        self.halt.send_replace(true);
        for task in std::mem::take(&mut self.tasks) {
            let abort = task.abort_handle();
            if tokio::time::timeout(STOP_LIMIT, task).await.is_err() {
                abort.abort();
            }
        }
        self.log.flush();
        let mut findings = Vec::new();
        let mut summaries = Vec::new();
        let mut positions = Vec::new();
        for sub in &self.subscribers {
            let tally = lock(&sub.tally);
            let delivered: Vec<(String, u64)> = tally
                .deliveries
                .iter()
                .map(|(s, e, _)| (s.clone(), *e))
                .collect();
            if sub.group {
                findings.extend(check_group(&sub.name, &delivered, final_state));
            } else {
                findings.extend(check_transient(&sub.name, &delivered, final_state));
                positions.push((sub.name.clone(), tally.deliveries.clone()));
            }
            summaries.push(SubscriberSummary {
                name: sub.name.clone(),
                node: sub.node,
                delivered: delivered.len() as u64,
                resubscriptions: tally.subscriptions.saturating_sub(1),
                redeliveries: redeliveries(&delivered),
                errors: tally.errors,
                complete: false,
            });
        }
        for (summary, sub) in summaries.iter_mut().zip(&self.subscribers) {
            summary.complete = sub.complete(final_state);
        }
        findings.extend(check_positions(&positions));
        let mut finding_counts = BTreeMap::new();
        for f in &findings {
            *finding_counts.entry(f.kind.name().to_string()).or_insert(0) += 1;
        }
        SubscriptionReport {
            valid: findings.is_empty(),
            elements: final_state.values().map(|v| v.len() as u64).sum(),
            waited_ms,
            subscribers: summaries,
            finding_counts,
            findings,
        }
    }
}

impl Drop for Subscribers {
    fn drop(&mut self) {
        self.halt.send_replace(true);
        self.log.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(streams: &[(&str, &[u64])]) -> BTreeMap<String, Vec<u64>> {
        streams
            .iter()
            .map(|(s, es)| (s.to_string(), es.to_vec()))
            .collect()
    }

    fn seq(items: &[(&str, u64)]) -> Vec<(String, u64)> {
        items.iter().map(|(s, e)| (s.to_string(), *e)).collect()
    }

    /// The findings as (kind, stream, element), sorted.
    fn kinds(findings: &[Finding]) -> Vec<(FindingKind, String, u64)> {
        let mut k: Vec<_> = findings
            .iter()
            .map(|f| (f.kind, f.stream.clone(), f.element))
            .collect();
        k.sort();
        k
    }

    fn one(kind: FindingKind, stream: &str, e: u64) -> Vec<(FindingKind, String, u64)> {
        vec![(kind, stream.to_string(), e)]
    }

    fn final_state() -> BTreeMap<String, Vec<u64>> {
        state(&[("la-0", &[1, 3, 5]), ("la-1", &[2, 4]), ("la-2", &[])])
    }

    #[test]
    fn clean_deliveries_have_no_finding() {
        let f = final_state();
        // Streams interleaved in any way, each in its order.
        let d = seq(&[
            ("la-1", 2),
            ("la-0", 1),
            ("la-0", 3),
            ("la-1", 4),
            ("la-0", 5),
        ]);
        assert_eq!(check_transient("t", &d, &f), vec![]);
        assert_eq!(check_group("g", &d, &f), vec![]);
        assert_eq!(redeliveries(&d), 0);
        // Nothing final, nothing delivered.
        assert_eq!(check_transient("t", &[], &state(&[("la-9", &[])])), vec![]);
    }

    #[test]
    fn a_group_may_deliver_again() {
        let f = final_state();
        // After a failover the new leader delivers again from its checkpoint.
        let d = seq(&[
            ("la-0", 1),
            ("la-1", 2),
            ("la-0", 3),
            ("la-0", 1),
            ("la-1", 2),
            ("la-0", 3),
            ("la-1", 4),
            ("la-0", 5),
            ("la-0", 5),
        ]);
        assert_eq!(check_group("g", &d, &f), vec![]);
        assert_eq!(redeliveries(&d), 4);
        // The same deliveries from a transient subscriber: four duplicates.
        let t = check_transient("t", &d, &f);
        assert_eq!(
            kinds(&t),
            vec![
                (FindingKind::Duplicate, "la-0".into(), 1),
                (FindingKind::Duplicate, "la-0".into(), 3),
                (FindingKind::Duplicate, "la-0".into(), 5),
                (FindingKind::Duplicate, "la-1".into(), 2),
            ]
        );
        assert_eq!(t[0].subscriber, "t");
    }

    #[test]
    fn an_undelivered_element_is_a_gap_when_a_later_one_came() {
        let f = final_state();
        let d = seq(&[("la-0", 1), ("la-0", 5), ("la-1", 2), ("la-1", 4)]);
        let t = check_transient("t", &d, &f);
        assert_eq!(kinds(&t), one(FindingKind::Gap, "la-0", 3));
        assert!(t[0].detail.contains("though 5"), "{}", t[0].detail);
        // A group calls it missing.
        let g = check_group("g", &d, &f);
        assert_eq!(kinds(&g), one(FindingKind::Missing, "la-0", 3));
    }

    #[test]
    fn an_undelivered_tail_is_missing() {
        let f = final_state();
        let d = seq(&[("la-0", 1), ("la-0", 3), ("la-1", 2)]);
        let expected = vec![
            (FindingKind::Missing, "la-0".to_string(), 5),
            (FindingKind::Missing, "la-1".to_string(), 4),
        ];
        assert_eq!(kinds(&check_transient("t", &d, &f)), expected);
        assert_eq!(kinds(&check_group("g", &d, &f)), expected);
        // A stream never delivered at all: every element missing.
        let d = seq(&[("la-1", 2), ("la-1", 4)]);
        assert_eq!(
            kinds(&check_transient("t", &d, &f)),
            vec![
                (FindingKind::Missing, "la-0".to_string(), 1),
                (FindingKind::Missing, "la-0".to_string(), 3),
                (FindingKind::Missing, "la-0".to_string(), 5),
            ]
        );
    }

    #[test]
    fn swapped_elements_are_out_of_order() {
        let f = final_state();
        let d = seq(&[
            ("la-0", 3),
            ("la-0", 1),
            ("la-0", 5),
            ("la-1", 2),
            ("la-1", 4),
        ]);
        let t = check_transient("t", &d, &f);
        assert_eq!(kinds(&t), one(FindingKind::OutOfOrder, "la-0", 1));
        // For a group too, when the first deliveries are swapped...
        let g = check_group("g", &d, &f);
        assert_eq!(kinds(&g), one(FindingKind::OutOfOrder, "la-0", 1));
        // ... but not when only a redelivery comes after a later element.
        let d = seq(&[
            ("la-0", 1),
            ("la-0", 3),
            ("la-0", 1),
            ("la-0", 5),
            ("la-1", 2),
            ("la-1", 4),
        ]);
        assert_eq!(check_group("g", &d, &f), vec![]);
    }

    #[test]
    fn an_element_outside_the_final_state_is_garbage() {
        let f = final_state();
        let d = seq(&[
            ("la-0", 1),
            ("la-0", 3),
            ("la-0", 99),
            ("la-0", 5),
            ("la-1", 2),
            ("la-1", 4),
            // A stream the final state does not know at all.
            ("la-7", 7),
        ]);
        let expected = vec![
            (FindingKind::Garbage, "la-0".to_string(), 99),
            (FindingKind::Garbage, "la-7".to_string(), 7),
        ];
        assert_eq!(kinds(&check_transient("t", &d, &f)), expected);
        assert_eq!(kinds(&check_group("g", &d, &f)), expected);
        // An element of another stream's final state is garbage in this one.
        let d = seq(&[
            ("la-0", 1),
            ("la-0", 3),
            ("la-0", 5),
            ("la-1", 2),
            ("la-1", 4),
        ]);
        let mut moved = d.clone();
        moved[4] = ("la-0".to_string(), 4);
        let t = check_transient("t", &moved, &f);
        assert_eq!(
            kinds(&t),
            vec![
                (FindingKind::Missing, "la-1".to_string(), 4),
                (FindingKind::Garbage, "la-0".to_string(), 4),
            ]
        );
    }

    #[test]
    fn positions_must_rise_and_agree() {
        let ok = |s: &str, e, p| (s.to_string(), e, p);
        let a = vec![ok("la-0", 1, 10), ok("la-1", 2, 11), ok("la-0", 3, 14)];
        let b = vec![ok("la-0", 1, 10), ok("la-0", 3, 14)];
        let clean = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
        assert_eq!(check_positions(&clean), vec![]);
        // A duplicate is left to check_transient.
        let mut dup = a.clone();
        dup.push(ok("la-0", 1, 10));
        assert_eq!(check_positions(&[("a".to_string(), dup)]), vec![]);
        // Falling back.
        let back = vec![ok("la-0", 1, 10), ok("la-0", 3, 9)];
        let f = check_positions(&[("a".to_string(), back)]);
        assert_eq!(kinds(&f), one(FindingKind::PositionOrder, "la-0", 3));
        // Another position on another node.
        let moved = vec![ok("la-0", 1, 10), ok("la-0", 3, 15)];
        let f = check_positions(&[("a".to_string(), a), ("b".to_string(), moved)]);
        assert_eq!(kinds(&f), one(FindingKind::PositionMismatch, "la-0", 3));
        assert_eq!(f[0].subscriber, "b");
    }

    #[test]
    fn element_reads_only_workload_events() {
        let event = |stream: &str, data: &str| RecordedEvent {
            stream: stream.to_string(),
            version: Default::default(),
            position: Default::default(),
            id: Default::default(),
            event_type: "appended".to_string(),
            json: true,
            data: data.as_bytes().to_vec().into(),
            metadata: Default::default(),
            created_us: 0,
        };
        assert_eq!(element(&event("la-3", r#"{"e":42}"#)), Some(42));
        assert_eq!(element(&event("other", r#"{"e":42}"#)), None);
        assert_eq!(element(&event("la-3", r#"{"e":"x"}"#)), None);
        assert_eq!(element(&event("la-3", "not json")), None);
    }
}
