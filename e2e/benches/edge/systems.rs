//! Every relay gets the same runs, by the same code: memory, latency, throughput, resume.

use crate::latency::{Latency, latency};
use crate::memory::{Memory, memory};
use crate::resume::{Resume, resume};
use crate::throughput::{Over, Throughput, throughput};
use crate::{Bench, Target};

/// Subscriber counts of the latency runs.
pub const SUBSCRIBERS: [usize; 3] = [1, 100, 1000];
/// Throughput runs: label, analyses, concurrent publishers, events per batch.
pub const THROUGHPUTS: [(&str, usize, usize, usize); 5] = [
    ("sequential", 1, 1, 1),
    ("8 concurrent, one analysis", 1, 8, 1),
    ("8 concurrent, 8 analyses", 8, 8, 1),
    ("sequential", 1, 1, 100),
    ("8 concurrent, one analysis", 1, 8, 100),
];

/// A relay under test: where it listens and which of its processes hold its memory.
pub struct System<'a> {
    pub target: &'a Target,
    pub pgid: i32,
    pub port: u16,
    pub processes: &'static [&'static str],
}

/// What one relay measured; a run that failed holds its error, for the tables.
pub struct Runs {
    pub name: &'static str,
    pub memory: anyhow::Result<Memory>,
    pub latency: Vec<(usize, anyhow::Result<Latency>)>,
    pub throughput: Vec<anyhow::Result<Throughput>>,
    pub resume: anyhow::Result<Resume>,
}

impl Runs {
    /// Every run failed with `why` (the relay did not start).
    pub fn failed(name: &'static str, why: &str) -> Runs {
        fn e<T>(why: &str) -> anyhow::Result<T> {
            Err(anyhow::anyhow!("{why}"))
        }
        Runs {
            name,
            memory: e(why),
            latency: SUBSCRIBERS.iter().map(|n| (*n, e(why))).collect(),
            throughput: THROUGHPUTS.iter().map(|_| e(why)).collect(),
            resume: e(why),
        }
    }

    pub fn latency_with(&self, subscribers: usize) -> Option<&anyhow::Result<Latency>> {
        self.latency
            .iter()
            .find(|(n, _)| *n == subscribers)
            .map(|(_, r)| r)
    }
}

/// The throughput runs again, each publisher on its own publish socket: Stagecast's node
/// path, which no peer has.
pub async fn socket_throughput(bench: &Bench, target: &Target) -> Vec<anyhow::Result<Throughput>> {
    let mut rows = Vec::new();
    for (label, analyses, publishers, batch) in THROUGHPUTS {
        eprintln!(
            "{}: throughput over publish sockets, {label}, batches of {batch}",
            target.name
        );
        let r = throughput(
            bench,
            target,
            label,
            analyses,
            publishers,
            batch,
            Over::Socket,
        )
        .await;
        if let Err(e) = &r {
            eprintln!("  {e:#}");
        }
        rows.push(r);
    }
    rows
}

/// Runs everything against `system`, memory first (on a relay that has served nothing
/// else yet), logging each step and each failure on stderr.
pub async fn measure(bench: &Bench, system: &System<'_>) -> Runs {
    let name = system.target.name;
    fn logged<T>(name: &str, what: &str, r: anyhow::Result<T>) -> anyhow::Result<T> {
        if let Err(e) = &r {
            eprintln!("  {name}, {what}: {e:#}");
        }
        r
    }
    eprintln!(
        "{name}: memory per {} idle sockets",
        crate::memory::IDLE_SOCKETS
    );
    let memory = logged(
        name,
        "memory",
        memory(
            bench,
            system.target,
            system.pgid,
            system.port,
            system.processes,
        )
        .await,
    );
    let mut latencies = Vec::new();
    for subscribers in SUBSCRIBERS {
        eprintln!("{name}: latency with {subscribers} subscribers");
        let r = latency(bench, system.target, subscribers).await;
        latencies.push((
            subscribers,
            logged(name, &format!("{subscribers} subscribers"), r),
        ));
    }
    let mut throughputs = Vec::new();
    for (label, analyses, publishers, batch) in THROUGHPUTS {
        eprintln!("{name}: throughput, {label}, batches of {batch}");
        let r = throughput(
            bench,
            system.target,
            label,
            analyses,
            publishers,
            batch,
            Over::Http,
        )
        .await;
        throughputs.push(logged(name, &format!("throughput {label}"), r));
    }
    eprintln!("{name}: reconnect and resume");
    let resume = logged(name, "resume", resume(bench, system.target).await);
    Runs {
        name,
        memory,
        latency: latencies,
        throughput: throughputs,
        resume,
    }
}
