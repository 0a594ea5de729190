//! Persistent subscriptions: named server-side consumer groups.
//!
//! Each group is one task (an actor) that owns all of its state: the next position to read,
//! the events delivered and not yet acknowledged (with their consumer, deadline and retry
//! count), the events waiting to be delivered again, the parked events and the connected
//! consumers. It reads the log exactly like a transient subscription (one loop over the log,
//! woken by `Ctx.commits`), so it sees only committed events, in order. In a cluster the
//! groups run on the leader only ([`follow_leadership`]).
//!
//! A group's durable record is one checkpoint entry `psub/<group>` written through the log:
//! its position field is the group's checkpoint (the lowest position, or version for a
//! stream group, not yet acknowledged, skipped or parked) and its state is the JSON
//! [`Record`]: definition, checkpoint, parked positions, deleted flag. The record is written
//! when the checkpoint moves (at most every [`PERSIST_EVERY`]), at once when the parked set
//! or the definition changes, and on shutdown. On start the groups are loaded from the
//! latest records and resume from their checkpoints: whatever was delivered above the
//! checkpoint but not recorded as handled is delivered again (at least once).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use quiver_client::{PersistentDefinition, PersistentInfo, Position, Strategy};
use quiver_engine::{
    validate_stream_name, AllFilter, Direction, Engine, Matcher, ReadFrom, RecordedEvent,
};
use quiver_net::message::{Kind, Request, Response};
use quiver_net::quic::read_frame;
use quiver_net::{ErrorCode, Text};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::ctx::Ctx;
use crate::metrics::GroupCounters;
use crate::subscribe::{step, Target};

/// Checkpoint names of groups start with this.
pub const CHECKPOINT_PREFIX: &str = "psub/";
/// Longest group name.
pub const GROUP_NAME_BYTES_MAX: usize = 200;
/// Longest a group request waits on a new leader for its groups to start.
pub const START_WAIT_MAX: Duration = Duration::from_secs(3);
/// A moved checkpoint is written at most this often.
pub const PERSIST_EVERY: Duration = Duration::from_millis(100);

/// A group's durable state: the JSON in its checkpoint entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The definition.
    pub definition: PersistentDefinition,
    /// Lowest position (or version) not yet acknowledged, skipped or parked.
    pub checkpoint: u64,
    /// Positions of parked events (including those being replayed, until handled).
    pub parked: Vec<u64>,
    /// The group was deleted.
    pub deleted: bool,
    /// Retry counts of events delivered and refused (or timed out) and not yet handled, by
    /// position: they survive a restart like the checkpoint.
    #[serde(default)]
    pub retries: BTreeMap<u64, u32>,
}

/// Why a group operation was refused.
#[derive(Debug)]
pub enum GroupError {
    /// No such group.
    NotFound(String),
    /// A group of that name exists.
    Exists(String),
    /// A bad definition.
    Invalid(String),
    /// The record could not be written.
    Unavailable(String),
}

impl GroupError {
    /// The error response.
    pub fn response(&self) -> Response {
        let (code, message) = match self {
            GroupError::NotFound(g) => (
                ErrorCode::StreamNotFound,
                format!("no persistent subscription group '{g}'"),
            ),
            GroupError::Exists(g) => (
                ErrorCode::AlreadyExists,
                format!("persistent subscription group '{g}' already exists"),
            ),
            GroupError::Invalid(m) => (ErrorCode::InvalidRequest, m.clone()),
            GroupError::Unavailable(m) => (ErrorCode::Unavailable, m.clone()),
        };
        Response::Error {
            code,
            message: Text::new(message),
            actual: None,
        }
    }
}

fn key(group: &str) -> String {
    format!("{CHECKPOINT_PREFIX}{group}")
}

