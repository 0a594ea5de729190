//! The Docker backend: the same faults as [`crate::control`], applied to the compose cluster
//! of `examples/docker/compose.cluster.yml` through the `docker` and Compose command lines.
//!
//! [`DockerCluster::start`] writes, under the run's directory, that compose file (built into
//! this crate), an override that sets the cluster size and each node's id and adds services
//! beyond the file's three, and an environment file with a fresh random token and cluster
//! secret; it then runs `compose up -d` under a project of its own
//! (`quiver-jepsen-PID-K`), so it never touches a cluster started with
//! `examples/docker/compose.sh`. Faults come from outside the containers: `docker kill`
//! (SIGKILL), `docker start` (the volume kept), `docker pause` / `unpause` (the cgroup
//! freezer), `docker network disconnect` / `connect` (the node loses every peer and every
//! client at once). Dropping the [`DockerCluster`] runs `compose down -v` and then removes
//! whatever still carries the project's label: containers, network, volumes.
//!
//! Addresses are the containers' IPs on the compose network, which a Linux host reaches
//! directly; they can change when a container is started again or reconnected, so
//! [`DockerCluster::client`] must be asked again after [`DockerCluster::start_node`] and
//! [`DockerCluster::heal`]. `docs/CONSISTENCY.md` ("Docker backend") says what was learned.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use quiver_server::cluster::{status_cli, ClusterStatus};

use crate::nemesis::Rng;

/// The compose file of the 3-node cluster, as the repository has it.
const COMPOSE_FILE: &str = include_str!("../../examples/docker/compose.cluster.yml");
/// Services the compose file defines (`quiver1` to `quiver3`); more are added by override.
const COMPOSE_SERVICES: u64 = 3;
/// The ports inside every container.
const CLIENT_PORT: u16 = 7600;
const HTTP_PORT: u16 = 7602;
/// Bounds on the command lines: `compose up` (creating a network, volumes, containers),
/// one `docker` command, a status asked inside a container, `compose down`.
const UP_LIMIT: Duration = Duration::from_secs(180);
const COMMAND_LIMIT: Duration = Duration::from_secs(60);
const EXEC_STATUS_LIMIT: Duration = Duration::from_secs(3);
const DOWN_LIMIT: Duration = Duration::from_secs(90);
/// The bound on everything [`DockerCluster`]'s `drop` does.
const DROP_LIMIT: Duration = Duration::from_secs(150);

/// Projects started by this process so far (two clusters of one process never share one).
static PROJECTS: AtomicU64 = AtomicU64::new(0);

/// One container of the cluster, and what the harness did to it.
struct DockerNode {
    id: u64,
    container: String,
    service: String,
    /// Its IP on the compose network when last looked at (kept while it is stopped or
    /// disconnected: the address clients last had).
    ip: IpAddr,
    running: bool,
    paused: bool,
    isolated: bool,
}

/// A compose cluster of Quiver containers under a project of its own; see the module
/// documentation. Removed, with its volumes, when dropped.
pub struct DockerCluster {
    project: String,
    network: String,
    root: PathBuf,
    files: Vec<PathBuf>,
    env_file: PathBuf,
    compose: Vec<String>,
    image: String,
    token: String,
    nodes: Vec<DockerNode>,
}

impl DockerCluster {
    /// Starts the compose cluster of `n` nodes (1 to 64; 3 and 5 are the ones tested) from
    /// `image`, its files under `root`, the node ids drawn from `seed`. Returns once `compose
    /// up` has started the containers: the caller waits for a leader (the nodes find each
    /// other by discovery, which takes a few seconds). Blocking work runs on tokio's
    /// blocking pool, so this must be called inside a tokio runtime.
    pub async fn start(image: &str, n: u64, root: &Path, seed: u64) -> Result<DockerCluster> {
        let image = image.to_string();
        let root = root.to_path_buf();
        tokio::task::spawn_blocking(move || DockerCluster::start_blocking(&image, n, &root, seed))
            .await
            .context("the task starting the Docker cluster failed")?
    }

