//! The read-only status page at `/` on the metrics port: the daemon's state,
//! the engine of each fold, the queue, the last results, the quarantine and
//! disk space, as one plain HTML document (a little inline CSS, no script, no
//! external asset, a meta refresh every 10 s).
//!
//! No patient data: studies are named by their hash ([`crate::queue::uid_hash`]),
//! never by UID; every text that comes from elsewhere (a quarantine reason) is
//! HTML-escaped and has absolute paths and DICOM UIDs masked ([`mask`]).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;

use super::{DaemonState, EngineSummary, Readiness};

/// How many finished studies the page lists.
pub const RESULTS_KEPT: usize = 50;

/// One study waiting or running, as the page lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueItem {
    /// The study's hash.
    pub hash: String,
    /// `seen`, `ready` or `running`.
    pub state: String,
    /// When it was first seen (Unix seconds).
    pub since: f64,
    /// What it is doing (`loading series`, `inference`), empty when waiting.
    pub stage: String,
}

/// One finished study, as the page lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultItem {
    /// The study's hash.
    pub hash: String,
    /// `done`, `failed` or `quarantined`.
    pub outcome: String,
    /// When it finished (Unix seconds).
    pub finished_at: f64,
    /// Seconds from first file seen to the outcome, when known.
    pub latency: Option<f64>,
    /// Seconds per pipeline stage (done studies), in pipeline order.
    pub stages: Vec<(String, f64)>,
}

/// What the page shows besides the observer's state and engines.
#[derive(Debug, Clone, Default)]
pub(crate) struct PageState {
    pub queue: Vec<QueueItem>,
    pub results: VecDeque<ResultItem>,
    pub quarantine: Vec<crate::quarantine::Record>,
    /// (role, folder) → free bytes.
    pub disk: BTreeMap<(String, String), u64>,
}

impl PageState {
    pub fn push_result(&mut self, r: ResultItem) {
        self.results.push_front(r);
        self.results.truncate(RESULTS_KEPT);
    }
}

/// What [`render`] needs, read under the observer's locks.
pub(crate) struct PageInput<'a> {
    pub state: DaemonState,
    pub status: &'a str,
    pub ready: Readiness,
    pub queue_depth: u64,
    pub quarantined: u64,
    pub model: &'a str,
    pub version: &'a str,
    pub engines: &'a EngineSummary,
    pub page: &'a PageState,
    pub now: f64,
}

/// `&`, `<`, `>`, `"` and `'` as HTML entities.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn looks_like_uid(t: &str) -> bool {
    t.split('.').count() >= 4 && super::is_dicom_uid(t)
}

