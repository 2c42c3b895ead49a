//! The metrics endpoint, judged by `promtool` (Debian's prometheus package):
//! a live scrape passes `promtool check metrics`, `/readyz` follows the
//! readiness conditions, the alert rules pass `promtool check rules` and their
//! unit tests, and the Grafana dashboard, the alert rules and docs/metrics.md
//! name only metrics the daemon exports (and document all of them).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use edgeseg::observe::{BuildAndModelInfo, DaemonState, Notifier, Observer, serve_http};

use crate::util::root;

/// Runs a command with a time limit (killed after it), stdin from `input`.
pub fn run_timeout(cmd: &mut Command, input: Option<&[u8]>, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e}"));
    if let Some(data) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
    }
    let start = Instant::now();
    loop {
        if child.try_wait().expect("child status").is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("child output");
            panic!("{cmd:?} ran over {limit:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("child output")
}

/// An observer of a made-up model, not connected to systemd.
pub fn observer() -> Observer {
    Observer::with_notifier(
        BuildAndModelInfo::this_build("demo-petct", "1.0.0", &"ab".repeat(32), "cpu"),
        Notifier::disabled(),
    )
}

/// One HTTP/1.1 request over a plain TcpStream: (status, head, body).
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the metrics server");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("send the request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// The `edgeseg_*` names a PromQL expression uses (histogram suffixes removed).
fn metric_names_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("edgeseg_") {
        let start = i + pos;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        let mut name = &expr[start..end];
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(n) = name.strip_suffix(suffix)
                && n.ends_with("_seconds")
            {
                name = n;
            }
        }
        out.insert(name.to_string());
        i = end;
    }
    out
}

#[test]
fn live_scrape_passes_promtool_check_metrics() {
    let obs = observer();
    obs.set_state(DaemonState::Running);
    obs.set_current_study(Some("1.2.826.0.1.3680043.2.1125.99"));
    obs.set_queue_depth(3);
    obs.set_quarantined(1);
    obs.study_finished("1.2.826.0.1.3680043.2.1125.99", "done", Some(Path::new("/var/lib/edgeseg/results/x")));
    obs.study_finished("1.2.826.0.1.3680043.2.1125.98", "failed", None);
    obs.study_finished("1.2.826.0.1.3680043.2.1125.97", "quarantined", None);
    obs.study_finished("1.2.826.0.1.3680043.2.1125.96", "exploded", None);
    for (i, stage) in edgeseg::observe::STAGES.iter().enumerate() {
        obs.observe_stage(stage, 0.3 * (i + 1) as f64);
    }
    obs.observe_stage("inference", 1500.0);
    obs.observe_stage("not-a-stage", 1.0);
    obs.disk_free("output", Path::new("/var/lib/edgeseg/results"), 123_456_789_000);
    obs.disk_free("export", Path::new("/srv/scanner-export"), 42);
    obs.disk_free("bogus-role", Path::new("/tmp"), 1);
    obs.set_provider_requested("tensorrt");
    obs.set_starts(4);
    obs.set_study_ages(Some(7200.0), None);
    obs.study_latency(900.0);
    let server = serve_http("127.0.0.1:0".parse().unwrap(), obs.clone()).unwrap();
    let (status, head, body) = http(server.local_addr(), "GET", "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");

    let out = run_timeout(
        Command::new("promtool").args(["check", "metrics"]),
        Some(body.as_bytes()),
        Duration::from_secs(30),
    );
    let problems = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && problems.trim().is_empty(), "promtool check metrics:\n{problems}\n---\n{body}");

    for line in [
        "edgeseg_studies_total{outcome=\"done\"} 1",
        "edgeseg_studies_total{outcome=\"failed\"} 2",
        "edgeseg_studies_total{outcome=\"quarantined\"} 1",
        "edgeseg_queue_depth 3",
        "edgeseg_quarantined_studies 1",
        "edgeseg_study_in_progress 1",
        "edgeseg_daemon_state{state=\"running\"} 1",
        "edgeseg_daemon_state{state=\"idle\"} 0",
        "edgeseg_stage_duration_seconds_count{stage=\"inference\"} 2",
        "edgeseg_stage_duration_seconds_bucket{stage=\"inference\",le=\"1800\"} 2",
        "edgeseg_stage_duration_seconds_bucket{stage=\"inference\",le=\"1200\"} 1",
        "edgeseg_disk_free_bytes{folder=\"output\",path=\"/var/lib/edgeseg/results\"} 123456789000",
        "edgeseg_disk_free_bytes{folder=\"export\",path=\"/srv/scanner-export\"} 42",
        "edgeseg_ready 0",
        "edgeseg_config_reload_success 1",
        "edgeseg_provider_requested_info{provider=\"tensorrt\"} 1",
        "edgeseg_starts_total 4",
        "edgeseg_oldest_waiting_study_age_seconds 7200",
        "edgeseg_running_study_age_seconds 0",
        "edgeseg_study_latency_seconds_bucket{le=\"900\"} 1",
        "edgeseg_study_latency_seconds_bucket{le=\"600\"} 0",
        "edgeseg_files_total{result=\"ingested\"} 0",
        "edgeseg_files_total{result=\"refused\"} 0",
    ] {
        assert!(body.lines().any(|l| l == line), "missing {line:?} in\n{body}");
    }
    assert!(body.contains(&format!(
        "edgeseg_model_info{{name=\"demo-petct\",provider=\"cpu\",sha256=\"{}\",version=\"1.0.0\"}} 1",
        "ab".repeat(32)
    )));
    assert!(body.contains(&format!("edgeseg_build_info{{revision=\"{}\"", env!("EDGESEG_GIT_REV"))));
    let last: f64 =
        body.lines().find_map(|l| l.strip_prefix("edgeseg_last_success_timestamp_seconds ")).unwrap().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - last).abs() < 60.0, "last success {last} vs now {now}");
    // No study UID (nor any other study detail) in any label or value.
    assert!(!body.contains("1.2.826.0.1.3680043"), "a study UID leaked into the metrics:\n{body}");
    assert!(!body.contains("bogus-role") && !body.contains("not-a-stage") && !body.contains("exploded"));
}

