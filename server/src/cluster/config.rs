//! What a cluster node is told at start: its id (kept in the data directory, so it is the
//! same after a restart), the initial members, its peer address, the cluster secret, and the
//! Raft clock. Parsing and checking only; nothing here starts anything.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quiver_net::discovery::Discovery;

use quiver_net::peer_quic::SECRET_BYTES_MIN;

/// The file in the data directory that holds the node id (decimal, one line).
pub const NODE_ID_FILE: &str = "node-id";
/// Default peer address (UDP).
pub const PEER_LISTEN_DEFAULT: &str = "127.0.0.1:7601";
/// The Raft clock. With `ELECTION_TICKS` and `HEARTBEAT_TICKS`: a leader heartbeats every
/// 100 ms; a follower that hears nothing for 1–2 s (randomized) asks for a pre-vote. A
/// heartbeat is 10–20 times more frequent than an election, so a few lost packets or a slow
/// fsync on a shared disk (hundreds of ms at worst here) do not start one, and a dead
/// leader is replaced in about 1–2.5 s (timeout, pre-vote, vote), inside DESIGN.md's 3 s.
pub const TICK: Duration = Duration::from_millis(100);
/// Ticks without a leader before a pre-vote (randomized in [t, 2t)).
pub const ELECTION_TICKS: u32 = 10;
/// Ticks between a leader's heartbeats.
pub const HEARTBEAT_TICKS: u32 = 1;

/// Why a cluster node cannot start with what it was given.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No secret at all: peers could not authenticate each other.
    #[error(
        "cluster mode needs a cluster secret: --cluster-secret, QUIVER_CLUSTER_SECRET or \
         --cluster-secret-file (at least {SECRET_BYTES_MIN} bytes; 32 random bytes recommended)"
    )]
    MissingSecret,
    /// Both a secret and a secret file.
    #[error("give the cluster secret once: --cluster-secret or --cluster-secret-file, not both")]
    TwoSecrets,
    /// Shorter than the transport accepts.
    #[error(
        "the cluster secret is {0} bytes; at least {SECRET_BYTES_MIN} are required (a short \
         secret can be guessed offline from one collected proof)"
    )]
    WeakSecret(usize),
    /// The secret file could not be read.
    #[error("reading the cluster secret file {0}: {1}")]
    SecretFile(PathBuf, std::io::Error),
    /// Neither `--initial-members` nor `--cluster-size`/discovery says who the members are.
    #[error(
        "cluster mode needs --initial-members id=peer_addr,... (QUIVER_INITIAL_MEMBERS), or \
         --cluster-size N to form a cluster by discovery"
    )]
    MissingMembers,
    /// `--initial-members` does not parse.
    #[error("--initial-members: {0}")]
    BadMembers(String),
    /// The flag and the data directory disagree about who this node is.
    #[error(
        "--node-id {flag} but the data directory says this node is {file} ({path}): a node \
         keeps its id for life; use the directory's id or another directory"
    )]
    NodeIdMismatch {
        /// From the flag.
        flag: u64,
        /// From the file.
        file: u64,
        /// The file.
        path: PathBuf,
    },
    /// Node id 0, from the flag or the file.
    #[error("node id 0 is reserved")]
    ZeroNodeId,
    /// The node-id file holds something else.
    #[error("{0} does not hold a node id: {1:?}")]
    BadNodeIdFile(PathBuf, String),
    /// Reading or writing the node-id or members file.
    #[error("{0}: {1}")]
    NodeIdIo(PathBuf, std::io::Error),
}

/// A checked cluster configuration.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node.
    pub node_id: u64,
    /// The initial voters and where their peer endpoints are, by id, this node included.
    pub members: Vec<(u64, SocketAddr)>,
    /// Where this node listens for peers.
    pub peer_listen: SocketAddr,
    /// The cluster secret.
    pub secret: Vec<u8>,
    /// The Raft clock's period.
    pub tick: Duration,
    /// See [`ELECTION_TICKS`].
    pub election_ticks: u32,
    /// See [`HEARTBEAT_TICKS`].
    pub heartbeat_ticks: u32,
    /// The members' client addresses, where known (this node's included): told to clients
    /// (`ClusterMembers`) so that they find the leader.
    pub clients: BTreeMap<u64, SocketAddr>,
    /// Discovery, when the node runs it: its members' addresses are refreshed from what it
    /// hears, nodes heard that are not members are shown in the status, and it announces
    /// this node's membership.
    pub discovery: Option<Arc<Discovery>>,
    /// `--cluster-size`: the voters `--auto-join` fills the cluster up to (0: none).
    pub cluster_size: u16,
    /// `--auto-join`: as leader, add fresh nodes that discovery hears as learners (promoted
    /// to voters once caught up) while the cluster has fewer than `cluster_size` voters.
    pub auto_join: bool,
}