/// Checks a definition; returns what it follows.
fn validate(d: &PersistentDefinition) -> Result<Target, GroupError> {
    let bad = |m: String| Err(GroupError::Invalid(m));
    if d.name.is_empty() || d.name.len() > GROUP_NAME_BYTES_MAX {
        return bad(format!(
            "a group name is 1-{GROUP_NAME_BYTES_MAX} bytes long"
        ));
    }
    if d.name.contains('/') || d.name.chars().any(char::is_control) {
        return bad("a group name has no '/' and no control characters".into());
    }
    if let Err(e) = validate_stream_name(&key(&d.name)) {
        return bad(format!("group name: {e}"));
    }
    if d.max_in_flight == 0 {
        return bad("max_in_flight must be at least 1".into());
    }
    if d.message_timeout_ms == 0 {
        return bad("message_timeout_ms must be at least 1".into());
    }
    if d.stream == "$all" {
        let prefix = |p: &Option<String>| p.clone().map(Matcher::Prefix);
        return Ok(Target::All(AllFilter {
            event_type: prefix(&d.type_prefix),
            stream: prefix(&d.stream_prefix),
        }));
    }
    if let Err(e) = validate_stream_name(&d.stream) {
        return bad(format!("stream '{}': {e}", d.stream));
    }
    if d.type_prefix.is_some() || d.stream_prefix.is_some() {
        return bad("type and stream prefixes apply to $all groups only".into());
    }
    Ok(Target::Stream(d.stream.clone()))
}

/// Where a group's record is written: the engine (one node), or Raft (a cluster's leader,
/// so that the next leader starts the group from it).
#[derive(Clone)]
pub enum Sink {
    /// This node's engine.
    Engine(Engine),
    /// Through Raft, with this time limit per write.
    Cluster(crate::cluster::ClusterHandle, Duration),
}

/// What a consumer is sent: the retry count and the event.
type Out = (u32, RecordedEvent);

/// Messages to a group's task.
enum Cmd {
    Connect {
        tx: mpsc::UnboundedSender<Out>,
        reply: oneshot::Sender<u64>,
    },
    Disconnect(u64),
    Ack(Vec<u64>),
    Nack(u8, Vec<u64>),
    Update(
        PersistentDefinition,
        oneshot::Sender<Result<u64, GroupError>>,
    ),
    ReplayParked(oneshot::Sender<Result<u64, GroupError>>),
    Info(oneshot::Sender<PersistentInfo>),
    Delete(oneshot::Sender<Result<u64, GroupError>>),
    Shutdown(oneshot::Sender<()>),
}

struct Handle {
    tx: mpsc::UnboundedSender<Cmd>,
    task: tokio::task::JoinHandle<()>,
}

/// Every group of this node.
pub struct Groups {
    engine: Engine,
    sink: Sink,
    commits: watch::Receiver<u64>,
    counters: GroupCounters,
    groups: tokio::sync::Mutex<HashMap<String, Handle>>,
    /// Set by [`Groups::shutdown`]: no group starts after it.
    closed: std::sync::atomic::AtomicBool,
    /// The groups run (always on a single node; on a cluster node while it leads, see
    /// [`Groups::activate`]).
    active: std::sync::atomic::AtomicBool,
}

impl Groups {
    /// The groups of a cluster node: none run until [`Groups::activate`] (when the node
    /// leads), and their records are written through Raft.
    pub fn for_cluster(
        engine: Engine,
        commits: watch::Receiver<u64>,
        counters: GroupCounters,
        cluster: crate::cluster::ClusterHandle,
        timeout: Duration,
    ) -> Groups {
        Groups {
            engine,
            sink: Sink::Cluster(cluster, timeout),
            commits,
            counters,
            groups: tokio::sync::Mutex::new(HashMap::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
            active: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Loads the groups recorded in the store and starts them. Needs a tokio runtime.
    pub fn load(engine: Engine, commits: watch::Receiver<u64>, counters: GroupCounters) -> Groups {
        let groups = Groups {
            sink: Sink::Engine(engine.clone()),
            engine,
            commits,
            counters,
            groups: tokio::sync::Mutex::new(HashMap::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
            active: std::sync::atomic::AtomicBool::new(true),
        };
        let loaded = groups.loaded();
        *groups.groups.try_lock().expect("not shared yet") = loaded;
        groups
    }

    /// The groups recorded in the store (committed records), started.
    fn loaded(&self) -> HashMap<String, Handle> {
        let mut groups = HashMap::new();
        for (name, _, state) in self.engine.checkpoints(CHECKPOINT_PREFIX) {
            let record: Record = match serde_json::from_slice(&state) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(name, error = %e, "unreadable persistent group record");
                    continue;
                }
            };
            if record.deleted {
                continue;
            }
            let target = match validate(&record.definition) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(name, error = ?e, "invalid persistent group record");
                    continue;
                }
            };
            let group = record.definition.name.clone();
            let state = self.group(record, target);
            groups.insert(group, spawn(state));
        }
        groups
    }