#[test]
fn readyz_follows_the_conditions_and_routes_answer() {
    let obs = observer();
    let server = serve_http("127.0.0.1:0".parse().unwrap(), obs.clone()).unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);

    assert_eq!(http(addr, "GET", "/healthz").0, 200);
    assert_eq!(http(addr, "GET", "/healthz").2, "ok\n");

    let (st, _, body) = http(addr, "GET", "/readyz");
    assert_eq!(st, 503);
    for what in ["model not loaded", "watch folder not armed", "disk free space below threshold"] {
        assert!(body.contains(what), "{body}");
    }
    obs.set_ready(true, true, false);
    let (st, _, body) = http(addr, "GET", "/readyz");
    assert_eq!(st, 503);
    assert!(body.contains("disk") && !body.contains("model") && !body.contains("watch"), "{body}");
    obs.set_ready(true, true, true);
    assert_eq!(http(addr, "GET", "/readyz"), (200, http(addr, "GET", "/readyz").1, "ready\n".to_string()));
    assert!(http(addr, "GET", "/metrics").2.lines().any(|l| l == "edgeseg_ready 1"));
    obs.set_state(DaemonState::Stopping);
    let (st, _, body) = http(addr, "GET", "/readyz");
    assert_eq!(st, 503);
    assert!(body.contains("stopping"), "{body}");
    assert!(http(addr, "GET", "/metrics").2.lines().any(|l| l == "edgeseg_ready 0"));

    assert_eq!(http(addr, "GET", "/nope").0, 404);
    assert_eq!(http(addr, "GET", "/metrics?x=1").0, 200);
    let (st, head, _) = http(addr, "POST", "/metrics");
    assert_eq!(st, 405);
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    assert_eq!(http(addr, "DELETE", "/readyz").0, 405);
    let (st, _, body) = http(addr, "HEAD", "/metrics");
    assert_eq!((st, body.as_str()), (200, ""));

    // Dropping the server stops it: the port no longer answers.
    drop(server);
    let gone = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf)?;
            Ok(buf)
        })
        .map(|b| b.is_empty())
        .unwrap_or(true);
    assert!(gone, "the server still answers after drop");
}

