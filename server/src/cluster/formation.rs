//! Forming a cluster from discovery, without split brain.
//!
//! A node started with `--cluster-size N` and no cluster yet (no `cluster-members` file in
//! its data directory, no `--initial-members`) announces itself as fresh and listens. Once it
//! has heard exactly N fresh nodes of its store (itself included) it proposes them, sorted by
//! id, as the voters; it forms the cluster when every one of them has proposed the same list
//! and that agreement has held for [`HOLD`]. Fewer than N never form anything, so the two
//! sides of a partitioned start cannot each form a cluster; more than N fresh nodes is a
//! misconfiguration that this node refuses to resolve by guessing (it waits and says so).
//!
//! A fresh node that hears a formed cluster of its store takes that membership instead: as a
//! voter if it is listed (a peer formed a moment earlier), else as a newcomer waiting to be
//! added (`quiver cluster add`, or the leader's `--auto-join`). Either way the membership and
//! the members' addresses are written to `DATA_DIR/cluster-members` (durably, before Raft
//! starts), which a restart reads instead of forming again.
//!
//! [`decide`] is the rule, a pure function; [`form`] runs it over a [`Discovery`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use quiver_net::discovery::{Discovery, Heard, NodeState};

use super::config::{write_durably, ConfigError};

/// The file in the data directory that holds the membership a node formed or joined, in the
/// `--initial-members` syntax (`id=peer/client,...`).
pub const MEMBERS_FILE: &str = "cluster-members";
/// How long a newcomer waits to hear every voter of the cluster it found before it starts
/// with the voters it has heard (a voter may be down). It drops messages from nodes it does
/// not know as members, so it wants them all, the leader above all (which announces).
pub const JOIN_WAIT: Duration = Duration::from_secs(10);
/// How long an agreement must hold before a node forms: a few announcement intervals, so
/// that a node that would change the picture (a fresh node too many) has been heard.
pub const HOLD: Duration = Duration::from_millis(1500);

/// What a node heard of another, as the rule needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Its id.
    pub id: u64,
    /// The cluster size it was told.
    pub cluster_size: u16,
    /// Where it stands.
    pub state: NodeState,
}

/// What the rule says to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Wait; why, for the log.
    Wait(String),
    /// Every node of this proposal proposes it too (this node's own proposal).
    Agreed(Vec<u64>),
    /// A formed cluster lists this node among its voters: be one of them.
    Adopt(Vec<u64>),
    /// A formed cluster of this store exists without this node: wait to be added to it.
    Join(Vec<u64>),
}

/// The rule: `me` told `size` (0: join only), having heard `seen` (other nodes of this
/// store, recently). Returns the proposal to announce (empty for none) and the step.
pub fn decide(me: u64, size: u16, seen: &[Seen]) -> (Vec<u64>, Step) {
    let formed: Vec<&Vec<u64>> = seen
        .iter()
        .filter_map(|s| match &s.state {
            NodeState::Member { voters } if !voters.is_empty() => Some(voters),
            _ => None,
        })
        .collect();
    if let Some(voters) = formed.iter().find(|v| v.contains(&me)) {
        return (Vec::new(), Step::Adopt((*voters).clone()));
    }
    if let Some(voters) = formed.first() {
        return (Vec::new(), Step::Join((*voters).clone()));
    }
    if size == 0 {
        return (
            Vec::new(),
            Step::Wait("no --cluster-size: waiting for a formed cluster of this store".into()),
        );
    }
    let fresh: Vec<&Seen> = seen
        .iter()
        .filter(|s| matches!(s.state, NodeState::Fresh { .. }))
        .collect();
    if let Some(other) = fresh.iter().find(|s| s.cluster_size != size) {
        return (
            Vec::new(),
            Step::Wait(format!(
                "node {} was told --cluster-size {}, this node {size}: not forming until they agree",
                other.id, other.cluster_size
            )),
        );
    }
    let mut ids: Vec<u64> = fresh.iter().map(|s| s.id).chain([me]).collect();
    ids.sort_unstable();
    ids.dedup();
    let n = size as usize;
    if ids.len() < n {
        return (
            Vec::new(),
            Step::Wait(format!("found {} of {n} nodes", ids.len())),
        );
    }
    if ids.len() > n {
        return (
            Vec::new(),
            Step::Wait(format!(
                "found {} fresh nodes ({ids:?}) but --cluster-size is {n}: not choosing among \
                 them; stop the extra nodes or fix --cluster-size",
                ids.len()
            )),
        );
    }
    let agreed = fresh
        .iter()
        .all(|s| matches!(&s.state, NodeState::Fresh { proposal } if *proposal == ids));
    if agreed {
        (ids.clone(), Step::Agreed(ids))
    } else {
        (
            ids,
            Step::Wait(format!(
                "found {n} of {n} nodes; waiting for their agreement"
            )),
        )
    }
}

