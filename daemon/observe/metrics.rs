//! The Prometheus metrics: one registry of the daemon's own plus the
//! prometheus crate's process collector (`process_*`: CPU seconds, resident
//! memory, open file descriptors), every other family named `edgeseg_*` and documented in
//! `docs/metrics.md`. Label values come from fixed sets (outcome, stage, state,
//! folder role, readiness check), the configured paths, the model and build
//! strings and the GPU index: never from a study.

use std::cell::RefCell;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use super::{BuildAndModelInfo, DaemonState, EngineSummary, OUTCOMES, Readiness, STAGES};

/// Stage duration buckets, seconds: a fast CPU stage (0.05 s) to a slow CPU
/// inference of a whole-body PET/CT (an hour).
pub(crate) const STAGE_BUCKETS: [f64; 16] =
    [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0];

/// The GPU gauges, refreshed from NVML on each scrape.
pub(crate) struct GpuMetrics {
    pub up: IntGauge,
    pub info: IntGaugeVec,
    pub memory_used: IntGaugeVec,
    pub memory_total: IntGaugeVec,
    pub temperature: GaugeVec,
    pub utilization: GaugeVec,
}

impl GpuMetrics {
    /// Removes every per-GPU series (no GPU, or NVML lost it).
    pub fn clear(&self) {
        self.info.reset();
        self.memory_used.reset();
        self.memory_total.reset();
        self.temperature.reset();
        self.utilization.reset();
    }
}

pub(crate) struct Metrics {
    registry: Registry,
    names: Vec<String>,
    studies: IntCounterVec,
    stage: HistogramVec,
    queue_depth: IntGauge,
    quarantined: IntGauge,
    last_success: Gauge,
    busy: IntGauge,
    disk_free: IntGaugeVec,
    state: IntGaugeVec,
    ready: IntGauge,
    ready_check: IntGaugeVec,
    dropped: IntCounter,
    starts: IntCounter,
    oldest_waiting: Gauge,
    running_age: Gauge,
    memory_limit: IntGauge,
    memory_estimate: IntGauge,
    reload_success: IntGauge,
    reload_time: Gauge,
    retries: IntCounter,
    files: IntCounterVec,
    provider_requested: IntGaugeVec,
    latency: prometheus::Histogram,
    model: IntGaugeVec,
    fold_engine: IntGaugeVec,
    postprocess_backend: IntGaugeVec,
    postprocess_fallbacks: IntCounter,
    delivery: [IntGaugeVec; 3],
    delivery_oldest: GaugeVec,
    delivery_commitment: [IntGaugeVec; 2],
    pub gpu: GpuMetrics,
}

/// Arrival-to-result buckets, seconds: a minute to two days.
pub(crate) const LATENCY_BUCKETS: [f64; 14] =
    [60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 43200.0, 86400.0, 129600.0, 172800.0];

/// The results a file can have (`edgeseg_files_total{result}`).
pub const FILE_RESULTS: [&str; 2] = [super::FileResult::Ingested.as_str(), super::FileResult::Refused.as_str()];

// The metric names, help texts and label names below are constants, checked
// by the observe tests: building them cannot fail at run time.
#[allow(clippy::expect_used)]
fn int_gauge(registry: &Reg, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("constant metric name");
    register(registry, g.clone());
    g
}

#[allow(clippy::expect_used)]
fn gauge(registry: &Reg, name: &str, help: &str) -> Gauge {
    let g = Gauge::new(name, help).expect("constant metric name");
    register(registry, g.clone());
    g
}

#[allow(clippy::expect_used)]
fn int_gauge_vec(registry: &Reg, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("constant metric name");
    register(registry, g.clone());
    g
}

#[allow(clippy::expect_used)]
fn gauge_vec(registry: &Reg, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("constant metric name");
    register(registry, g.clone());
    g
}

/// The registry and the names of the families registered in it.
struct Reg {
    registry: Registry,
    names: RefCell<Vec<String>>,
}