    fn group(&self, record: Record, target: Target) -> Group {
        Group::new(
            &self.engine,
            &self.sink,
            &self.commits,
            &self.counters,
            record,
            target,
        )
    }

    /// Waits (at most [`START_WAIT_MAX`]) for the groups to run: a cluster node that has just
    /// become leader starts them within a read-index round, and a request sent to it
    /// meanwhile waits rather than fail. Callers still check [`Groups::is_active`] after.
    async fn started(&self) {
        let deadline = tokio::time::Instant::now() + START_WAIT_MAX;
        while !self.is_active() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the groups run here.
    pub fn is_active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A cluster node that leads, once it has applied everything committed before its
    /// term: starts the groups from their replicated records. Whatever the last leader
    /// delivered above a group's recorded checkpoint is delivered again (at least once).
    pub async fn activate(&self) {
        let mut groups = self.groups.lock().await;
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) || self.is_active() {
            return;
        }
        *groups = self.loaded();
        self.active
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(groups = groups.len(), "persistent groups started (leading)");
    }

    /// A cluster node that stopped leading: stops its groups at once, without recording
    /// them (it cannot: the new leader records from here on); their consumers' streams end,
    /// and they join again on the new leader.
    pub async fn deactivate(&self) {
        let mut groups = self.groups.lock().await;
        if !self.is_active() {
            return;
        }
        self.active
            .store(false, std::sync::atomic::Ordering::Relaxed);
        for (_, h) in groups.drain() {
            h.task.abort();
        }
        tracing::info!("persistent groups stopped (no longer leading)");
    }