/// A membership to start Raft with: the voters and the addresses known of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The voters, with peer addresses where known.
    pub members: Vec<(u64, SocketAddr)>,
    /// Their client addresses, where known.
    pub clients: BTreeMap<u64, SocketAddr>,
}

impl Membership {
    /// The `--initial-members` text for it.
    pub fn to_text(&self) -> String {
        self.members
            .iter()
            .map(|(id, peer)| match self.clients.get(id) {
                Some(client) => format!("{id}={peer}/{client}"),
                None => format!("{id}={peer}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The membership kept in `data_dir`, if this node formed or joined a cluster before.
pub fn load(data_dir: &Path) -> Result<Option<String>, ConfigError> {
    let path = data_dir.join(MEMBERS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfigError::NodeIdIo(path, e)),
    }
}

/// Waits until this node forms or finds a cluster, then writes the membership to
/// `data_dir` (synced) and returns it. `me` is this node's id and peer/client addresses;
/// `size` its `--cluster-size` (0: join only).
pub async fn form(
    discovery: &Discovery,
    data_dir: &Path,
    me: (u64, SocketAddr, Option<SocketAddr>),
    size: u16,
) -> Result<Membership, ConfigError> {
    let (my_id, my_peer, my_client) = me;
    let mut changes = discovery.changes();
    let mut said = String::new();
    let mut agreed_since: Option<(Vec<u64>, Instant)> = None;
    let mut joining_since: Option<Instant> = None;
    loop {
        let heard = discovery.heard();
        let seen: Vec<Seen> = heard
            .values()
            .map(|h| Seen {
                id: h.announcement.node_id,
                cluster_size: h.announcement.cluster_size,
                state: h.announcement.state.clone(),
            })
            .collect();
        let (proposal, step) = decide(my_id, size, &seen);
        discovery.set_state(NodeState::Fresh { proposal });
        let chosen = match step {
            Step::Wait(why) => {
                agreed_since = None;
                if why != said {
                    tracing::info!(node_id = my_id, "forming a cluster: {why}");
                    said = why;
                }
                None
            }
            Step::Agreed(ids) => match &agreed_since {
                Some((same, since)) if *same == ids && since.elapsed() >= HOLD => {
                    tracing::info!(voters = ?ids, "every node agrees: forming the cluster");
                    Some((ids, true))
                }
                Some((same, _)) if *same == ids => None,
                _ => {
                    agreed_since = Some((ids, Instant::now()));
                    None
                }
            },
            Step::Adopt(ids) => {
                tracing::info!(voters = ?ids, "a peer formed the cluster with this node: joining it");
                Some((ids, true))
            }
            Step::Join(ids) => {
                let since = *joining_since.get_or_insert_with(Instant::now);
                let all = ids.iter().all(|id| heard.contains_key(id));
                if all || since.elapsed() >= JOIN_WAIT {
                    tracing::info!(
                        voters = ?ids,
                        "found a formed cluster of this store without this node: waiting to \
                         be added (quiver cluster add, or a leader's --auto-join)"
                    );
                    Some((ids, false))
                } else {
                    None
                }
            }
        };
        if let Some((voters, voter)) = chosen {
            let me = (my_id, my_peer, my_client);
            if let Some(m) = membership(&voters, voter, &heard, me) {
                let text = m.to_text();
                write_durably(data_dir, MEMBERS_FILE, &text)?;
                tracing::info!(members = %text, "kept the membership in the data directory");
                return Ok(m);
            }
            // A voter not heard yet: its address is needed before Raft starts.
        }
        let _ = tokio::time::timeout(Duration::from_millis(250), changes.changed()).await;
    }
}

/// The membership of `voters` with the addresses heard, or None while a voter's address is
/// unknown (only a voter's own list must be complete: a newcomer learns the rest later).
fn membership(
    voters: &[u64],
    voter: bool,
    heard: &BTreeMap<u64, Heard>,
    me: (u64, SocketAddr, Option<SocketAddr>),
) -> Option<Membership> {
    let mut members = Vec::new();
    let mut clients = BTreeMap::new();
    // An unspecified address (0.0.0.0) would tell clients nothing; the others learn this
    // node's real address from the packets it sends.
    if let Some(c) = me.2.filter(|c| !c.ip().is_unspecified()) {
        clients.insert(me.0, c);
    }
    for id in voters {
        if *id == me.0 {
            members.push((me.0, me.1));
            continue;
        }
        match heard.get(id) {
            Some(h) => {
                members.push((*id, h.peer()));
                if let Some(c) = h.client() {
                    clients.insert(*id, c);
                }
            }
            None if voter => return None,
            None => {}
        }
    }
    if members.is_empty() {
        return None;
    }
    Some(Membership { members, clients })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(id: u64, size: u16, proposal: &[u64]) -> Seen {
        Seen {
            id,
            cluster_size: size,
            state: NodeState::Fresh {
                proposal: proposal.to_vec(),
            },
        }
    }

    fn member(id: u64, voters: &[u64]) -> Seen {
        Seen {
            id,
            cluster_size: 3,
            state: NodeState::Member {
                voters: voters.to_vec(),
            },
        }
    }

    #[test]
    fn fewer_than_the_size_never_form() {
        let (p, step) = decide(5, 3, &[fresh(9, 3, &[])]);
        assert!(p.is_empty());
        assert!(matches!(step, Step::Wait(_)));
        let (p, step) = decide(5, 3, &[]);
        assert!(p.is_empty() && matches!(step, Step::Wait(_)));
    }

    #[test]
    fn exactly_the_size_proposes_sorted_ids_and_forms_once_all_agree() {
        let (p, step) = decide(5, 3, &[fresh(9, 3, &[]), fresh(2, 3, &[])]);
        assert_eq!(p, vec![2, 5, 9]);
        assert!(matches!(step, Step::Wait(_)), "{step:?}");
        let (_, step) = decide(5, 3, &[fresh(9, 3, &[2, 5, 9]), fresh(2, 3, &[2, 5, 9])]);
        assert_eq!(step, Step::Agreed(vec![2, 5, 9]));
        // One that proposes something else holds it back.
        let (_, step) = decide(5, 3, &[fresh(9, 3, &[2, 5, 9]), fresh(2, 3, &[2, 4, 9])]);
        assert!(matches!(step, Step::Wait(_)));
    }

    #[test]
    fn more_fresh_nodes_than_the_size_form_nothing() {
        let all = [2, 5, 7, 9];
        let seen = [fresh(9, 3, &all), fresh(2, 3, &all), fresh(7, 3, &all)];
        let (p, step) = decide(5, 3, &seen);
        assert!(p.is_empty());
        assert!(matches!(step, Step::Wait(why) if why.contains("4 fresh nodes")));
    }

    #[test]
    fn disagreeing_sizes_form_nothing() {
        let (p, step) = decide(5, 3, &[fresh(9, 2, &[]), fresh(2, 3, &[])]);
        assert!(p.is_empty());
        assert!(matches!(step, Step::Wait(why) if why.contains("--cluster-size 2")));
    }

    #[test]
    fn a_formed_cluster_is_adopted_or_joined_never_formed_beside() {
        let seen = [member(2, &[2, 5, 9]), fresh(9, 3, &[2, 5, 9])];
        assert_eq!(decide(5, 3, &seen).1, Step::Adopt(vec![2, 5, 9]));
        let seen = [member(2, &[1, 2, 3]), fresh(9, 3, &[]), fresh(8, 3, &[])];
        assert_eq!(decide(5, 3, &seen).1, Step::Join(vec![1, 2, 3]));
        // Without a size, only joining.
        assert!(matches!(decide(5, 0, &[fresh(9, 0, &[])]).1, Step::Wait(_)));
        assert_eq!(decide(5, 0, &[member(1, &[1])]).1, Step::Join(vec![1]));
    }

    #[test]
    fn a_voters_membership_needs_every_address_a_newcomers_does_not() {
        let me = (5, "10.0.0.5:7601".parse().unwrap(), None);
        let heard = BTreeMap::new();
        assert_eq!(membership(&[2, 5], true, &heard, me), None);
        let m = membership(&[5], true, &heard, me).unwrap();
        assert_eq!(m.to_text(), "5=10.0.0.5:7601");
        assert_eq!(membership(&[1, 2], false, &heard, me), None);
    }
}