#[test]
fn second_server_on_a_taken_port_is_a_clear_error() {
    let obs = observer();
    let first = serve_http("127.0.0.1:0".parse().unwrap(), obs.clone()).unwrap();
    let err = match serve_http(first.local_addr(), obs) {
        Ok(_) => panic!("two servers on one port"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&first.local_addr().to_string()), "{err}");
}

#[test]
fn without_nvidia_the_gpu_degrades_to_gpu_up_0() {
    let body = observer().render();
    if Path::new("/proc/driver/nvidia").exists() {
        // A box with the driver: the GPU is read (the device machine).
        assert!(body.lines().any(|l| l == "edgeseg_gpu_up 1"), "{body}");
        assert!(body.contains("edgeseg_gpu_memory_total_bytes{gpu=\"0\"}"), "{body}");
    } else {
        assert!(body.lines().any(|l| l == "edgeseg_gpu_up 0"), "{body}");
        for absent in ["edgeseg_gpu_memory_used_bytes", "edgeseg_gpu_temperature_celsius", "edgeseg_gpu_info"] {
            assert!(!body.contains(absent), "{absent} present without a GPU:\n{body}");
        }
    }
    // NVML is opened at run time: the binary does not link libnvidia-ml.
    let ldd = run_timeout(Command::new("ldd").arg(env!("CARGO_BIN_EXE_edgeseg")), None, Duration::from_secs(30));
    let libs = String::from_utf8_lossy(&ldd.stdout);
    assert!(ldd.status.success() && !libs.contains("nvidia-ml"), "{libs}");
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let rules = root().join("monitoring/edgeseg-alerts.yml");
    let out =
        run_timeout(Command::new("promtool").arg("check").arg("rules").arg(&rules), None, Duration::from_secs(30));
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let out = run_timeout(
        Command::new("promtool")
            .args(["test", "rules", "edgeseg-alerts.test.yml"])
            .current_dir(root().join("monitoring")),
        None,
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    let text = std::fs::read_to_string(&rules).unwrap();
    let known: BTreeSet<String> = observer().metric_names().into_iter().collect();
    let used = metric_names_in(&text);
    for a in ["EdgesegDown", "EdgesegNoSuccess24h", "EdgesegQuarantineGrowing", "EdgesegDiskLow", "EdgesegGpuLost"] {
        assert!(text.contains(&format!("alert: {a}")), "alert {a} missing");
    }
    let unknown: Vec<_> = used.difference(&known).collect();
    assert!(unknown.is_empty(), "alert rules use metrics the daemon does not export: {unknown:?}");
}

#[test]
fn dashboard_and_docs_match_the_exported_metrics() {
    let obs = observer();
    let known: BTreeSet<String> = obs.metric_names().into_iter().collect();
    // Everything a scrape shows is in the list (and the list is not empty).
    let scraped: BTreeSet<String> = obs
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(String::from)
        .collect();
    assert!(scraped.len() >= 15, "{scraped:?}");
    assert!(scraped.is_subset(&known), "{scraped:?} vs {known:?}");
    for gpu in [
        "edgeseg_gpu_memory_used_bytes",
        "edgeseg_gpu_memory_total_bytes",
        "edgeseg_gpu_temperature_celsius",
        "edgeseg_gpu_utilization_ratio",
    ] {
        assert!(known.contains(gpu), "{gpu}");
    }

    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("monitoring/grafana-dashboard.json")).unwrap())
            .expect("the dashboard is valid JSON");
    assert!(dash["title"].is_string() && dash["uid"].is_string() && dash["schemaVersion"].is_number());
    let panels = dash["panels"].as_array().expect("panels");
    let mut exprs = Vec::new();
    for p in panels {
        for t in p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            exprs.push(t["expr"].as_str().expect("each target has an expr").to_string());
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut used = BTreeSet::new();
    for e in &exprs {
        let mut names = metric_names_in(e);
        // Prometheus' own `up` for the target, and the process collector's families.
        for other in known.iter().filter(|k| k.starts_with("process_")) {
            if e.contains(other.as_str()) {
                names.insert(other.clone());
            }
        }
        assert!(!names.is_empty() || e.starts_with("up{job=\"edgeseg\""), "expr without an edgeseg metric: {e}");
        used.extend(names);
    }
    // A dead daemon must show: the Up panel reads Prometheus' `up`, not a
    // gauge the daemon itself exports (which vanishes with it, last value 1).
    assert!(exprs.iter().any(|e| e.starts_with("up{job=\"edgeseg\"")), "no panel on Prometheus' up: {exprs:?}");
    assert!(!known.contains("edgeseg_up"), "edgeseg_up is gone: Prometheus has up");
    // "Since last success" must not show the time since 1970 on a new box.
    for e in exprs.iter().filter(|e| e.contains("time() - edgeseg_last_success_timestamp_seconds")) {
        assert!(e.contains("edgeseg_last_success_timestamp_seconds{instance=~\"$instance\"} > 0"), "{e}");
    }
    // Every stat panel colours its value.
    for p in panels.iter().filter(|p| p["type"] == "stat") {
        let steps = p["fieldConfig"]["defaults"]["thresholds"]["steps"].as_array().map(Vec::len).unwrap_or(0);
        assert!(steps >= 1, "stat panel {} has no thresholds", p["title"]);
    }
    let unknown: Vec<_> = used.difference(&known).collect();
    assert!(unknown.is_empty(), "dashboard uses metrics the daemon does not export: {unknown:?}");
    for must in [
        "edgeseg_studies_total",
        "edgeseg_stage_duration_seconds",
        "edgeseg_queue_depth",
        "edgeseg_gpu_memory_used_bytes",
        "edgeseg_starts_total",
        "edgeseg_oldest_waiting_study_age_seconds",
        "edgeseg_running_study_age_seconds",
        "edgeseg_config_reload_success",
        "edgeseg_study_latency_seconds",
        "process_resident_memory_bytes",
    ] {
        assert!(used.contains(must), "dashboard lacks {must}");
    }

    let docs = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    for name in &known {
        assert!(docs.contains(&format!("`{name}`")), "docs/metrics.md does not document {name}");
    }
    let documented = metric_names_in(&docs);
    let stale: Vec<_> = documented.difference(&known).collect();
    assert!(stale.is_empty(), "docs/metrics.md names metrics that do not exist: {stale:?}");
}