/// A text from a record, with every word that holds a `/` (a path, which
/// may name the patient) shown as `(path)` and every DICOM UID as `(uid)`.
pub fn mask(text: &str) -> String {
    text.split(' ')
        .map(|w| {
            let core = w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '/' && c != '.');
            let core = core.trim_end_matches('.');
            if w.contains('/') {
                "(path)".to_string()
            } else if looks_like_uid(core) {
                w.replacen(core, "(uid)", 1)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A duration as `42 s`, `3 min 5 s`, `2 h 4 min` or `3 d 1 h`.
pub fn human_duration(seconds: f64) -> String {
    let s = if seconds.is_finite() && seconds > 0.0 { seconds.round() as u64 } else { 0 };
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

/// Bytes as `812 MiB`, `1.4 GiB` or `2.0 TiB`.
pub fn human_bytes(b: u64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    let f = b as f64;
    if f >= 1024.0 * GIB {
        format!("{:.1} TiB", f / (1024.0 * GIB))
    } else if f >= GIB {
        format!("{:.1} GiB", f / GIB)
    } else {
        format!("{} MiB", b / (1024 * 1024))
    }
}

fn utc(unix: f64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".to_string())
}

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:72em;padding:0 1em;color:#222;background:#fafafa}\
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;width:100%;background:#fff}th,td{text-align:left;padding:.25em .6em;border-bottom:1px solid #e4e4e4;vertical-align:top}\
th{background:#f0f0f0;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}code{font-size:.95em;white-space:nowrap}td.t{white-space:nowrap}\
.s{display:inline-block;padding:.05em .5em;border-radius:.7em;font-weight:600}\
.ok{background:#d8f0d8;color:#164d16}.warn{background:#fff0c0;color:#6b4e00}.bad{background:#f8d4d4;color:#7a1010}.info{background:#dde8f8;color:#173d70}\
.muted{color:#777}dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em;margin:0}dt{font-weight:600}dd{margin:0}";

fn badge(class: &str, text: &str) -> String {
    format!("<span class=\"s {class}\">{}</span>", escape(text))
}

fn state_class(s: DaemonState) -> &'static str {
    match s {
        DaemonState::Idle | DaemonState::Running => "ok",
        DaemonState::Starting | DaemonState::Paused => "warn",
        DaemonState::DiskLow | DaemonState::Stopping => "bad",
    }
}

fn outcome_class(o: &str) -> &'static str {
    match o {
        "done" => "ok",
        "quarantined" => "warn",
        _ => "bad",
    }
}

/// The page as HTML.
pub(crate) fn render(p: &PageInput<'_>) -> String {
    let mut h = String::with_capacity(16 * 1024);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<meta http-equiv=\"refresh\" content=\"10\"><meta name=\"viewport\" content=\"width=device-width\">");
    let _ = writeln!(h, "<title>edgeseg: {}</title><style>{CSS}</style></head><body>", p.state.as_str());
    let _ = writeln!(
        h,
        "<h1>edgeseg {}</h1><p class=\"muted\">Read-only status, refreshed every 10 s; studies are named by the hash of their UID. Page made {}.</p>",
        badge(state_class(p.state), p.state.as_str()),
        utc(p.now)
    );

    // Daemon
    let missing = p.ready.missing(p.state);
    let ready = if missing.is_empty() {
        badge("ok", "ready")
    } else {
        format!("{} {}", badge("bad", "not ready"), escape(&missing.join("; ")))
    };
    h.push_str("<h2>Daemon</h2><dl>");
    let _ = write!(h, "<dt>State</dt><dd id=\"state\">{}</dd>", escape(p.state.as_str()));
    let _ = write!(h, "<dt>Status</dt><dd id=\"status\">{}</dd>", escape(&mask(p.status)));
    let _ = write!(h, "<dt>Readiness</dt><dd>{ready}</dd>");
    let _ = write!(h, "<dt>Waiting</dt><dd>{}</dd><dt>Quarantined</dt><dd>{}</dd>", p.queue_depth, p.quarantined);
    let _ = write!(h, "<dt>Model</dt><dd>{}</dd><dt>Version</dt><dd>{}</dd>", escape(p.model), escape(p.version));
    let post = if p.engines.postprocess_backend.is_empty() { "-" } else { p.engines.postprocess_backend.as_str() };
    let _ = writeln!(h, "<dt>Post-processing</dt><dd>{}</dd></dl>", escape(post));

    // Engines
    h.push_str("<h2>Engines</h2>");
    if p.engines.folds.is_empty() {
        let _ =
            writeln!(h, "<p class=\"muted\">Model not loaded yet (asked for: {}).</p>", escape(&p.engines.provider));
    } else {
        h.push_str("<table id=\"folds\"><tr><th>Fold</th><th>Provider</th><th>Precision</th></tr>");
        for (fold, provider, precision) in &p.engines.folds {
            let _ = write!(h, "<tr><td>{fold}</td><td>{}</td><td>{}</td></tr>", escape(provider), escape(precision));
        }
        h.push_str("</table>\n");
    }

    // Queue
    let _ = write!(h, "<h2>Queue ({})</h2>", p.page.queue.len());
    if p.page.queue.is_empty() {
        h.push_str("<p class=\"muted\">No study waiting or running.</p>\n");
    } else {
        h.push_str("<table id=\"queue\"><tr><th>Study</th><th>State</th><th>Age</th><th>Stage</th></tr>");
        for q in &p.page.queue {
            let class = if q.state == "running" { "info" } else { "warn" };
            let stage = if q.stage.is_empty() { "-" } else { q.stage.as_str() };
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                escape(&q.hash),
                badge(class, &q.state),
                human_duration(p.now - q.since),
                escape(&mask(stage))
            );
        }
        h.push_str("</table>\n");
    }

    // Results
    let _ = write!(h, "<h2>Last results ({} of at most {RESULTS_KEPT})</h2>", p.page.results.len());
    if p.page.results.is_empty() {
        h.push_str("<p class=\"muted\">No study finished since the daemon started.</p>\n");
    } else {
        h.push_str("<table id=\"results\"><tr><th>Study</th><th>Outcome</th><th>Finished</th><th>Arrival to result</th><th>Stages</th></tr>");
        for r in &p.page.results {
            let latency = r.latency.map(human_duration).unwrap_or_else(|| "-".to_string());
            let stages = if r.stages.is_empty() {
                "-".to_string()
            } else {
                r.stages.iter().map(|(s, t)| format!("{} {t:.1} s", escape(s))).collect::<Vec<_>>().join(", ")
            };
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td class=\"t\">{}</td><td class=\"n\">{latency}</td><td>{stages}</td></tr>",
                escape(&r.hash),
                badge(outcome_class(&r.outcome), &r.outcome),
                utc(r.finished_at)
            );
        }
        h.push_str("</table>\n");
    }

    // Quarantine
    let _ = write!(h, "<h2>Quarantine ({})</h2>", p.page.quarantine.len());
    if p.page.quarantine.is_empty() {
        h.push_str("<p class=\"muted\">Empty.</p>\n");
    } else {
        h.push_str("<table id=\"quarantine\"><tr><th>Record</th><th>Kind</th><th>Since</th><th>Reason</th></tr>");
        for q in &p.page.quarantine {
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td class=\"t\">{}</td><td>{}</td></tr>",
                escape(&q.name),
                q.kind.as_str(),
                escape(&q.since),
                escape(&mask(&q.reason))
            );
        }
        h.push_str("</table>\n<p class=\"muted\">As root or a member of edgeseg-admin: <code>edgeseg quarantine show|retry|clear RECORD</code>.</p>\n");
    }

    // Disk
    h.push_str("<h2>Disk space</h2>");
    if p.page.disk.is_empty() {
        h.push_str("<p class=\"muted\">Not measured yet.</p>\n");
    } else {
        h.push_str("<table id=\"disk\"><tr><th>Role</th><th>Folder</th><th>Free</th></tr>");
        for ((role, folder), bytes) in &p.page.disk {
            let _ = write!(
                h,
                "<tr><td>{}</td><td><code>{}</code></td><td class=\"n\">{}</td></tr>",
                escape(role),
                escape(folder),
                human_bytes(*bytes)
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_and_mask_leave_no_markup_path_or_uid() {
        assert_eq!(escape("<a href='x'>&\"</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;");
        let m = mask("3 files unreadable: /srv/export/Doe_John/CT1.dcm (bad), study 1.2.840.113619.2.55.3 gone.");
        assert!(!m.contains("Doe") && !m.contains("1.2.840"), "{m}");
        assert!(m.contains("(path)") && m.contains("(uid)") && m.starts_with("3 files unreadable:"), "{m}");
        // Versions and decimals are not UIDs.
        assert_eq!(mask("spacing 2.5 mm, model 1.0.0"), "spacing 2.5 mm, model 1.0.0");
    }

    #[test]
    fn durations_and_sizes_read_as_people_write_them() {
        assert_eq!(human_duration(42.4), "42 s");
        assert_eq!(human_duration(185.0), "3 min 5 s");
        assert_eq!(human_duration(7440.0), "2 h 4 min");
        assert_eq!(human_duration(-3.0), "0 s");
        assert_eq!(human_bytes(812 * 1024 * 1024), "812 MiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
    }

    #[test]
    fn results_keep_the_last_fifty_newest_first() {
        let mut p = PageState::default();
        for i in 0..60 {
            p.push_result(ResultItem {
                hash: format!("{i}"),
                outcome: "done".into(),
                finished_at: f64::from(i),
                latency: None,
                stages: vec![],
            });
        }
        assert_eq!(p.results.len(), RESULTS_KEPT);
        assert_eq!(p.results.front().map(|r| r.hash.as_str()), Some("59"));
        assert_eq!(p.results.back().map(|r| r.hash.as_str()), Some("10"));
    }
}
