//! GPU gauges from NVML. `nvml-wrapper` opens `libnvidia-ml.so.1` at run time
//! (dlopen through libloading), so the binary starts on a box without the
//! NVIDIA driver: there `Nvml::init()` fails, `edgeseg_gpu_up` is 0 and the
//! per-GPU series are absent. Read on scrape (the HTTP thread), never by the
//! pipeline; a failed init is retried at most once a minute (a driver loaded
//! after the daemon started is picked up).

use std::time::{Duration, Instant};

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;

use super::metrics::GpuMetrics;

const RETRY_INIT: Duration = Duration::from_secs(60);

pub(crate) struct GpuProbe {
    nvml: Option<Nvml>,
    last_init: Option<Instant>,
}

impl GpuProbe {
    pub fn new() -> Self {
        GpuProbe { nvml: None, last_init: None }
    }

    /// Reads every GPU into the gauges; on any NVML failure `up` is 0 and the
    /// series of the GPUs that failed are removed. Never panics.
    pub fn refresh(&mut self, m: &GpuMetrics) {
        if self.nvml.is_none() && self.last_init.is_none_or(|t| t.elapsed() >= RETRY_INIT) {
            self.last_init = Some(Instant::now());
            match Nvml::init() {
                Ok(n) => {
                    tracing::info!("NVML initialised: GPU metrics on");
                    self.nvml = Some(n);
                }
                Err(e) => tracing::info!(error = %e, "NVML unavailable: no GPU metrics ({e})"),
            }
        }
        m.clear();
        let Some(nvml) = self.nvml.as_ref() else {
            m.up.set(0);
            return;
        };
        let count = match nvml.device_count() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "NVML device count failed: {e}");
                m.up.set(0);
                return;
            }
        };
        let mut all_ok = count > 0;
        for i in 0..count {
            let gpu = i.to_string();
            let label = [gpu.as_str()];
            let device = match nvml.device_by_index(i) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(gpu = i, error = %e, "NVML lost GPU {i}: {e}");
                    all_ok = false;
                    continue;
                }
            };
            let name = device.name().unwrap_or_else(|_| "unknown".to_string());
            m.info.with_label_values(&[gpu.as_str(), name.as_str()]).set(1);
            match device.memory_info() {
                Ok(mem) => {
                    m.memory_used.with_label_values(&label).set(i64::try_from(mem.used).unwrap_or(i64::MAX));
                    m.memory_total.with_label_values(&label).set(i64::try_from(mem.total).unwrap_or(i64::MAX));
                }
                Err(e) => {
                    tracing::warn!(gpu = i, error = %e, "NVML memory info of GPU {i} failed: {e}");
                    all_ok = false;
                }
            }
            match device.temperature(TemperatureSensor::Gpu) {
                Ok(t) => m.temperature.with_label_values(&label).set(f64::from(t)),
                Err(e) => tracing::debug!(gpu = i, error = %e, "NVML temperature of GPU {i} unavailable: {e}"),
            }
            match device.utilization_rates() {
                Ok(u) => m.utilization.with_label_values(&label).set(f64::from(u.gpu) / 100.0),
                Err(e) => tracing::debug!(gpu = i, error = %e, "NVML utilisation of GPU {i} unavailable: {e}"),
            }
        }
        m.up.set(i64::from(all_ok));
    }
}
