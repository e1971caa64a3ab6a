//! The peer relays under `bench/peers/`: starting them, running the same scenarios on them,
//! and the side-by-side tables.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use stagecast_e2e::edge::{free_port, repo_root};

use crate::latency::DRAIN_TIMEOUT;
use crate::latency::{Latency, latency, print_latency_row};
use crate::memory::{Memory, memory};
use crate::{Bench, Target, ms, quantile};

/// The peer's start, its first install included.
pub const PEER_START_TIMEOUT: Duration = Duration::from_secs(180);

/// A peer relay: its `run.sh`, started with the port to serve on followed by `extra_ports`
/// more free ports (for what it runs beside itself).
pub struct PeerSpec {
    pub name: &'static str,
    /// Relative to the repository root.
    pub script: &'static str,
    pub extra_ports: usize,
    /// Whether it runs in workerd, so `workerd_rss` can read its memory.
    pub workerd: bool,
    /// What it is, for the report.
    pub about: &'static str,
}

pub const PEERS: [PeerSpec; 2] = [
    PeerSpec {
        name: "FastAPI+Redis",
        script: "bench/peers/fastapi_redis/run.sh",
        extra_ports: 1,
        workerd: false,
        about: "`bench/peers/fastapi_redis`: FastAPI on uvicorn (1 worker, uvloop, httptools, websockets) with one Redis pub/sub connection per WebSocket and a local redis-server (no persistence)",
    },
    PeerSpec {
        name: "PartyServer",
        script: "bench/peers/partyserver/run.sh",
        extra_ports: 0,
        workerd: true,
        about: "`bench/peers/partyserver`: a PartyServer (npm `partyserver`) `Server` Durable Object per analysis, hibernating, with its history in the object's SQLite, routed by `routePartykitRequest` (prefix `v1`), in the same wrangler and workerd as the edge (`wrangler dev`, its own persist dir)",
    },
];

/// A peer (`spec.script`) in its own process group (bash and whatever it starts), killed as
/// a group when dropped.
pub struct Peer {
    pub child: Child,
    pub target: Target,
    pub port: u16,
    pub log: tempfile::NamedTempFile,
}