    /// Creates a group and records it; returns the index of its record.
    pub async fn create(&self, d: PersistentDefinition) -> Result<u64, GroupError> {
        let target = validate(&d)?;
        self.started().await;
        let mut groups = self.groups.lock().await;
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(GroupError::Unavailable("the server is stopping".into()));
        }
        if !self.is_active() {
            return Err(not_running());
        }
        if groups.contains_key(&d.name) {
            return Err(GroupError::Exists(d.name));
        }
        let record = Record {
            checkpoint: d.start,
            definition: d,
            parked: Vec::new(),
            deleted: false,
            retries: BTreeMap::new(),
        };
        let index = write(&self.sink, &record).await?;
        let name = record.definition.name.clone();
        let state = self.group(record, target);
        groups.insert(name, spawn(state));
        Ok(index)
    }

    async fn sender(&self, group: &str) -> Result<mpsc::UnboundedSender<Cmd>, GroupError> {
        self.started().await;
        let groups = self.groups.lock().await;
        if !self.is_active() {
            return Err(not_running());
        }
        match groups.get(group) {
            Some(h) => Ok(h.tx.clone()),
            None => Err(GroupError::NotFound(group.to_string())),
        }
    }

    /// Asks a group something and waits for the answer.
    async fn ask<T>(
        &self,
        group: &str,
        cmd: impl FnOnce(oneshot::Sender<T>) -> Cmd,
    ) -> Result<T, GroupError> {
        let tx = self.sender(group).await?;
        let (reply, answer) = oneshot::channel();
        tx.send(cmd(reply))
            .map_err(|_| GroupError::NotFound(group.to_string()))?;
        answer
            .await
            .map_err(|_| GroupError::NotFound(group.to_string()))
    }

    /// Changes a group's settings.
    pub async fn update(&self, d: PersistentDefinition) -> Result<u64, GroupError> {
        validate(&d)?;
        let name = d.name.clone();
        self.ask(&name, |r| Cmd::Update(d, r)).await?
    }

    /// Delivers a group's parked events again.
    pub async fn replay_parked(&self, group: &str) -> Result<u64, GroupError> {
        self.ask(group, Cmd::ReplayParked).await?
    }

    /// One group's state.
    pub async fn info(&self, group: &str) -> Result<PersistentInfo, GroupError> {
        self.ask(group, Cmd::Info).await
    }

    /// Every group's state, by name.
    pub async fn list(&self) -> Vec<PersistentInfo> {
        let mut names: Vec<String> = self.groups.lock().await.keys().cloned().collect();
        names.sort();
        let mut all = Vec::new();
        for n in names {
            if let Ok(i) = self.info(&n).await {
                all.push(i);
            }
        }
        all
    }

    /// Deletes a group: records it as deleted, ends its consumers' streams.
    pub async fn delete(&self, group: &str) -> Result<u64, GroupError> {
        self.started().await;
        let mut groups = self.groups.lock().await;
        if !self.is_active() {
            return Err(not_running());
        }
        let Some(h) = groups.get(group) else {
            return Err(GroupError::NotFound(group.to_string()));
        };
        let (reply, answer) = oneshot::channel();
        let _ = h.tx.send(Cmd::Delete(reply));
        let result = answer
            .await
            .map_err(|_| GroupError::Unavailable("the group stopped".into()))?;
        if result.is_ok() {
            if let Some(h) = groups.remove(group) {
                let _ = h.task.await;
            }
        }
        result
    }

    /// Stops every group, recording its state. The groups stay stopped.
    pub async fn shutdown(&self) {
        let handles: Vec<Handle> = {
            let mut groups = self.groups.lock().await;
            self.closed
                .store(true, std::sync::atomic::Ordering::Relaxed);
            groups.drain().map(|(_, h)| h).collect()
        };
        for h in handles {
            let (reply, answer) = oneshot::channel();
            if h.tx.send(Cmd::Shutdown(reply)).is_ok() {
                let _ = answer.await;
            }
            let _ = h.task.await;
        }
    }
}

/// Runs the persistent groups while this node leads (until aborted): when it becomes leader
/// and a read index shows it has applied everything committed before its term, the groups
/// start from their replicated records; when it stops leading, they stop and their
/// consumers follow the leader.
pub async fn follow_leadership(
    cluster: crate::cluster::ClusterHandle,
    groups: Arc<Groups>,
    timeout: Duration,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    // The term the groups were started in: a node that lost and regained leadership between
    // two looks restarts them, since another leader may have recorded them meanwhile.
    let mut started_in = 0;
    loop {
        tick.tick().await;
        let status = cluster.status();
        let leads = status.role == "leader";
        if groups.is_active() && (!leads || status.term != started_in) {
            groups.deactivate().await;
        }
        if leads && !groups.is_active() && cluster.read_index(timeout).await.is_ok() {
            let now = cluster.status();
            if now.role == "leader" && now.term == status.term {
                started_in = status.term;
                groups.activate().await;
            }
        }
    }
}

fn spawn(group: Group) -> Handle {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(group.run(rx));
    Handle { tx, task }
}

/// A cluster node's groups run on its leader only.
fn not_running() -> GroupError {
    GroupError::Unavailable(
        "persistent groups run on the cluster's leader: this node does not lead (or has just \
         begun to, and is starting them)"
            .into(),
    )
}

/// Writes a group's record through the log; returns its index.
async fn write(sink: &Sink, record: &Record) -> Result<u64, GroupError> {
    let json = serde_json::to_vec(record).expect("records serialize");
    let (name, position) = (key(&record.definition.name), record.checkpoint);
    let failed =
        |e: &dyn std::fmt::Display| GroupError::Unavailable(format!("recording the group: {e}"));
    match sink {
        Sink::Engine(engine) => {
            let engine = engine.clone();
            tokio::task::spawn_blocking(move || engine.put_checkpoint(&name, position, &json))
                .await
                .expect("engine calls do not panic")
                .map_err(|e| failed(&e))
        }
        Sink::Cluster(cluster, timeout) => {
            let write = crate::cluster::Write::Checkpoint {
                name,
                position,
                state: json,
            };
            match cluster.write(write, *timeout).await {
                Ok(r) => Ok(r.index),
                Err(e) => Err(failed(&e)),
            }
        }
    }
}

