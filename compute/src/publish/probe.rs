//! The node's own figures for heartbeats: resident memory and CPU use since the last
//! sample, from /proc (Linux), and the GPUs' from NVML ([`crate::gpu`]). What cannot be
//! read stays empty.

use std::time::Instant;

use stagecast_shared::event::Metrics;

/// Clock ticks per second of /proc/self/stat (USER_HZ, 100 on every Linux ABI).
const TICKS_PER_SECOND: f64 = 100.0;
const PAGE_BYTES: u64 = 4096;

pub struct Probe {
    last: Option<(Instant, u64)>,
}

impl Default for Probe {
    fn default() -> Self {
        Self::new()
    }
}

impl Probe {
    pub fn new() -> Self {
        Self {
            last: cpu_ticks().map(|t| (Instant::now(), t)),
        }
    }

    /// Memory now, and CPU use (0..=1 of all cores) since the previous sample.
    pub fn sample(&mut self) -> Metrics {
        let now = Instant::now();
        let ticks = cpu_ticks();
        let cpu_util = match (self.last, ticks) {
            (Some((then, before)), Some(after)) => {
                let wall = now.duration_since(then).as_secs_f64();
                let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
                (wall > 0.0).then(|| {
                    ((after.saturating_sub(before)) as f64 / TICKS_PER_SECOND / wall / cores)
                        .clamp(0.0, 1.0)
                })
            }
            _ => None,
        };
        self.last = ticks.map(|t| (now, t));
        let gpu = crate::gpu::sample();
        Metrics {
            cpu_util,
            rss_bytes: rss_bytes(),
            gpu_util: gpu.map(|g| g.util),
            gpu_mem_used_bytes: gpu.map(|g| g.mem_used_bytes),
            gpu_mem_total_bytes: gpu.map(|g| g.mem_total_bytes),
            queue_depth: None,
        }
    }
}

/// CPU time (user + system) this process has used, in seconds.
pub fn cpu_seconds() -> Option<f64> {
    cpu_ticks().map(|t| t as f64 / TICKS_PER_SECOND)
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE_BYTES)
}

/// utime + stime of this process.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // fields after the parenthesised command name, which may hold spaces
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let mut probe = Probe::new();
        let busy = Instant::now();
        let mut x = 0u64;
        while busy.elapsed().as_millis() < 50 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let m = probe.sample();
        assert!(m.rss_bytes.unwrap() > 1 << 20, "{m:?}");
        let cpu = m.cpu_util.unwrap();
        assert!((0.0..=1.0).contains(&cpu), "{cpu}");
        // figures from NVML where there is one, else none at all
        assert_eq!(m.gpu_util.is_some(), crate::gpu::sample().is_some());
        assert!(x > 0);
    }
}
