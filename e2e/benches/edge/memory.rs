//! Resident memory of a relay's processes as idle sockets open and close.

use std::time::Duration;

use anyhow::bail;
use stagecast_e2e::host::{Rss, group_rss};

use crate::{Bench, Target};

/// Idle sockets of the memory measurement.
pub const IDLE_SOCKETS: usize = 1000;
/// Time for workerd to settle before its memory is read.
pub const SETTLE: Duration = Duration::from_secs(3);

pub struct Memory {
    /// The processes counted, e.g. "2 workerd".
    pub processes: String,
    pub baseline: Rss,
    pub one_analysis: Rss,
    pub ten_analyses: Rss,
    pub after_close: Rss,
    pub pending_hello_bytes: usize,
}

/// Memory of the processes named `names` in process group `pgid` (the relay serving `edge`
/// on `port`) as idle sockets are opened and closed.
pub async fn memory(
    bench: &Bench,
    edge: &Target,
    pgid: i32,
    port: u16,
    names: &[&str],
) -> anyhow::Result<Memory> {
    let rss = || group_rss(pgid, port, names);
    // Warm up: one analysis with a publish and a socket, so the isolate and the object
    // code are loaded before the baseline.
    bench.start_analysis(edge, "mem-warm").await?;
    drop(bench.open_sockets(edge, "mem-warm", 1).await?);
    tokio::time::sleep(SETTLE).await;
    let (baseline, count) = rss();
    if count == 0 {
        bail!("no {names:?} process in process group {pgid}");
    }
    eprintln!("memory: {IDLE_SOCKETS} idle sockets to one analysis");
    let one = bench.open_sockets(edge, "mem-one", IDLE_SOCKETS).await?;
    let pending_hello_bytes = one[0].1;
    tokio::time::sleep(SETTLE).await;
    let (one_analysis, _) = rss();
    eprintln!("memory: {IDLE_SOCKETS} more over 10 analyses");
    let mut ten = Vec::new();
    for a in 0..10 {
        ten.extend(
            bench
                .open_sockets(edge, &format!("mem-ten-{a}"), IDLE_SOCKETS / 10)
                .await?,
        );
    }
    tokio::time::sleep(SETTLE).await;
    let (ten_analyses, _) = rss();
    let close_all = one.into_iter().chain(ten).map(|(mut ws, _)| async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
    });
    futures_util::future::join_all(close_all).await;
    tokio::time::sleep(SETTLE).await;
    let (after_close, _) = rss();
    Ok(Memory {
        processes: format!("{count} {}", names.join("/")),
        baseline,
        one_analysis,
        ten_analyses,
        after_close,
        pending_hello_bytes,
    })
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// MiB per 1000 sockets from `before` to `after` (KiB), `IDLE_SOCKETS` sockets apart.
pub fn per_1000_mib(before: u64, after: u64) -> f64 {
    (after as f64 - before as f64) / 1024.0 * 1000.0 / IDLE_SOCKETS as f64
}

fn per_1000(before: u64, after: u64) -> String {
    format!("{:.1}", per_1000_mib(before, after))
}

pub fn print_memory(title: &str, m: &Memory) {
    println!();
    println!("## {title}");
    println!();
    println!(
        "VmRSS of the relay's processes ({}) in its process group, read {} s after the last socket opened (each socket has read its hello and then stays idle). `wrangler dev` runs two workerd: a dev proxy that owns the port and relays every socket (not there in production), and the runtime that runs the Worker and the objects; both are shown. The first {IDLE_SOCKETS} sockets go to one analysis, the next {IDLE_SOCKETS} are spread over 10 other analyses (100 each, so 10 more objects), on top of the first.",
        m.processes,
        SETTLE.as_secs()
    );
    println!();
    println!(
        "| state | runtime RSS (MiB) | runtime MiB per 1000 sockets | dev proxy RSS (MiB) | dev proxy MiB per 1000 sockets | both (MiB) | both MiB per 1000 sockets |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let row = |label: &str, before: Option<Rss>, now: Rss| {
        let delta = |f: fn(&Rss) -> u64| before.map_or(String::new(), |b| per_1000(f(&b), f(&now)));
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} |",
            mib(now.runtime_kib),
            delta(|r| r.runtime_kib),
            mib(now.proxy_kib),
            delta(|r| r.proxy_kib),
            mib(now.total()),
            delta(Rss::total),
        );
    };
    row("warmed up, no sockets open", None, m.baseline);
    row(
        &format!("+ {IDLE_SOCKETS} sockets to one analysis"),
        Some(m.baseline),
        m.one_analysis,
    );
    row(
        &format!("+ {IDLE_SOCKETS} sockets over 10 analyses"),
        Some(m.one_analysis),
        m.ten_analyses,
    );
    row(
        &format!("all {} closed", 2 * IDLE_SOCKETS),
        None,
        m.after_close,
    );
}