    fn start_blocking(image: &str, n: u64, root: &Path, seed: u64) -> Result<DockerCluster> {
        anyhow::ensure!(
            (1..=64).contains(&n),
            "a cluster has 1 to 64 nodes, not {n}"
        );
        run(
            Command::new("docker").args(["image", "inspect", image]),
            COMMAND_LIMIT,
        )
        .with_context(|| {
            format!(
                "no image {image} (or no Docker engine): build it with \
                 `QUIVER_IMAGE={image} examples/docker/build.sh`"
            )
        })?;
        let compose = compose_program()?;
        let project = format!(
            "quiver-jepsen-{}-{}",
            std::process::id(),
            PROJECTS.fetch_add(1, Ordering::Relaxed)
        );
        std::fs::create_dir_all(root).with_context(|| format!("{}", root.display()))?;
        let base = root.join("compose.cluster.yml");
        std::fs::write(&base, COMPOSE_FILE)?;
        let env_file = root.join("cluster.env");
        let token = random_hex()?;
        write_private(
            &env_file,
            &format!(
                "# Written by quiver-jepsen for the project {project}; removed with it.\n\
                 QUIVER_TOKEN={token}\nQUIVER_CLUSTER_SECRET={}\n",
                random_hex()?
            ),
        )?;
        let ids = node_ids(n, seed);
        let over = root.join("compose.override.yml");
        std::fs::write(&over, override_file(image, &project, &env_file, &ids))?;
        let nodes = ids
            .iter()
            .enumerate()
            .map(|(i, id)| DockerNode {
                id: *id,
                container: format!("{project}-{}", i + 1),
                service: format!("quiver{}", i + 1),
                ip: IpAddr::from([0, 0, 0, 0]),
                running: false,
                paused: false,
                isolated: false,
            })
            .collect();
        // Built before anything is created, so that a failure from here on still removes
        // whatever was.
        let mut cluster = DockerCluster {
            network: format!("{project}_quiver"),
            project,
            root: root.to_path_buf(),
            files: vec![base, over],
            env_file,
            compose,
            image: image.to_string(),
            token,
            nodes,
        };
        let services: Vec<String> = cluster.nodes.iter().map(|n| n.service.clone()).collect();
        run(
            cluster.compose_cmd().args(["up", "-d"]).args(&services),
            UP_LIMIT,
        )
        .context("compose up")?;
        for i in 0..cluster.nodes.len() {
            cluster.nodes[i].running = true;
            cluster.refresh(i)?;
        }
        Ok(cluster)
    }

    /// The Compose command line of this project, with the variables its files read.
    fn compose_cmd(&self) -> Command {
        let mut cmd = Command::new(&self.compose[0]);
        cmd.args(&self.compose[1..]);
        for f in &self.files {
            cmd.arg("-f").arg(f);
        }
        cmd.args(["-p", &self.project])
            .env("QUIVER_IMAGE", &self.image)
            .env("QUIVER_ENV_FILE", &self.env_file)
            .env("QUIVER_NAME", format!("{}-", self.project));
        // Empty: Docker picks the host ports (nothing here uses them; they only must not
        // collide with a cluster someone runs).
        for i in 1..=COMPOSE_SERVICES {
            cmd.env(format!("QUIVER{i}_CLIENT_PORT"), "")
                .env(format!("QUIVER{i}_HTTP_PORT"), "");
        }
        cmd
    }

    fn index(&self, id: u64) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    fn node(&self, id: u64) -> &DockerNode {
        &self.nodes[self.index(id)]
    }

    /// Reads container `i`'s IP on the cluster network again (after a start or a connect).
    fn refresh(&mut self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        let out = run(
            Command::new("docker").args([
                "inspect",
                "-f",
                "{{json .NetworkSettings.Networks}}",
                &node.container,
            ]),
            COMMAND_LIMIT,
        )?;
        let networks: serde_json::Value = serde_json::from_str(out.trim())
            .with_context(|| format!("docker inspect {}: {out}", node.container))?;
        let ip = networks[&self.network]["IPAddress"]
            .as_str()
            .filter(|s| !s.is_empty())
            .with_context(|| format!("{} has no address on {}", node.container, self.network))?;
        self.nodes[i].ip = ip
            .parse()
            .with_context(|| format!("{} has the address {ip:?}", node.container))?;
        Ok(())
    }

    /// `docker VERB container` for node `id`.
    fn docker(&self, verb: &str, id: u64) -> Result<String> {
        run(
            Command::new("docker").args([verb, &self.node(id).container]),
            COMMAND_LIMIT,
        )
    }

    /// The node ids, in container order (`PROJECT-1` first). They are drawn from the seed
    /// (below 2^53, never 0, like the ids a node draws for itself) and given to each
    /// container as `QUIVER_NODE_ID`, so a seed gives the same ids every run; each node's
    /// `/status` reports the same `node_id`.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Node `id`'s client (QUIC) address: its container's IP on the compose network, port
    /// 7600, which a Linux host reaches through the bridge (the same addresses a follower's
    /// redirect names). The IP can change when the container is started again or
    /// reconnected: ask again after [`DockerCluster::start_node`] and
    /// [`DockerCluster::heal`].
    pub fn client(&self, id: u64) -> SocketAddr {
        SocketAddr::new(self.node(id).ip, CLIENT_PORT)
    }

