//! The relays compared with Stagecast under `wrangler dev`: the peers of `bench/peers/` and
//! the edge itself without the dev proxy (`bench/direct`), each started by its `run.sh`
//! and stopped with it.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use stagecast_e2e::edge::{free_port, repo_root};

use crate::{EDGE_VARS, Target};

/// The peer's start, its first install included.
pub const PEER_START_TIMEOUT: Duration = Duration::from_secs(180);

/// A peer relay: its `run.sh`, started with the port to serve on followed by `extra_ports`
/// more free ports (for what it runs beside itself).
pub struct PeerSpec {
    pub name: &'static str,
    /// Relative to the repository root.
    pub script: &'static str,
    pub extra_ports: usize,
    /// Names of its processes whose memory counts.
    pub processes: &'static [&'static str],
    /// Whether it is the edge itself, to be given the edge's vars as `NAME=VALUE` arguments.
    pub edge_vars: bool,
    /// What it is, for the report.
    pub about: &'static str,
}

pub const PEERS: [PeerSpec; 3] = [
    PeerSpec {
        name: "Stagecast, one workerd",
        script: "bench/direct/run.sh",
        extra_ports: 0,
        processes: &["workerd"],
        edge_vars: true,
        about: "the same built Worker in one workerd through Miniflare, without wrangler dev's dev-proxy workerd (`bench/direct`): what Cloudflare runs, minus the network",
    },
    PeerSpec {
        name: "FastAPI+Redis",
        script: "bench/peers/fastapi_redis/run.sh",
        extra_ports: 1,
        processes: &["uvicorn", "redis-server"],
        edge_vars: false,
        about: "`bench/peers/fastapi_redis`: FastAPI on uvicorn (1 worker, uvloop, httptools, websockets) with one Redis pub/sub connection per WebSocket and a local redis-server (no persistence)",
    },
    PeerSpec {
        name: "PartyServer",
        script: "bench/peers/partyserver/run.sh",
        extra_ports: 0,
        processes: &["workerd"],
        edge_vars: false,
        about: "`bench/peers/partyserver`: a PartyServer (npm `partyserver`) `Server` Durable Object per analysis, hibernating, with its history in the object's SQLite, routed by `routePartykitRequest` (prefix `v1`), in the same wrangler and workerd as the edge (`wrangler dev`, its own persist dir)",
    },
];

/// A peer (`spec.script`) in its own process group (bash and whatever it starts), killed as
/// a group when dropped.
pub struct Peer {
    child: Child,
    pub target: Target,
    pub port: u16,
    log: tempfile::NamedTempFile,
}

impl Peer {
    pub async fn start(http: &reqwest::Client, spec: &PeerSpec) -> anyhow::Result<Peer> {
        let port = free_port();
        let mut args: Vec<String> = std::iter::once(port)
            .chain((0..spec.extra_ports).map(|_| free_port()))
            .map(|p| p.to_string())
            .collect();
        if spec.edge_vars {
            args.extend(EDGE_VARS.iter().map(|(k, v)| format!("{k}={v}")));
        }
        let log = tempfile::NamedTempFile::new()?;
        let child = Command::new("bash")
            .arg(repo_root().join(spec.script))
            .args(&args)
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(log.reopen()?)
            .stderr(log.reopen()?)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", spec.script))?;
        let mut peer = Peer {
            child,
            target: Target::at(spec.name, port),
            port,
            log,
        };
        let deadline = Instant::now() + PEER_START_TIMEOUT;
        let url = format!("{}/healthz", peer.target.http);
        loop {
            if let Ok(Some(status)) = peer.child.try_wait() {
                bail!("the peer exited with {status}: {}", peer.log_text());
            }
            if http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(peer);
            }
            if Instant::now() > deadline {
                bail!(
                    "the peer did not answer within {PEER_START_TIMEOUT:?}: {}",
                    peer.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn process_group(&self) -> i32 {
        self.child.id() as i32
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) on the process group this bench started; no memory is touched.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above; whatever ignored SIGTERM (redis, uvicorn, workerd) goes now.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}