/// An event read and not yet handled.
struct Pending {
    event: RecordedEvent,
    /// Its position (`$all`) or version (a stream group).
    seq: u64,
    /// Times it was retried (nacked with retry, or timed out).
    retries: u32,
    /// The consumer it is delivered to; `None`: waiting to be delivered.
    consumer: Option<u64>,
    deadline: Instant,
    /// Replayed from the parked set: it stays parked in the record until handled, and it
    /// does not hold the checkpoint back.
    replay: bool,
    /// Delivered at least once (so the next delivery is a redelivery).
    delivered: bool,
}

struct Consumer {
    id: u64,
    tx: mpsc::UnboundedSender<Out>,
}

struct Group {
    def: PersistentDefinition,
    target: Target,
    engine: Engine,
    sink: Sink,
    commits: watch::Receiver<u64>,
    /// Next position (or version) to read.
    next: u64,
    /// Read but not yet delivered (no room in flight).
    backlog: VecDeque<RecordedEvent>,
    /// By position.
    pending: BTreeMap<u64, Pending>,
    /// Positions.
    parked: BTreeSet<u64>,
    consumers: Vec<Consumer>,
    next_consumer: u64,
    round_robin: usize,
    /// The checkpoint last recorded.
    recorded: u64,
    last_write: Instant,
    /// The record must be written now (parked set, retry counts or definition changed).
    urgent: bool,
    /// Retry counts recorded before a restart, for events not read again yet.
    restored_retries: BTreeMap<u64, u32>,
    counters: GroupCounters,
    label: crate::metrics::GroupLabel,
}