impl Peer {
    async fn start(http: &reqwest::Client, spec: &PeerSpec) -> anyhow::Result<Peer> {
        let port = free_port();
        let args: Vec<String> = std::iter::once(port)
            .chain((0..spec.extra_ports).map(|_| free_port()))
            .map(|p| p.to_string())
            .collect();
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

    fn process_group(&self) -> i32 {
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

/// One peer's latency rows (by subscriber count) and, for a workerd peer, its memory.
pub struct PeerRuns {
    pub spec: &'static PeerSpec,
    pub rows: Vec<(usize, anyhow::Result<Latency>)>,
    pub memory: Option<anyhow::Result<Memory>>,
}

/// The latency runs (and, in workerd, the memory run) against one peer, started here and
/// stopped after. A run that fails is reported (in the table, as its error) rather than
/// ending the bench.
pub async fn peer_runs(bench: &Bench, spec: &'static PeerSpec) -> PeerRuns {
    let starting = Instant::now();
    let peer = match Peer::start(&bench.http, spec).await {
        Ok(peer) => peer,
        Err(e) => {
            eprintln!("peer {}: {e:#}", spec.name);
            return PeerRuns {
                spec,
                rows: [1, 100, 1000]
                    .into_iter()
                    .map(|n| (n, Err(anyhow::anyhow!("the peer did not start: {e:#}"))))
                    .collect(),
                memory: spec
                    .workerd
                    .then(|| Err(anyhow::anyhow!("the peer did not start"))),
            };
        }
    };
    eprintln!("peer {} up in {:.1?}", spec.name, starting.elapsed());
    // As for the edge: memory first, on a peer that has served nothing else yet.
    let memory = if spec.workerd {
        eprintln!("peer {} memory", spec.name);
        let m = memory(bench, &peer.target, peer.process_group(), peer.port).await;
        if let Err(e) = &m {
            eprintln!("  peer {}, memory: {e:#}", spec.name);
        }
        Some(m)
    } else {
        None
    };
    let mut rows = Vec::new();
    for subscribers in [1, 100, 1000] {
        eprintln!("peer {} latency with {subscribers} subscribers", spec.name);
        let row = latency(bench, &peer.target, subscribers).await;
        if let Err(e) = &row {
            eprintln!("  peer {}, {subscribers} subscribers: {e:#}", spec.name);
        }
        rows.push((subscribers, row));
    }
    drop(peer);
    PeerRuns { spec, rows, memory }
}

pub fn print_side_by_side(stagecast: &[Latency], peers: &[PeerRuns]) {
    println!();
    println!("## Side by side: Stagecast and peer relays");
    println!();
    println!(
        "The same latency runs (same client code, same pacing, same {} s bound on each run's last arrivals) against each peer, started by this bench on the same cores after the Stagecast runs, one at a time. The peers verify no token and check no event beyond its id; see their READMEs.",
        DRAIN_TIMEOUT.as_secs()
    );
    println!();
    for peer in peers {
        println!("- {}: {}.", peer.spec.name, peer.spec.about);
    }
    println!();
    let mut header = String::from("| subscribers | Stagecast p50 / p99 / max (ms) |");
    let mut rule = String::from("|---:|---:|");
    for peer in peers {
        let name = peer.spec.name;
        header += &format!(" {name} p50 / p99 / max (ms) | p99 ratio ({name} / Stagecast) |");
        rule += "---:|---:|";
    }
    header += " pairs missing: Stagecast |";
    rule += "---:|";
    for peer in peers {
        header += &format!(" pairs missing: {} |", peer.spec.name);
        rule += "---:|";
    }
    println!("{header}");
    println!("{rule}");
    let cell = |r: &Latency| {
        format!(
            "{} / {} / {}",
            ms(quantile(&r.samples, 0.5)),
            ms(quantile(&r.samples, 0.99)),
            ms(r.samples.last().copied().unwrap_or(0))
        )
    };
    for subscribers in [1, 100, 1000] {
        let ours = stagecast.iter().find(|r| r.subscribers == subscribers);
        let mut line = format!("| {subscribers} | {} |", ours.map_or("-".into(), cell));
        let mut missing = format!(" {} |", ours.map_or("-".into(), |r| r.missing.to_string()));
        for peer in peers {
            match peer
                .rows
                .iter()
                .find(|(n, _)| *n == subscribers)
                .map(|(_, r)| r)
            {
                Some(Ok(theirs)) => {
                    let ratio = match ours {
                        Some(o) if !o.samples.is_empty() && !theirs.samples.is_empty() => {
                            format!(
                                "{:.1}x",
                                quantile(&theirs.samples, 0.99) as f64
                                    / quantile(&o.samples, 0.99).max(1) as f64
                            )
                        }
                        _ => "-".into(),
                    };
                    line += &format!(" {} | {ratio} |", cell(theirs));
                    missing += &format!(
                        " {} of {} |",
                        theirs.missing,
                        theirs.subscribers * theirs.published
                    );
                }
                Some(Err(e)) => {
                    line += &format!(" failed: {} | - |", format!("{e:#}").replace('|', "/"));
                    missing += " - |";
                }
                None => {
                    line += " - | - |";
                    missing += " - |";
                }
            }
        }
        println!("{line}{missing}");
    }
    for peer in peers {
        println!();
        println!(
            "{}'s own runs, in the layout of the latency table above:",
            peer.spec.name
        );
        println!();
        println!(
            "| subscribers | connect all (s) | events published | pairs received | pairs missing | p50 (ms) | p99 (ms) | max (ms) | publish round trip p50 (ms) |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in peer.rows.iter().filter_map(|(_, r)| r.as_ref().ok()) {
            print_latency_row(r);
        }
    }
}