    /// The CA the nodes' certificates chain to (every node's generated one derives from the
    /// cluster secret), copied out of a running container into `ROOT/ca.pem` the first time
    /// it is asked for and there. A node generates it when it starts serving, after the
    /// cluster formed: ask once a leader is known (before that the path may not exist yet).
    pub fn ca(&self) -> PathBuf {
        let path = self.root.join("ca.pem");
        if !path.exists() {
            for node in self.nodes.iter().filter(|n| n.running) {
                let from = format!("{}:/data/tls/ca.pem", node.container);
                let copied = run(
                    Command::new("docker").arg("cp").arg(&from).arg(&path),
                    COMMAND_LIMIT,
                );
                if copied.is_ok() && path.exists() {
                    break;
                }
            }
        }
        path
    }

    /// The client token: the compose file's nodes listen beyond loopback, so they require
    /// one; it is drawn at random for each cluster. Always `Some`.
    pub fn token(&self) -> Option<String> {
        Some(self.token.clone())
    }

    /// `docker kill` (SIGKILL): no shutdown path runs. A paused node is unpaused first.
    /// The container stays, with its volume, until [`DockerCluster::start_node`].
    pub fn kill(&mut self, id: u64) {
        if !self.node(id).running {
            return;
        }
        self.pause(id, false);
        if let Err(e) = self.docker("kill", id) {
            warn(&e);
        }
        let i = self.index(id);
        self.nodes[i].running = false;
    }

    /// `docker start`: node `id` again, with its volume (its data, node id and membership).
    /// A node isolated when it was killed comes back isolated (no network) until
    /// [`DockerCluster::heal`].
    pub fn start_node(&mut self, id: u64) -> Result<()> {
        let i = self.index(id);
        anyhow::ensure!(!self.nodes[i].running, "node {id} is running");
        self.docker("start", id)?;
        self.nodes[i].running = true;
        self.nodes[i].paused = false;
        if !self.nodes[i].isolated {
            self.refresh(i)?;
        }
        Ok(())
    }

    /// `docker pause` (`true`: every process of the container frozen, its sockets open) or
    /// `docker unpause` (`false`). Nothing happens to a node that is not running.
    pub fn pause(&mut self, id: u64, stop: bool) {
        let i = self.index(id);
        let node = &self.nodes[i];
        if !node.running || node.paused == stop {
            return;
        }
        match self.docker(if stop { "pause" } else { "unpause" }, id) {
            Ok(_) => self.nodes[i].paused = stop,
            Err(e) => warn(&e),
        }
    }

    /// Whether node `id` runs (paused or not), as the harness left it.
    pub fn running(&self, id: u64) -> bool {
        self.node(id).running
    }

    /// Node `id`'s cluster status, within about 1 s: from its HTTP endpoint (the container's
    /// IP, port 7602), or, while it is isolated (the host cannot reach it either), from
    /// `quiver cluster status --timeout 1` run inside its container (`docker exec` adds
    /// about 0.1 s). `None` when it is not running, is
    /// paused, or does not answer.
    pub fn status(&self, id: u64) -> Option<ClusterStatus> {
        let node = self.node(id);
        if !node.running || node.paused {
            return None;
        }
        if !node.isolated {
            let http = SocketAddr::new(node.ip, HTTP_PORT);
            return status_cli::fetch(http, Duration::from_secs(1)).ok();
        }
        let out = run(
            Command::new("docker").args([
                "exec",
                &node.container,
                "/quiver",
                "cluster",
                "status",
                "--http",
                "127.0.0.1:7602",
                "--json",
                "--timeout",
                "1",
            ]),
            EXEC_STATUS_LIMIT,
        )
        .ok()?;
        serde_json::from_str(&out).ok()
    }

    /// `docker network disconnect`: node `id` leaves the compose network, so it reaches no
    /// peer and no client reaches it (its process runs on, with only its loopback).
    pub fn isolate(&mut self, id: u64) -> Result<()> {
        let i = self.index(id);
        if self.nodes[i].isolated {
            return Ok(());
        }
        run(
            Command::new("docker").args([
                "network",
                "disconnect",
                &self.network,
                &self.nodes[i].container,
            ]),
            COMMAND_LIMIT,
        )?;
        self.nodes[i].isolated = true;
        Ok(())
    }