/// FNV-1a: a stable hash of a stream name, for the pinned strategy.
fn stream_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Group {
    fn new(
        engine: &Engine,
        sink: &Sink,
        commits: &watch::Receiver<u64>,
        counters: &GroupCounters,
        record: Record,
        target: Target,
    ) -> Group {
        Group {
            label: GroupCounters::label(&record.definition.name),
            counters: counters.clone(),
            def: record.definition,
            target,
            engine: engine.clone(),
            sink: sink.clone(),
            commits: commits.clone(),
            next: record.checkpoint,
            backlog: VecDeque::new(),
            pending: BTreeMap::new(),
            parked: record.parked.into_iter().collect(),
            restored_retries: record.retries,
            consumers: Vec::new(),
            next_consumer: 0,
            round_robin: 0,
            recorded: record.checkpoint,
            last_write: Instant::now(),
            urgent: false,
        }
    }

    fn seq(&self, e: &RecordedEvent) -> u64 {
        match self.target {
            Target::All(_) => e.position,
            Target::Stream(_) => e.version,
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.def.message_timeout_ms)
    }

    /// Lowest position (or version) not yet acknowledged, skipped or parked.
    fn checkpoint(&self) -> u64 {
        let pending = self.pending.values().filter(|p| !p.replay).map(|p| p.seq);
        let backlog = self.backlog.front().map(|e| self.seq(e));
        pending.chain(backlog).fold(self.next, u64::min)
    }

    fn record(&self, deleted: bool) -> Record {
        let mut retries = self.restored_retries.clone();
        for (pos, p) in &self.pending {
            if p.retries > 0 {
                retries.insert(*pos, p.retries);
            }
        }
        Record {
            definition: self.def.clone(),
            checkpoint: self.checkpoint(),
            parked: self.parked.iter().copied().collect(),
            deleted,
            retries,
        }
    }

    async fn persist(&mut self) -> Result<u64, GroupError> {
        let record = self.record(false);
        self.last_write = Instant::now();
        let index = write(&self.sink, &record).await;
        match &index {
            Ok(_) => {
                self.recorded = record.checkpoint;
                self.urgent = false;
            }
            Err(e) => {
                tracing::warn!(group = self.def.name, error = ?e, "recording failed");
                // Try again in a while, not in a busy loop.
                self.last_write = Instant::now() + Duration::from_secs(1);
            }
        }
        index
    }

    /// When the record should next be written, if it should.
    fn write_due(&self) -> Option<Instant> {
        if self.urgent {
            Some(self.last_write)
        } else if self.checkpoint() != self.recorded {
            Some(self.last_write + PERSIST_EVERY)
        } else {
            None
        }
    }

    /// Which consumer gets an event, if any is connected.
    fn pick(&mut self, stream: &str) -> Option<usize> {
        if self.consumers.is_empty() {
            return None;
        }
        let n = self.consumers.len();
        Some(match self.def.strategy {
            Strategy::RoundRobin => {
                self.round_robin = (self.round_robin + 1) % n;
                self.round_robin
            }
            Strategy::Pinned => (stream_hash(stream) % n as u64) as usize,
        })
    }

    /// Sends a pending event to a consumer; false if no consumer could take it.
    fn deliver(&mut self, position: u64) -> bool {
        loop {
            let Some(stream) = self.pending.get(&position).map(|p| p.event.stream.clone()) else {
                return true;
            };
            let Some(c) = self.pick(&stream) else {
                return false;
            };
            let deadline = Instant::now() + self.timeout();
            let p = self.pending.get_mut(&position).expect("looked up above");
            let consumer = &self.consumers[c];
            if consumer.tx.send((p.retries, p.event.clone())).is_ok() {
                let again = p.retries > 0 || p.delivered;
                p.consumer = Some(consumer.id);
                p.deadline = deadline;
                p.delivered = true;
                self.counters.deliveries.get_or_create(&self.label).inc();
                if again {
                    self.counters.redeliveries.get_or_create(&self.label).inc();
                }
                return true;
            }
            // Gone: its stream task tells us too, but do not wait for that.
            let id = consumer.id;
            self.disconnect(id);
        }
    }

    /// Delivers what waits, then reads and delivers new events while there is room.
    fn pump(&mut self) {
        let waiting: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.consumer.is_none())
            .map(|(pos, _)| *pos)
            .collect();
        for pos in waiting {
            if !self.deliver(pos) {
                return;
            }
        }
        while !self.consumers.is_empty() && self.pending.len() < self.def.max_in_flight as usize {
            let Some(event) = self.backlog.pop_front().or_else(|| self.read()) else {
                return;
            };
            if self.parked.contains(&event.position) {
                continue;
            }
            let position = event.position;
            let retries = self.restored_retries.remove(&position).unwrap_or(0);
            self.pending.insert(
                position,
                Pending {
                    seq: self.seq(&event),
                    event,
                    retries,
                    consumer: None,
                    deadline: Instant::now(),
                    replay: false,
                    delivered: false,
                },
            );
            if !self.deliver(position) {
                return;
            }
        }
    }

    /// Reads the next chunk into the backlog and returns its first event.
    fn read(&mut self) -> Option<RecordedEvent> {
        // Marked seen before reading: a commit after this wakes the group.
        self.commits.borrow_and_update();
        match step(&self.engine, &self.target, self.next) {
            Ok((events, next, _)) => {
                self.next = next;
                self.backlog.extend(events);
                self.backlog.pop_front()
            }
            Err(e) => {
                tracing::warn!(group = self.def.name, error = %e, "reading for a group");
                None
            }
        }
    }

    fn disconnect(&mut self, id: u64) {
        self.consumers.retain(|c| c.id != id);
        for p in self.pending.values_mut() {
            if p.consumer == Some(id) {
                p.consumer = None;
            }
        }
    }

    fn park(&mut self, position: u64) {
        if self.pending.remove(&position).is_some() {
            self.parked.insert(position);
            self.urgent = true;
        }
    }

    /// Done with an event: acknowledged or skipped.
    fn handled(&mut self, position: u64) {
        if let Some(p) = self.pending.remove(&position) {
            if p.replay {
                self.parked.remove(&position);
                self.urgent = true;
            }
        }
    }

    fn retry(&mut self, position: u64) {
        let max = self.def.max_retries;
        let Some(p) = self.pending.get_mut(&position) else {
            return;
        };
        p.retries += 1;
        if p.retries > max {
            self.park(position);
        } else {
            p.consumer = None;
            // Retry state goes through the log too, so a restart keeps counting.
            self.urgent = true;
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.consumer.is_some() && p.deadline <= now)
            .map(|(pos, _)| *pos)
            .collect();
        for pos in late {
            self.retry(pos);
        }
    }

    fn replay_parked(&mut self) {
        let parked: Vec<u64> = self.parked.iter().copied().collect();
        for pos in parked {
            if self.pending.contains_key(&pos) {
                continue;
            }
            let mut read = self.engine.read_all(
                ReadFrom::At(pos),
                Direction::Forward,
                1,
                AllFilter::default(),
            );
            match read.next() {
                Some(Ok(event)) if event.position == pos => {
                    let seq = self.seq(&event);
                    self.pending.insert(
                        pos,
                        Pending {
                            event,
                            seq,
                            retries: 0,
                            consumer: None,
                            deadline: Instant::now(),
                            replay: true,
                            // It was delivered before it was parked.
                            delivered: true,
                        },
                    );
                }
                // Removed from the store since it was parked: nothing to replay.
                Some(Ok(_)) | None => {
                    self.parked.remove(&pos);
                    self.urgent = true;
                }
                Some(Err(e)) => {
                    tracing::warn!(group = self.def.name, error = %e, "replaying a parked event");
                }
            }
        }
    }

    fn info(&self) -> PersistentInfo {
        PersistentInfo {
            definition: self.def.clone(),
            checkpoint: self.checkpoint(),
            next: self.next,
            in_flight: self
                .pending
                .values()
                .filter(|p| p.consumer.is_some())
                .count() as u64,
            waiting: (self
                .pending
                .values()
                .filter(|p| p.consumer.is_none())
                .count()
                + self.backlog.len()) as u64,
            parked: self.parked.iter().copied().map(Position).collect(),
            consumers: self.consumers.len() as u64,
        }
    }

    fn update(&mut self, d: PersistentDefinition) -> Result<(), GroupError> {
        let old = &self.def;
        if (&d.stream, &d.type_prefix, &d.stream_prefix, d.start)
            != (&old.stream, &old.type_prefix, &old.stream_prefix, old.start)
        {
            return Err(GroupError::Invalid(
                "a group's stream, filters and start cannot change".into(),
            ));
        }
        self.def = d;
        // Deadlines already set keep their timeout; retry counts over a lowered limit park
        // at their next failure.
        Ok(())
    }

    /// Handles one command; false when the group stops.
    async fn handle(&mut self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::Connect { tx, reply } => {
                let id = self.next_consumer;
                self.next_consumer += 1;
                self.consumers.push(Consumer { id, tx });
                let _ = reply.send(id);
            }
            Cmd::Disconnect(id) => self.disconnect(id),
            Cmd::Ack(positions) => {
                let n = positions.len() as u64;
                self.counters.acks.get_or_create(&self.label).inc_by(n);
                positions.into_iter().for_each(|p| self.handled(p));
            }
            Cmd::Nack(action, positions) => {
                let n = positions.len() as u64;
                self.counters.nacks.get_or_create(&self.label).inc_by(n);
                for p in positions {
                    match action {
                        0 => self.retry(p),
                        1 => self.park(p),
                        _ => self.handled(p),
                    }
                }
            }
            Cmd::Update(d, reply) => {
                let result = match self.update(d) {
                    Ok(()) => self.persist().await,
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Cmd::ReplayParked(reply) => {
                self.replay_parked();
                let _ = reply.send(self.persist().await);
            }
            Cmd::Info(reply) => {
                let _ = reply.send(self.info());
            }
            Cmd::Delete(reply) => {
                let result = write(&self.sink, &self.record(true)).await;
                let stop = result.is_ok();
                let _ = reply.send(result);
                return !stop;
            }
            Cmd::Shutdown(reply) => {
                if self.write_due().is_some() {
                    let _ = self.persist().await;
                }
                let _ = reply.send(());
                return false;
            }
        }
        true
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let mut commits_open = true;
        loop {
            self.pump();
            if self.write_due().is_some_and(|due| due <= Instant::now()) {
                let _ = self.persist().await;
            }
            let deadline = self
                .pending
                .values()
                .filter(|p| p.consumer.is_some())
                .map(|p| p.deadline)
                .min();
            let wake = [deadline, self.write_due()].into_iter().flatten().min();
            let mut commits = self.commits.clone();
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => {
                        if !self.handle(cmd).await {
                            return;
                        }
                    }
                    None => {
                        let _ = self.persist().await;
                        return;
                    }
                },
                changed = commits.changed(), if commits_open => {
                    commits_open = changed.is_ok();
                    // Seen: the next read covers it (reads happen whenever there is room).
                    self.commits.borrow_and_update();
                }
                () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)),
                    if wake.is_some() => self.expire(),
            }
        }
    }
}