impl ClusterConfig {
    /// A configuration with the default clock.
    pub fn new(
        node_id: u64,
        members: Vec<(u64, SocketAddr)>,
        peer_listen: SocketAddr,
        secret: Vec<u8>,
    ) -> ClusterConfig {
        ClusterConfig {
            node_id,
            members,
            peer_listen,
            secret,
            clients: BTreeMap::new(),
            discovery: None,
            cluster_size: 0,
            auto_join: false,
            tick: TICK,
            election_ticks: ELECTION_TICKS,
            heartbeat_ticks: HEARTBEAT_TICKS,
        }
    }
}

/// Parses `id=addr,id=addr,...` (addresses as `host:port`; names are resolved now). Ids are
/// not 0 and appear once; so do addresses. Each item may also name the member's client
/// address, `id=peer_addr/client_addr`: see [`parse_member_clients`].
pub fn parse_members(text: &str) -> Result<Vec<(u64, SocketAddr)>, ConfigError> {
    let bad = |why: String| ConfigError::BadMembers(why);
    let mut out: Vec<(u64, SocketAddr)> = Vec::new();
    for (id, addr, _) in member_items(text)? {
        let addr = resolve(addr)?;
        if out.iter().any(|(i, _)| *i == id) {
            return Err(bad(format!("node {id} is listed twice")));
        }
        if out.iter().any(|(_, a)| *a == addr) {
            return Err(bad(format!("{addr} is listed twice")));
        }
        out.push((id, addr));
    }
    if out.is_empty() {
        return Err(ConfigError::MissingMembers);
    }
    Ok(out)
}

/// The client addresses named in a member list (`id=peer_addr/client_addr`), by id: what a
/// node tells clients so that they can find the leader.
pub fn parse_member_clients(text: &str) -> Result<BTreeMap<u64, SocketAddr>, ConfigError> {
    let mut out = BTreeMap::new();
    for (id, _, client) in member_items(text)? {
        if let Some(client) = client {
            out.insert(id, resolve(client)?);
        }
    }
    Ok(out)
}

/// One item of a member list: (id, peer address, client address if given).
type MemberItem<'a> = (u64, &'a str, Option<&'a str>);

/// The items of a member list.
fn member_items(text: &str) -> Result<Vec<MemberItem<'_>>, ConfigError> {
    let bad = |why: String| ConfigError::BadMembers(why);
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addrs) = item
            .split_once('=')
            .ok_or_else(|| bad(format!("`{item}` is not id=host:port")))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| bad(format!("`{id}` is not a node id")))?;
        if id == 0 {
            return Err(bad("node id 0 is reserved".into()));
        }
        let (peer, client) = match addrs.split_once('/') {
            Some((peer, client)) => (peer.trim(), Some(client.trim())),
            None => (addrs.trim(), None),
        };
        out.push((id, peer, client));
    }
    Ok(out)
}

fn resolve(addr: &str) -> Result<SocketAddr, ConfigError> {
    let bad = |why: String| ConfigError::BadMembers(why);
    addr.to_socket_addrs()
        .map_err(|e| bad(format!("`{addr}`: {e}")))?
        .next()
        .ok_or_else(|| bad(format!("`{addr}` resolves to no address")))
}

/// The cluster secret from exactly one of a value and a file (a file's trailing line break
/// is not part of it), at least [`SECRET_BYTES_MIN`] bytes.
pub fn load_secret(value: Option<&str>, file: Option<&Path>) -> Result<Vec<u8>, ConfigError> {
    let secret = match (value, file) {
        (Some(_), Some(_)) => return Err(ConfigError::TwoSecrets),
        (None, None) => return Err(ConfigError::MissingSecret),
        (Some(v), None) => v.as_bytes().to_vec(),
        (None, Some(path)) => {
            let mut bytes =
                fs::read(path).map_err(|e| ConfigError::SecretFile(path.to_path_buf(), e))?;
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            bytes
        }
    };
    if secret.is_empty() {
        return Err(ConfigError::MissingSecret);
    }
    if secret.len() < SECRET_BYTES_MIN {
        return Err(ConfigError::WeakSecret(secret.len()));
    }
    Ok(secret)
}