/// Debian's chromium, or a failure that says how to get it (never a skip).
fn chromium() -> &'static str {
    for c in ["chromium", "chromium-browser"] {
        if Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return c;
        }
    }
    panic!("the status page test needs headless Chromium: run scripts/deps.sh (apt-get install chromium)");
}

/// Chromium headless on `url` with `extra` (--dump-dom, --screenshot=...), a fresh profile.
fn headless(url: &str, extra: &[String]) -> Output {
    let profile = tempfile::tempdir().expect("chromium profile folder");
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,900",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(extra)
    .arg(url);
    let out = run_timeout(&mut cmd, None, Duration::from_secs(120));
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn status_page_reads_well_in_headless_chromium_and_names_no_study_uid() {
    use edgeseg::observe::{QueueItem, ResultItem};
    use edgeseg::quarantine::{Record, RecordKind};
    use edgeseg::queue::uid_hash;

    let obs = observer();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let uids: Vec<String> = (0..4).map(|i| format!("1.2.826.0.1.3680043.8.498.{}", 1000 + i)).collect();
    let hashes: Vec<String> = uids.iter().map(|u| uid_hash(u)).collect();
    obs.set_engines(&[(0, "tensorrt", "fp16"), (1, "cpu", "fp32")], "cuda");
    obs.set_ready(true, true, true);
    obs.set_state(DaemonState::Running);
    obs.set_current_study(Some(&uids[0]));
    obs.set_status_line(&format!("study 1 of 2 ({}): inference", hashes[0]));
    obs.set_queue_depth(1);
    obs.set_queue_items(vec![
        QueueItem { hash: hashes[0].clone(), state: "running".into(), since: now - 7470.0, stage: "inference".into() },
        QueueItem { hash: hashes[1].clone(), state: "ready".into(), since: now - 91800.0, stage: "waiting".into() },
    ]);
    obs.study_finished(&uids[2], "done", Some(Path::new("/srv/out/x")));
    obs.add_result(ResultItem {
        hash: hashes[2].clone(),
        outcome: "done".into(),
        finished_at: now - 600.0,
        latency: Some(95.0),
        stages: vec![("load".into(), 3.25), ("inference".into(), 61.5), ("write".into(), 1.0)],
    });
    obs.add_result(ResultItem {
        hash: hashes[3].clone(),
        outcome: "quarantined".into(),
        finished_at: now - 60.0,
        latency: Some(12.0),
        stages: vec![],
    });
    obs.set_quarantined(1);
    obs.set_quarantine_records(vec![
        Record {
            name: hashes[3].clone(),
            kind: RecordKind::Study,
            since: "2026-12-05T10:00:00Z".into(),
            reason: format!(
                "3 files could not be read (/srv/export/Doe_John/a.dcm: truncated); without them: <img src=x onerror=alert(1)> study {}",
                uids[3]
            ),
            study_uid: Some(uids[3].clone()),
            files: vec!["/srv/export/Doe_John/a.dcm".into()],
        },
        Record {
            name: "file-0123456789ab".into(),
            kind: RecordKind::File,
            since: "2026-12-05T11:00:00Z".into(),
            reason: "not a DICOM file".into(),
            study_uid: None,
            files: vec![],
        },
    ]);
    obs.disk_free("output", Path::new("/var/lib/edgeseg/out"), 40 * 1024 * 1024 * 1024);
    obs.disk_free("export", Path::new("/srv/export"), 812 * 1024 * 1024);

    let server = serve_http("127.0.0.1:0".parse().unwrap(), obs.clone()).unwrap();
    let addr = server.local_addr();
    let (st, head, body) = http(addr, "GET", "/");
    assert_eq!(st, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: text/html; charset=utf-8"), "{head}");
    assert!(head.contains("Content-Security-Policy: default-src 'none'"), "{head}");
    assert!(!body.contains("<script") && !body.contains("http://") && !body.contains("https://"), "{body}");
    assert!(body.contains("&lt;img src=x onerror=alert(1)&gt;"), "the reason is escaped: {body}");

    let url = format!("http://{addr}/");
    let dom = String::from_utf8_lossy(&headless(&url, &["--dump-dom".to_string()]).stdout).into_owned();
    // Parsed by a browser: the sections, the folds, the queue, the results, the quarantine, disk.
    for want in [
        "<h1>edgeseg",
        "id=\"state\">running</dd>",
        "<td>tensorrt</td><td>fp16</td>",
        "<td>cpu</td><td>fp32</td>",
        "Queue (2)",
        // Ages chosen mid-unit, so a slow run still shows the same text.
        "2 h 4 min",
        "1 d 1 h",
        "inference",
        "Last results (2 of at most 50)",
        "load 3.2 s, inference 61.5 s, write 1.0 s",
        "1 min 35 s",
        "Quarantine (2)",
        "3 files could not be read",
        "not a DICOM file",
        "file-0123456789ab",
        "/var/lib/edgeseg/out",
        "40.0 GiB",
        "812 MiB",
    ] {
        assert!(dom.contains(want), "the page lacks {want:?}:\n{dom}");
    }
    for h in &hashes {
        assert!(dom.contains(h.as_str()), "study {h} missing:\n{dom}");
    }
    for u in &uids {
        assert!(!dom.contains(u.as_str()), "a study UID on the page:\n{dom}");
    }
    assert!(!dom.contains("Doe_John"), "a path from a reason on the page:\n{dom}");
    assert!(!dom.contains("<img"), "markup from a reason became markup:\n{dom}");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    headless(&url, &[format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("{}: no screenshot: {e}", shot.display()));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{}: {} bytes", shot.display(), png.len());
    eprintln!("status page screenshot: {}", shot.display());
}