fn register(reg: &Reg, c: impl Collector + 'static) {
    let names: Vec<String> = c.desc().iter().map(|d| d.fq_name.clone()).collect();
    match reg.registry.register(Box::new(c)) {
        Ok(()) => reg.names.borrow_mut().extend(names),
        Err(e) => tracing::error!(error = %e, "metric not registered: {e}"),
    }
}

impl Metrics {
    #[allow(clippy::expect_used)]
    pub fn new(info: &BuildAndModelInfo, start_time: f64) -> Self {
        let reg = Reg { registry: Registry::new(), names: RefCell::new(Vec::new()) };
        let r = &reg;

        let studies = IntCounterVec::new(
            Opts::new(
                "edgeseg_studies_total",
                "Studies that left the pipeline, by outcome (done, failed, quarantined).",
            ),
            &["outcome"],
        )
        .expect("constant metric name");
        register(r, studies.clone());
        for o in OUTCOMES {
            studies.with_label_values(&[o]);
        }

        let stage = HistogramVec::new(
            HistogramOpts::new("edgeseg_stage_duration_seconds", "Time one study spent in a pipeline stage.")
                .buckets(STAGE_BUCKETS.to_vec()),
            &["stage"],
        )
        .expect("constant metric name");
        register(r, stage.clone());
        for s in STAGES {
            stage.with_label_values(&[s]);
        }

        let build =
            int_gauge_vec(r, "edgeseg_build_info", "The running edgeseg build (always 1).", &["version", "revision"]);
        build.with_label_values(&[info.edgeseg_version.as_str(), info.git_rev.as_str()]).set(1);
        let model = int_gauge_vec(
            r,
            "edgeseg_model_info",
            "The loaded model package and execution provider (always 1).",
            &["name", "version", "sha256", "provider"],
        );
        model
            .with_label_values(&[
                info.model_name.as_str(),
                info.model_version.as_str(),
                info.model_sha256.as_str(),
                info.provider.as_str(),
            ])
            .set(1);
        gauge(r, "edgeseg_start_time_seconds", "Start time of the daemon, seconds since the Unix epoch.")
            .set(start_time);
        // CPU seconds, resident memory, open file descriptors of this process
        // (Prometheus' own `up` says whether the daemon answers at all).
        #[cfg(target_os = "linux")]
        register(r, prometheus::process_collector::ProcessCollector::for_self());
        let files = IntCounterVec::new(
            Opts::new(
                "edgeseg_files_total",
                "Input files by result: ingested (part of a study done) or refused (unreadable, or in a quarantined study).",
            ),
            &["result"],
        )
        .expect("constant metric name");
        register(r, files.clone());
        for f in FILE_RESULTS {
            files.with_label_values(&[f]);
        }
        let latency = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "edgeseg_study_latency_seconds",
                "From a study's first file seen to its outputs written (arrival to result).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("constant metric name");
        register(r, latency.clone());
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("constant metric name");
            register(r, c.clone());
            c
        };
        let starts = counter(
            "edgeseg_starts_total",
            "Starts of the daemon recorded in its journal (survives restarts: a crash loop or watchdog restarts raise it).",
        );
        let retries = counter("edgeseg_retries_total", "Failed attempts scheduled to run again (transient errors).");

        let provider_requested = int_gauge_vec(
            r,
            "edgeseg_provider_requested_info",
            "The execution provider the configuration asks for ([model] provider: auto, cpu, cuda, tensorrt or openvino; always 1).",
            &["provider"],
        );
        let fold_engine = int_gauge_vec(
            r,
            "edgeseg_fold_engine_info",
            "The engine each fold of the model got, as built: provider and precision (always 1; absent until the model is loaded).",
            &["fold", "provider", "precision"],
        );
        let postprocess_backend = int_gauge_vec(
            r,
            "edgeseg_postprocess_backend_info",
            "Where post-processing runs (cuda or cpu) as chosen at start (always 1; absent until the model is loaded).",
            &["backend"],
        );
        let postprocess_fallbacks = {
            let c = IntCounter::new(
                "edgeseg_postprocess_cpu_fallbacks_total",
                "Studies whose post-processing failed on CUDA and was done by the CPU twins.",
            )
            .expect("constant metric name");
            register(r, c.clone());
            c
        };

