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
