//! Resident memory of a relay's processes as idle sockets open and close.

use std::time::Duration;

use anyhow::bail;
use stagecast_e2e::host::kib_field;

use crate::{Bench, Target};

/// Idle sockets of the memory measurement.
pub const IDLE_SOCKETS: usize = 1000;
/// Time for workerd to settle before its memory is read.
pub const SETTLE: Duration = Duration::from_secs(3);

/// A relay's resident memory. Under `wrangler dev` there are two workerd processes: a dev
/// proxy that owns the port and forwards every request and socket, and the runtime that runs
/// the Worker and its objects; production has only the latter. Any other relay is all
/// "runtime".
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    pub proxy_kib: u64,
    pub runtime_kib: u64,
}

impl Rss {
    fn total(&self) -> u64 {
        self.proxy_kib + self.runtime_kib
    }
}

pub struct Memory {
    /// The processes counted, e.g. "2 workerd".
    pub processes: String,
    pub baseline: Rss,
    pub one_analysis: Rss,
    pub ten_analyses: Rss,
    pub after_close: Rss,
    pub pending_hello_bytes: usize,
}

/// Resident memory of the processes in process group `pgid` whose name holds one of
/// `names`, with a workerd dev proxy listening on `port` (in front of another workerd)
/// counted apart, and how many processes there are.
fn group_rss(pgid: i32, port: u16, names: &[&str]) -> (Rss, usize) {
    let mut rss = Rss::default();
    let mut count = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return (rss, 0);
    };
    let proxy_flag = format!("--socket-addr=entry=127.0.0.1:{port}");
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ..."; comm may hold spaces, so split at the last ')'.
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let pgrp = tail
            .split_whitespace()
            .nth(2)
            .and_then(|g| g.parse::<i32>().ok());
        if pgrp != Some(pgid) || !names.iter().any(|n| comm.contains(n)) {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let Some(kib) = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .map(kib_field)
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let is_proxy = cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == proxy_flag.as_bytes());
        if is_proxy {
            rss.proxy_kib += kib;
        } else {
            rss.runtime_kib += kib;
        }
        count += 1;
    }
    // A workerd alone on the port (no `wrangler dev`) is the runtime itself.
    if count == 1 {
        rss = Rss {
            proxy_kib: 0,
            runtime_kib: rss.total(),
        };
    }
    (rss, count)
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