        // The DICOM node's outbox, per [[destination]] (values read from the journal).
        let delivery = [
            ("edgeseg_delivery_queued", "Results waiting for or in delivery to a destination."),
            ("edgeseg_delivery_sent", "Results a destination stored, from the journal."),
            ("edgeseg_delivery_failed", "Results given up after the destination's max_attempts, from the journal."),
        ]
        .map(|(name, help)| int_gauge_vec(r, name, help, &["destination"]));
        let delivery_oldest = gauge_vec(
            r,
            "edgeseg_delivery_oldest_unsent_seconds",
            "Age of the oldest result not yet delivered to a destination (0: none).",
            &["destination"],
        );
        // Destinations with storage_commitment only.
        let delivery_commitment = [
            ("edgeseg_delivery_committed", "Results a destination confirmed by Storage Commitment, from the journal."),
            (
                "edgeseg_delivery_awaiting_commitment",
                "Results sent to a destination and waiting for its Storage Commitment, from the journal.",
            ),
        ]
        .map(|(name, help)| int_gauge_vec(r, name, help, &["destination"]));

        Metrics {
            delivery,
            delivery_oldest,
            delivery_commitment,
            model,
            fold_engine,
            postprocess_backend,
            postprocess_fallbacks,
            studies,
            stage,
            queue_depth: int_gauge(
                r,
                "edgeseg_queue_depth",
                "Studies waiting in the queue (seen or ready, not running).",
            ),
            quarantined: int_gauge(r, "edgeseg_quarantined_studies", "Studies in quarantine now."),
            last_success: gauge(
                r,
                "edgeseg_last_success_timestamp_seconds",
                "When the last study finished done, seconds since the Unix epoch (0: none since start).",
            ),
            busy: int_gauge(r, "edgeseg_study_in_progress", "1 while a study is being processed."),
            disk_free: int_gauge_vec(
                r,
                "edgeseg_disk_free_bytes",
                "Free bytes (for the daemon's user) on the file system of a folder.",
                &["folder", "path"],
            ),
            state: int_gauge_vec(
                r,
                "edgeseg_daemon_state",
                "The daemon's state as a state set: 1 for the current state, 0 for the others.",
                &["state"],
            ),
            ready: int_gauge(r, "edgeseg_ready", "1 when /readyz answers 200."),
            ready_check: int_gauge_vec(
                r,
                "edgeseg_ready_check",
                "Each readiness condition: 1 when it holds (model, watch, disk).",
                &["check"],
            ),
            starts,
            retries,
            provider_requested,
            files,
            latency,
            oldest_waiting: gauge(
                r,
                "edgeseg_oldest_waiting_study_age_seconds",
                "Age of the oldest study waiting (seen or ready) since its first file was seen; 0 when none waits.",
            ),
            running_age: gauge(
                r,
                "edgeseg_running_study_age_seconds",
                "How long the study running now has run; 0 when none runs.",
            ),
            memory_limit: int_gauge(
                r,
                "edgeseg_memory_limit_bytes",
                "The memory budget studies are planned within ([limits] memory_mb, or 80 % of the machine's or the service's limit).",
            ),
            memory_estimate: int_gauge(
                r,
                "edgeseg_study_memory_estimate_bytes",
                "Estimated peak memory of the study loaded last (from its headers, before its pixels are read).",
            ),
            reload_success: {
                let g = int_gauge(
                    r,
                    "edgeseg_config_reload_success",
                    "1 when the last configuration reload (SIGHUP or D-Bus) was applied, 0 when it was refused.",
                );
                g.set(1);
                g
            },
            reload_time: {
                let g = gauge(
                    r,
                    "edgeseg_config_last_reload_success_timestamp_seconds",
                    "When the configuration was last loaded successfully (start or reload), seconds since the Unix epoch.",
                );
                g.set(start_time);
                g
            },
            dropped: {
                let c = IntCounter::new(
                    "edgeseg_observe_dropped_events_total",
                    "D-Bus notifications dropped because the D-Bus thread lagged (observing never blocks the pipeline).",
                )
                .expect("constant metric name");
                register(r, c.clone());
                c
            },
            gpu: GpuMetrics {
                up: int_gauge(
                    r,
                    "edgeseg_gpu_up",
                    "1 when NVML answers for every GPU, 0 when NVML or a GPU is missing.",
                ),
                info: int_gauge_vec(r, "edgeseg_gpu_info", "The GPUs NVML sees (always 1).", &["gpu", "name"]),
                memory_used: int_gauge_vec(r, "edgeseg_gpu_memory_used_bytes", "GPU memory in use.", &["gpu"]),
                memory_total: int_gauge_vec(r, "edgeseg_gpu_memory_total_bytes", "GPU memory installed.", &["gpu"]),
                temperature: gauge_vec(r, "edgeseg_gpu_temperature_celsius", "GPU die temperature.", &["gpu"]),
                utilization: gauge_vec(
                    r,
                    "edgeseg_gpu_utilization_ratio",
                    "Fraction of the last sample period a kernel ran on the GPU (0 to 1).",
                    &["gpu"],
                ),
            },
            registry: reg.registry,
            names: reg.names.into_inner(),
        }
    }

    pub fn set_state(&self, s: DaemonState) {
        for st in DaemonState::ALL {
            self.state.with_label_values(&[st.as_str()]).set(i64::from(st == s));
        }
    }

    pub fn set_ready(&self, r: &Readiness, s: DaemonState) {
        self.ready_check.with_label_values(&["model"]).set(i64::from(r.model_loaded));
        self.ready_check.with_label_values(&["watch"]).set(i64::from(r.watch_armed));
        self.ready_check.with_label_values(&["disk"]).set(i64::from(r.disk_ok));
        self.ready.set(i64::from(r.missing(s).is_empty()));
    }

    pub fn study_finished(&self, outcome: &str, now: f64) {
        self.studies.with_label_values(&[outcome]).inc();
        if outcome == "done" {
            self.last_success.set(now);
        }
    }

    pub fn observe_stage(&self, stage: &str, seconds: f64) {
        self.stage.with_label_values(&[stage]).observe(seconds);
    }

    pub fn set_last_success(&self, t: f64) {
        self.last_success.set(t);
    }

    pub fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    pub fn set_queue_depth(&self, n: u64) {
        self.queue_depth.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_quarantined(&self, n: u64) {
        self.quarantined.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_busy(&self, busy: bool) {
        self.busy.set(i64::from(busy));
    }

    pub fn disk_free(&self, role: &str, path: &str, bytes: u64) {
        self.disk_free.with_label_values(&[role, path]).set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub fn dropped_event(&self) {
        self.dropped.inc();
    }

    pub fn set_starts(&self, total: u64) {
        let have = self.starts.get();
        if total > have {
            self.starts.inc_by(total - have);
        }
    }

    pub fn set_memory(&self, limit: Option<u64>, estimate: Option<u64>) {
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        if let Some(l) = limit {
            self.memory_limit.set(g(l));
        }
        if let Some(e) = estimate {
            self.memory_estimate.set(g(e));
        }
    }

    pub fn set_ages(&self, oldest_waiting: f64, running: f64) {
        self.oldest_waiting.set(oldest_waiting.max(0.0));
        self.running_age.set(running.max(0.0));
    }

    pub fn config_reloaded(&self, ok: bool, now: f64) {
        self.reload_success.set(i64::from(ok));
        if ok {
            self.reload_time.set(now);
        }
    }

    pub fn set_provider_requested(&self, provider: &str) {
        self.provider_requested.reset();
        self.provider_requested.with_label_values(&[provider]).set(1);
    }

    pub fn retried(&self) {
        self.retries.inc();
    }

    pub fn files(&self, result: &str, count: u64) {
        self.files.with_label_values(&[result]).inc_by(count);
    }

    pub fn study_latency(&self, seconds: f64) {
        if seconds.is_finite() && seconds >= 0.0 {
            self.latency.observe(seconds);
        }
    }

    /// The engines as built: the model's `provider` label, one series per
    /// fold, the post-processing backend.
    pub fn set_engines(&self, info: &BuildAndModelInfo, e: &EngineSummary) {
        self.model.reset();
        self.model
            .with_label_values(&[
                info.model_name.as_str(),
                info.model_version.as_str(),
                info.model_sha256.as_str(),
                e.provider.as_str(),
            ])
            .set(1);
        self.fold_engine.reset();
        for (fold, provider, precision) in &e.folds {
            self.fold_engine
                .with_label_values(&[fold.to_string().as_str(), provider.as_str(), precision.as_str()])
                .set(1);
        }
        self.postprocess_backend.reset();
        if !e.postprocess_backend.is_empty() {
            self.postprocess_backend.with_label_values(&[e.postprocess_backend.as_str()]).set(1);
        }
    }

    pub fn postprocess_fallback(&self) {
        self.postprocess_fallbacks.inc();
    }

    pub fn delivery(&self, d: &[crate::dicom_node::outbox::DestinationCounts]) {
        for c in d {
            let l = [c.name.as_str()];
            for (g, v) in self.delivery.iter().zip([c.queued, c.sent, c.failed]) {
                g.with_label_values(&l).set(i64::try_from(v).unwrap_or(i64::MAX));
            }
            self.delivery_oldest.with_label_values(&l).set(c.oldest_unsent_seconds);
            if c.storage_commitment {
                for (g, v) in self.delivery_commitment.iter().zip([c.committed, c.awaiting_commitment]) {
                    g.with_label_values(&l).set(i64::try_from(v).unwrap_or(i64::MAX));
                }
            }
        }
    }

    pub fn render(&self) -> String {
        let families = self.registry.gather();
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed: {e}");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GPU series as NVML would fill them (this box may have no GPU), judged
    /// by `promtool check metrics` like the rest of a scrape.
    #[test]
    fn gpu_series_pass_promtool() {
        use std::io::Write;
        let m = Metrics::new(&BuildAndModelInfo::this_build("m", "1", "00", "cuda"), 1.0);
        m.gpu.up.set(1);
        m.gpu.info.with_label_values(&["0", "NVIDIA H100 80GB HBM3"]).set(1);
        m.gpu.memory_used.with_label_values(&["0"]).set(1_234_567_890);
        m.gpu.memory_total.with_label_values(&["0"]).set(85_520_809_984);
        m.gpu.temperature.with_label_values(&["0"]).set(41.0);
        m.gpu.utilization.with_label_values(&["0"]).set(0.97);
        let body = m.render();
        for line in [
            "edgeseg_gpu_up 1",
            "edgeseg_gpu_info{gpu=\"0\",name=\"NVIDIA H100 80GB HBM3\"} 1",
            "edgeseg_gpu_memory_used_bytes{gpu=\"0\"} 1234567890",
            "edgeseg_gpu_memory_total_bytes{gpu=\"0\"} 85520809984",
            "edgeseg_gpu_temperature_celsius{gpu=\"0\"} 41",
            "edgeseg_gpu_utilization_ratio{gpu=\"0\"} 0.97",
        ] {
            assert!(body.lines().any(|l| l == line), "{line} missing:\n{body}");
        }
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let problems = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && problems.trim().is_empty(), "{problems}\n{body}");
        // Losing the GPU removes its series.
        m.gpu.clear();
        m.gpu.up.set(0);
        let body = m.render();
        assert!(!body.contains("edgeseg_gpu_memory_used_bytes") && body.contains("edgeseg_gpu_up 0"), "{body}");
    }
}