/// Serves one consumer stream: registers it with the group, sends `Done`, then streams
/// `Delivery` frames while a reader passes the consumer's acks and nacks to the group.
/// Ends when the consumer leaves, the group is deleted or the server stops.
pub async fn serve_consumer(
    ctx: &Ctx,
    groups: &Groups,
    group: &str,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    frame_bytes_max: usize,
) {
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    let joined = async {
        let tx = groups.sender(group).await?;
        let (reply, answer) = oneshot::channel();
        let lost = || GroupError::NotFound(group.to_string());
        tx.send(Cmd::Connect { tx: out_tx, reply })
            .map_err(|_| lost())?;
        let id = answer.await.map_err(|_| lost())?;
        Ok::<_, GroupError>((tx, id))
    };
    let (tx, id) = match joined.await {
        Ok(j) => j,
        Err(e) => {
            let mut out = BytesMut::new();
            e.response().encode(&mut out);
            let _ = send.write_all(&out).await;
            let _ = send.finish();
            return;
        }
    };
    let mut out = BytesMut::new();
    Response::Done { index: 0 }.encode(&mut out);
    let mut reader = tokio::spawn(read_acks(recv, tx.clone(), frame_bytes_max));
    let mut reader_done = false;
    if send.write_all(&out).await.is_ok() {
        loop {
            tokio::select! {
                d = out_rx.recv() => {
                    let Some((retry_count, event)) = d else { break };
                    out.clear();
                    encode_delivery(&mut out, retry_count, &event);
                    if send.write_all(&out).await.is_err() {
                        break;
                    }
                    ctx.metrics.subscription_deliveries.inc();
                }
                _ = send.stopped() => break,
                _ = &mut reader => {
                    reader_done = true;
                    break;
                }
            }
        }
    }
    let _ = tx.send(Cmd::Disconnect(id));
    if !reader_done {
        reader.abort();
    }
    let _ = send.finish();
}

