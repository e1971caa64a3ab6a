//! The relays compared with Stagecast under `wrangler dev`: the peers of `bench/peers/` and
//! the edge itself without the dev proxy (`bench/direct`), each started by its `run.sh`
//! and stopped with it.

use std::process::Command;
use std::time::Duration;

use stagecast_e2e::edge::{free_port, repo_root};
use stagecast_e2e::process::Process;

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

/// How long a peer gets to stop after SIGTERM before the rest of its group is SIGKILLed.
const PEER_STOP_GRACE: Duration = Duration::from_secs(3);

/// A peer (`spec.script`) in its own process group (bash and whatever it starts), stopped
/// as a group when dropped.
pub struct Peer {
    /// Stopped when dropped, before its log goes (fields drop in order).
    process: Process,
    pub target: Target,
    pub port: u16,
    _log: tempfile::NamedTempFile,
}

impl Peer {
    pub async fn start(spec: &PeerSpec) -> anyhow::Result<Peer> {
        let port = free_port();
        let mut args: Vec<String> = std::iter::once(port)
            .chain((0..spec.extra_ports).map(|_| free_port()))
            .map(|p| p.to_string())
            .collect();
        if spec.edge_vars {
            args.extend(EDGE_VARS.iter().map(|(k, v)| format!("{k}={v}")));
        }
        let log = tempfile::NamedTempFile::new()?;
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join(spec.script))
            .args(&args)
            .current_dir(repo_root());
        // SIGTERM first: redis, uvicorn and workerd get to clean up.
        let mut process = Process::spawn(&format!("the peer {}", spec.script), cmd, log.path())?
            .with_grace(PEER_STOP_GRACE);
        let target = Target::at(spec.name, port);
        process
            .wait_healthy(&format!("{}/healthz", target.http), PEER_START_TIMEOUT)
            .await?;
        Ok(Peer {
            process,
            target,
            port,
            _log: log,
        })
    }

    pub fn process_group(&self) -> i32 {
        self.process.pgid().expect("a running peer")
    }
}