    /// `docker network connect` for every isolated node. Each may come back with another IP
    /// (even another node's former one); the others learn it from its discovery
    /// announcements.
    pub fn heal(&mut self) -> Result<()> {
        let mut failed = Vec::new();
        for i in 0..self.nodes.len() {
            if !self.nodes[i].isolated {
                continue;
            }
            let connected = run(
                Command::new("docker").args([
                    "network",
                    "connect",
                    &self.network,
                    &self.nodes[i].container,
                ]),
                COMMAND_LIMIT,
            );
            match connected {
                Ok(_) => {
                    self.nodes[i].isolated = false;
                    if self.nodes[i].running {
                        if let Err(e) = self.refresh(i) {
                            failed.push(format!("{e:#}"));
                        }
                    }
                }
                Err(e) => failed.push(format!("{e:#}")),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("healing: {}", failed.join("; "))
        }
    }

    /// Each container's log (`docker logs`, every restart of it) into `dir/nID.log`.
    pub fn save_logs(&self, dir: &Path) {
        if let Err(e) = std::fs::create_dir_all(dir) {
            warn(&anyhow::anyhow!("{}: {e}", dir.display()));
            return;
        }
        for node in &self.nodes {
            let path = dir.join(format!("n{}.log", node.id));
            let saved = std::fs::File::create(&path)
                .and_then(|f| Ok((f.try_clone()?, f)))
                .map_err(anyhow::Error::from)
                .and_then(|(out, err)| {
                    run_to(
                        Command::new("docker").args(["logs", &node.container]),
                        Stdio::from(out),
                        Stdio::from(err),
                        COMMAND_LIMIT,
                    )
                });
            if let Err(e) = saved {
                warn(&e.context(format!("saving the log of {}", node.container)));
            }
        }
    }
}

impl Drop for DockerCluster {
    /// `compose down -v` (containers, network and volumes); then whatever still carries the
    /// project's label is removed directly; then the environment file. Every command is
    /// bounded, and all of them together by `DROP_LIMIT` (150 s).
    fn drop(&mut self) {
        let deadline = Instant::now() + DROP_LIMIT;
        let left = |limit: Duration| {
            limit
                .min(deadline.saturating_duration_since(Instant::now()))
                .max(Duration::from_secs(1))
        };
        // Unfrozen first: Compose stops containers before removing them.
        for node in self.nodes.iter().filter(|n| n.running && n.paused) {
            let cmd = &mut Command::new("docker");
            if let Err(e) = run(cmd.args(["unpause", &node.container]), left(COMMAND_LIMIT)) {
                warn(&e);
            }
        }
        if self.files.iter().all(|f| f.exists()) && self.env_file.exists() {
            let down = run(
                self.compose_cmd()
                    .args(["down", "-v", "--remove-orphans", "--timeout", "5"]),
                left(DOWN_LIMIT),
            );
            if let Err(e) = down {
                warn(&e);
            }
        }
        let label = format!("label=com.docker.compose.project={}", self.project);
        for (list, remove) in [
            (&["ps", "-aq"][..], &["rm", "-f", "-v"][..]),
            (&["network", "ls", "-q"][..], &["network", "rm"][..]),
            (&["volume", "ls", "-q"][..], &["volume", "rm", "-f"][..]),
        ] {
            let cmd = &mut Command::new("docker");
            let found = run(
                cmd.args(list).args(["--filter", &label]),
                left(COMMAND_LIMIT),
            );
            let found: Vec<String> = match found {
                Ok(out) => out.split_whitespace().map(str::to_string).collect(),
                Err(e) => {
                    warn(&e);
                    continue;
                }
            };
            if !found.is_empty() {
                let cmd = &mut Command::new("docker");
                if let Err(e) = run(cmd.args(remove).args(&found), left(COMMAND_LIMIT)) {
                    warn(&e);
                }
            }
        }
        let _ = std::fs::remove_file(&self.env_file);
    }
}

/// `docker compose` (v2) when this machine has it, else `docker-compose` (v1).
fn compose_program() -> Result<Vec<String>> {
    let v2 = run(
        Command::new("docker").args(["compose", "version"]),
        COMMAND_LIMIT,
    );
    if v2.is_ok() {
        return Ok(vec!["docker".into(), "compose".into()]);
    }
    run(Command::new("docker-compose").arg("version"), COMMAND_LIMIT)
        .context("neither `docker compose` nor `docker-compose` runs")?;
    Ok(vec!["docker-compose".into()])
}

/// `n` distinct node ids from `seed`, in 1..2^53.
fn node_ids(n: u64, seed: u64) -> Vec<u64> {
    let mut rng = Rng::new(seed ^ 0x646F_636B_6572_6964);
    let mut ids = Vec::new();
    let mut seen = BTreeSet::new();
    while ids.len() < n as usize {
        let id = rng.next_u64() % ((1 << 53) - 1) + 1;
        if seen.insert(id) {
            ids.push(id);
        }
    }
    ids
}

/// The override merged on top of the compose file: every service told the cluster size and
/// its node id, and the services beyond the file's three written out in full (the same
/// settings as the file's, host ports picked by Docker).
fn override_file(image: &str, project: &str, env_file: &Path, ids: &[u64]) -> String {
    // JSON strings are YAML strings: paths and names quoted whatever they hold.
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let size = ids.len();
    let command = format!(r#"["serve", "--db-type", "cluster", "--cluster-size", "{size}"]"#);
    let mut out = String::from(
        "# Written by quiver-jepsen (jepsen/src/docker.rs), merged on top of compose.cluster.yml.\n\
         version: \"3.8\"\nservices:\n",
    );
    let mut volumes = String::new();
    for (i, id) in ids.iter().enumerate() {
        let k = i + 1;
        out += &format!(
            "  quiver{k}:\n    command: {command}\n    environment:\n      \
             QUIVER_NODE_ID: \"{id}\"\n      NO_COLOR: \"1\"\n"
        );
        if k as u64 > COMPOSE_SERVICES {
            out += &format!(
                "    image: {image}\n    env_file: {env}\n    networks: [quiver]\n    \
                 stop_grace_period: 30s\n    restart: \"no\"\n    container_name: {name}\n    \
                 volumes: [\"quiver{k}-data:/data\"]\n    \
                 ports: [\"127.0.0.1::7600/udp\", \"127.0.0.1::7602\"]\n",
                image = q(image),
                env = q(&env_file.to_string_lossy()),
                name = q(&format!("{project}-{k}")),
            );
            volumes += &format!("  quiver{k}-data: {{}}\n");
        }
    }
    if !volumes.is_empty() {
        out += "volumes:\n";
        out += &volumes;
    }
    out
}

/// 32 random bytes as 64 hex digits (no character an environment file treats specially).
fn random_hex() -> Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `text` to `path`, readable by its owner only (it holds the token and secret).
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("{}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn warn(e: &anyhow::Error) {
    eprintln!("docker backend: {e:#}");
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd`, killing it after `limit`; its stdout when it exits 0, else an error with
/// its stderr.
fn run(cmd: &mut Command, limit: Duration) -> Result<String> {
    let what = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{what}`"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let status = wait(&mut child, limit).with_context(|| format!("`{what}`"))?;
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        bail!("`{what}` failed ({status}): {}", stderr.trim());
    }
    Ok(stdout)
}

/// Runs `cmd` with its output sent to `stdout` and `stderr`, killing it after `limit`.
fn run_to(cmd: &mut Command, stdout: Stdio, stderr: Stdio, limit: Duration) -> Result<()> {
    let what = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting `{what}`"))?;
    let status = wait(&mut child, limit).with_context(|| format!("`{what}`"))?;
    anyhow::ensure!(status.success(), "`{what}` failed ({status})");
    Ok(())
}

/// Waits for `child` at most `limit`, then kills it.
fn wait(child: &mut std::process::Child, limit: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("no end within {limit:?}: killed");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_nonzero_and_fixed_by_the_seed() {
        let a = node_ids(5, 7);
        assert_eq!(a, node_ids(5, 7));
        assert_ne!(a, node_ids(5, 8));
        assert_eq!(a.iter().collect::<BTreeSet<_>>().len(), 5);
        assert!(a.iter().all(|id| (1..1 << 53).contains(id)));
    }

    #[test]
    fn the_override_adds_services_beyond_three() {
        let text = override_file(
            "quiver:jepsen",
            "p",
            Path::new("/r/cluster.env"),
            &[1, 2, 3, 4, 5],
        );
        assert!(text.contains("--cluster-size\", \"5\""));
        assert!(text.contains("QUIVER_NODE_ID: \"5\""));
        assert!(text.contains("  quiver5:\n"));
        assert!(text.contains("container_name: \"p-5\""));
        assert!(text.contains("  quiver4-data: {}\n"));
        let three = override_file(
            "quiver:jepsen",
            "p",
            Path::new("/r/cluster.env"),
            &[1, 2, 3],
        );
        assert!(!three.contains("volumes:") && !three.contains("image:"));
    }
}