/// Passes a consumer's acks and nacks to its group until the consumer stops sending.
async fn read_acks(
    mut recv: quinn::RecvStream,
    tx: mpsc::UnboundedSender<Cmd>,
    frame_bytes_max: usize,
) {
    let mut buf = BytesMut::new();
    while let Ok(Some(frame)) = read_frame(&mut recv, &mut buf, frame_bytes_max).await {
        let cmd = match Request::decode(&frame) {
            Ok(Request::PersistentAck { positions }) => Cmd::Ack(positions),
            Ok(Request::PersistentNack { action, positions }) => Cmd::Nack(action, positions),
            // Anything else breaks the consumer protocol: the membership ends.
            _ => return,
        };
        if tx.send(cmd).is_err() {
            return;
        }
    }
}

fn encode_delivery(out: &mut BytesMut, retry_count: u32, e: &RecordedEvent) {
    let kind = Kind::Delivery as u16;
    quiver_net::frame::encode(out, kind, quiver_net::frame::FLAG_MORE, |payload| {
        payload.put_u32_le(retry_count);
        crate::frames::put_recorded(payload, e);
    });
}

/// Parses a definition sent by a client.
pub fn parse_definition(json: &str) -> Result<PersistentDefinition, GroupError> {
    serde_json::from_str(json).map_err(|e| GroupError::Invalid(format!("definition: {e}")))
}
