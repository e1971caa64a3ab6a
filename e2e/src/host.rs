//! The host a benchmark ran on, for its report's header, and reading `/proc` figures.

/// "N cores (nproc), <CPU model>, M MiB RAM".
pub fn describe() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .map(|l| kib_field(l) / 1024)
        })
        .unwrap_or(0);
    format!("{cores} cores (nproc), {cpu}, {mem_mib} MiB RAM")
}

/// The number in a `/proc` line such as `VmRSS:   1234 kB`.
pub fn kib_field(line: &str) -> u64 {
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

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
    pub fn total(&self) -> u64 {
        self.proxy_kib + self.runtime_kib
    }
}

/// Resident memory of the processes in process group `pgid` whose name holds one of
/// `names`, with a workerd dev proxy listening on `port` (in front of another workerd)
/// counted apart, and how many processes there are.
pub fn group_rss(pgid: i32, port: u16, names: &[&str]) -> (Rss, usize) {
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

/// Runs a benchmark's `report` on a multi-thread runtime under its markdown title, the
/// command that reproduces it and this machine.
pub fn run_report(
    title: &str,
    command: &str,
    report: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    println!("# {title}\n\n`{command}`\n\n{}\n", describe());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(report)
}
