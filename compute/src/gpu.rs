//! GPU figures from NVML, where the NVIDIA driver provides libnvidia-ml; elsewhere none
//! (never guessed). The library is opened once per process, on first use.

use std::sync::OnceLock;

use nvml_wrapper::Nvml;

/// Utilisation and memory of the node's GPUs, summed over devices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuSample {
    /// Mean busy fraction over the devices, 0..=1.
    pub util: f64,
    pub mem_used_bytes: u64,
    pub mem_total_bytes: u64,
}

fn nvml() -> Option<&'static Nvml> {
    static NVML: OnceLock<Option<Nvml>> = OnceLock::new();
    NVML.get_or_init(|| match Nvml::init() {
        Ok(nvml) => Some(nvml),
        Err(e) => {
            tracing::debug!("no GPU figures: NVML unavailable ({e})");
            None
        }
    })
    .as_ref()
}

/// The GPUs now, or `None` without NVML or without a device.
pub fn sample() -> Option<GpuSample> {
    let nvml = nvml()?;
    let count = nvml.device_count().ok().filter(|&n| n > 0)?;
    let (mut util, mut used, mut total) = (0.0, 0u64, 0u64);
    for index in 0..count {
        let device = nvml.device_by_index(index).ok()?;
        util += f64::from(device.utilization_rates().ok()?.gpu) / 100.0;
        let memory = device.memory_info().ok()?;
        used += memory.used;
        total += memory.total;
    }
    Some(GpuSample {
        util: util / f64::from(count),
        mem_used_bytes: used,
        mem_total_bytes: total,
    })
}