/// This node's id: the one in `data_dir/node-id` if there is one (a `flag` that differs is
/// an error), else `flag`, else a random one; a new id is written to the file (synced)
/// before it is used. Returns the id and whether it was generated now.
pub fn node_id(data_dir: &Path, flag: Option<u64>) -> Result<(u64, bool), ConfigError> {
    if flag == Some(0) {
        return Err(ConfigError::ZeroNodeId);
    }
    let path = data_dir.join(NODE_ID_FILE);
    let io = |e| ConfigError::NodeIdIo(path.clone(), e);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let file: u64 = text
                .trim()
                .parse()
                .map_err(|_| ConfigError::BadNodeIdFile(path.clone(), text.clone()))?;
            if file == 0 {
                return Err(ConfigError::ZeroNodeId);
            }
            match flag {
                Some(flag) if flag != file => Err(ConfigError::NodeIdMismatch {
                    flag,
                    file,
                    path: path.clone(),
                }),
                _ => Ok((file, false)),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (id, generated) = match flag {
                Some(id) => (id, false),
                None => (random_id(), true),
            };
            write_durably(data_dir, NODE_ID_FILE, &id.to_string())?;
            Ok((id, generated))
        }
        Err(e) => Err(io(e)),
    }
}

/// Writes `text` and a line break to `data_dir/name` so that it is there whole after a
/// crash, or not at all: a temporary file, synced, renamed, the directory synced.
pub(crate) fn write_durably(data_dir: &Path, name: &str, text: &str) -> Result<(), ConfigError> {
    let path = data_dir.join(name);
    let io = |e| ConfigError::NodeIdIo(path.clone(), e);
    fs::create_dir_all(data_dir).map_err(io)?;
    let tmp = data_dir.join(format!("{name}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(io)?;
    writeln!(f, "{text}").map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, &path).map_err(io)?;
    fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// A random id below 2^53 (so JSON readers that use doubles show it exactly), never 0.
fn random_id() -> u64 {
    (random_u64() % ((1 << 53) - 1)) + 1
}

/// Randomness from the standard library's per-process hash keys (the OS's random source):
/// enough for a node id or a Raft seed, with no dependency.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_and_bad_lists_are_refused() {
        let m = parse_members("1=127.0.0.1:7601, 2=127.0.0.1:7602,3=127.0.0.1:7603").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[1], (2, "127.0.0.1:7602".parse().unwrap()));
        for bad in [
            "1=127.0.0.1:7601,1=127.0.0.1:7602",
            "1=127.0.0.1:7601,2=127.0.0.1:7601",
            "0=127.0.0.1:7601",
            "x=127.0.0.1:7601",
            "1:127.0.0.1:7601",
            "1=nowhere",
        ] {
            assert!(parse_members(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            parse_members(" , "),
            Err(ConfigError::MissingMembers)
        ));
    }

    #[test]
    fn members_may_name_their_client_addresses() {
        let text = "1=127.0.0.1:7601/127.0.0.1:7611, 2=127.0.0.1:7602,3=127.0.0.1:7603/[::1]:7613";
        let peers = parse_members(text).unwrap();
        assert_eq!(peers[0], (1, "127.0.0.1:7601".parse().unwrap()));
        assert_eq!(peers.len(), 3);
        let clients = parse_member_clients(text).unwrap();
        assert_eq!(clients.len(), 2);
        assert_eq!(clients[&1], "127.0.0.1:7611".parse().unwrap());
        assert_eq!(clients[&3], "[::1]:7613".parse().unwrap());
        assert!(parse_member_clients("1=127.0.0.1:7601/nowhere").is_err());
    }

    #[test]
    fn the_secret_is_required_once_and_long_enough() {
        assert!(matches!(
            load_secret(None, None),
            Err(ConfigError::MissingSecret)
        ));
        assert!(matches!(
            load_secret(Some("short"), None),
            Err(ConfigError::WeakSecret(5))
        ));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        fs::write(&file, "0123456789abcdef\n").unwrap();
        assert_eq!(load_secret(None, Some(&file)).unwrap(), b"0123456789abcdef");
        assert!(matches!(
            load_secret(Some("0123456789abcdef"), Some(&file)),
            Err(ConfigError::TwoSecrets)
        ));
    }

    #[test]
    fn the_node_id_is_kept_and_a_disagreeing_flag_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        assert_eq!(node_id(&data, Some(7)).unwrap(), (7, false));
        assert_eq!(node_id(&data, None).unwrap(), (7, false));
        assert_eq!(node_id(&data, Some(7)).unwrap(), (7, false));
        assert!(matches!(
            node_id(&data, Some(8)),
            Err(ConfigError::NodeIdMismatch {
                flag: 8,
                file: 7,
                ..
            })
        ));
        let other = dir.path().join("other");
        let (id, generated) = node_id(&other, None).unwrap();
        assert!(generated && id != 0);
        assert_eq!(node_id(&other, None).unwrap(), (id, false));
        assert!(matches!(
            node_id(&dir.path().join("z"), Some(0)),
            Err(ConfigError::ZeroNodeId)
        ));
    }
}
