//! The service loop in process, with a [`Reporter`] that records every call
//! and [`Command`]s sent as the D-Bus interface sends them: readiness before
//! work, states and STATUS lines, StudyFinished for done and quarantined
//! studies, Pause/Resume, Reprocess, Enqueue, bad input to quarantine (input
//! kept, reason written), the disk guard through a reload, and a clean stop.
//! With the simulated PET/CT package: no ONNX Runtime is loaded.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgeseg::queue::StudyState;
use edgeseg::service::{
    self, Command, Control, DaemonState, FileResult, FolderRole, Readiness, Reporter, StudyOutcome,
};

use crate::daemon_util::{
    Deployment, assert_output_complete, export_study, files_under, pet_only_study, study, wait_for,
};

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Recorder {
    fn push(&self, s: String) {
        self.0.lock().expect("lock").push(s);
    }
    fn calls(&self) -> Vec<String> {
        self.0.lock().expect("lock").clone()
    }
    fn has(&self, prefix: &str) -> bool {
        self.calls().iter().any(|c| c.starts_with(prefix))
    }
    fn position(&self, prefix: &str) -> Option<usize> {
        self.calls().iter().position(|c| c.starts_with(prefix))
    }
}

impl Reporter for Recorder {
    fn set_state(&self, state: DaemonState) {
        self.push(format!("state {}", state.as_str()));
    }
    fn set_status_line(&self, line: &str) {
        self.push(format!("status {line}"));
    }
    fn study_finished(&self, uid: &str, outcome: StudyOutcome, dir: Option<&Path>) {
        self.push(format!(
            "finished {uid} {} {}",
            outcome.as_str(),
            dir.map(|d| d.display().to_string()).unwrap_or_default()
        ));
    }
    fn observe_stage(&self, stage: &str, seconds: f64) {
        assert!(seconds >= 0.0);
        self.push(format!("stage {stage}"));
    }
    fn set_queue_depth(&self, depth: u64) {
        self.push(format!("depth {depth}"));
    }
    fn set_quarantined(&self, n: u64) {
        self.push(format!("quarantined {n}"));
    }
    fn set_current_study(&self, uid: Option<&str>) {
        self.push(format!("current {}", uid.unwrap_or("-")));
    }
    fn set_ready(&self, r: Readiness) {
        self.push(format!("ready {} {} {}", r.model_loaded, r.watch_armed, r.disk_ok));
    }
    fn disk_free(&self, role: FolderRole, _: &Path, _: u64) {
        self.push(format!("disk {}", role.as_str()));
    }
    fn notify_ready(&self) {
        self.push("notify ready".into());
    }
    fn notify_watchdog(&self) {}
    fn notify_stopping(&self) {
        self.push("notify stopping".into());
    }
    fn model_loaded(&self, m: &service::ModelSummary) {
        self.push(format!("model {} {} {:?}", m.name, m.sha256.len(), m.providers));
    }
    fn starts(&self, total: u64) {
        self.push(format!("starts {total}"));
    }
    fn study_ages(&self, waiting: Option<f64>, running: Option<f64>) {
        if let Some(w) = waiting {
            assert!(w >= 0.0);
            self.push("age waiting".into());
        }
        if let Some(r) = running {
            assert!(r >= 0.0);
            self.push("age running".into());
        }
    }
    fn config_reloaded(&self, ok: bool) {
        self.push(format!("reloaded {ok}"));
    }
    fn files(&self, result: FileResult, count: u64) {
        self.push(format!("files {} {count}", result.as_str()));
    }
    fn study_latency(&self, seconds: f64) {
        assert!(seconds > 0.0);
        self.push("latency".into());
    }
    fn queue_items(&self, items: Vec<edgeseg::observe::QueueItem>) {
        let all: Vec<String> = items.iter().map(|q| format!("{} {} {}", q.hash, q.state, q.stage)).collect();
        self.push(format!("queue [{}]", all.join("; ")));
    }
    fn study_result(&self, r: edgeseg::observe::ResultItem) {
        self.push(format!("result {} {} {} {}", r.hash, r.outcome, r.stages.len(), r.latency.is_some()));
    }
    fn quarantine_records(&self, records: Vec<edgeseg::quarantine::Record>) {
        let names: Vec<String> = records.iter().map(|r| format!("{}={}", r.name, r.reason)).collect();
        self.push(format!("qrecords [{}]", names.join(" | ")));
    }
}

fn entry_state(d: &Deployment, uid: &str) -> Option<StudyState> {
    d.entry(uid).map(|e| e.state)
}

#[test]
fn service_reports_commands_and_quarantine() {
    let (a_src, a) = study(31);
    let (b_src, b) = study(32);
    let (bad_src, bad) = pet_only_study(33);
    // Pair wait 0: the PET-only study runs at once with what it has.
    let d = Deployment::simulated("pair_wait_seconds = 0\n");
    let rec = Recorder::default();
    let control = Control::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let (config, r2, c2) = (d.config.clone(), rec.clone(), control.clone());
    let daemon = std::thread::spawn(move || service::run(&config, &r2, &c2, &rx));

    assert!(wait_for(Duration::from_secs(60), || rec.has("notify ready").then_some(())).is_some(), "{:?}", rec.calls());
    assert!(rec.has("ready true true true"));
    assert!(rec.has("model pointwise-petct-test 64 [(0, \"simulated\")"), "{:?}", rec.calls());
    assert!(rec.position("model ").expect("model") < rec.position("notify ready").expect("ready"));
    export_study(&a_src, &d.export, "a", Duration::ZERO);
    let done = wait_for(Duration::from_secs(60), || (entry_state(&d, &a) == Some(StudyState::Done)).then_some(()));
    assert!(done.is_some(), "{:?}\n{:?}", d.entry(&a), rec.calls());
    assert_output_complete(&d.out, &a);
    let ready_at = rec.position("notify ready").expect("ready");
    let finished_at = rec.position(&format!("finished {a} done {}", d.out.join(&a).display())).expect("finished");
    assert!(ready_at < finished_at, "READY before any work");
    for want in [
        "state starting",
        "state idle",
        "state running",
        "current ",
        "stage inference",
        "disk output",
        "disk state",
        "disk export",
        "starts 1",
        "age running",
        "latency",
    ] {
        assert!(rec.has(want), "{want} missing: {:?}", rec.calls());
    }
    assert!(
        rec.calls().iter().any(|c| c.starts_with("status study 1 of 1") && c.ends_with("inference")),
        "{:?}",
        rec.calls()
    );

    // Pause: a complete study waits; Resume: it runs.
    tx.send(Command::Pause).expect("send");
    assert!(wait_for(Duration::from_secs(10), || rec.has("state paused").then_some(())).is_some(), "{:?}", rec.calls());
    export_study(&b_src, &d.export, "b", Duration::ZERO);
    assert!(
        wait_for(Duration::from_secs(20), || (entry_state(&d, &b) == Some(StudyState::Ready)).then_some(())).is_some()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(entry_state(&d, &b), Some(StudyState::Ready), "paused: not started");
    // The status page's queue names it by hash, waiting.
    let hb = edgeseg::queue::uid_hash(&b);
    assert!(
        wait_for(Duration::from_secs(10), || rec.has(&format!("queue [{hb} ready waiting]")).then_some(())).is_some(),
        "{:?}",
        rec.calls()
    );
    assert!(rec.calls().iter().all(|c| !c.starts_with("queue") || !c.contains(&b)), "a UID in the queue report");
    assert!(rec.has(&format!("result {} done 6 true", edgeseg::queue::uid_hash(&a))), "{:?}", rec.calls());
    // Stale quarantine records, as an earlier attempt of b would have left
    // them: b's own, one of a file that is now part of b, one of a file that
    // is gone; and one of an unrelated file that is still there (it stays).
    let qroot = d.state.join("quarantine");
    let record = |name: &str, text: String| {
        std::fs::create_dir_all(qroot.join(name)).expect("record folder");
        std::fs::write(qroot.join(name).join("reason.txt"), text).expect("reason.txt");
    };
    record(
        &hb,
        format!("study_instance_uid: {b}\nstudy_hash: {hb}\nquarantined_at: x\nreason: 3 files could not be read\n"),
    );
    let b_file = files_under(&d.export.join("b")).into_iter().next().expect("a file of b");
    let unrelated = d.root.path().join("unrelated.bin");
    std::fs::write(&unrelated, b"not DICOM").expect("unrelated file");
    for (name, f) in [
        ("file-aaaaaaaaaaaa", b_file.clone()),
        ("file-bbbbbbbbbbbb", d.root.path().join("gone.dcm")),
        ("file-cccccccccccc", unrelated.clone()),
    ] {
        record(name, format!("file: {:?}\nquarantined_at: x\nreason: truncated header\n", f.display().to_string()));
    }
    tx.send(Command::Resume).expect("send");
    assert!(
        wait_for(Duration::from_secs(60), || (entry_state(&d, &b) == Some(StudyState::Done)).then_some(())).is_some()
    );
    // b done: its record and the stale file records are gone, the gauge's
    // records and the folder agree.
    let left = wait_for(Duration::from_secs(10), || {
        let mut names: Vec<String> = std::fs::read_dir(&qroot)
            .expect("quarantine folder")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        (names == ["file-cccccccccccc"]).then_some(names)
    });
    assert!(
        left.is_some(),
        "{:?}",
        std::fs::read_dir(&qroot).map(|r| r.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    assert!(
        wait_for(Duration::from_secs(10), || rec.has("qrecords [file-cccccccccccc=truncated header]").then_some(()))
            .is_some(),
        "{:?}",
        rec.calls()
    );

    // Reprocess: the study runs again, its folder replaced whole.
    tx.send(Command::Reprocess(a.clone())).expect("send");
    let again = wait_for(Duration::from_secs(60), || d.entry(&a).filter(|e| e.completions == 2));
    assert_eq!(again.expect("reprocessed").state, StudyState::Done);
    assert_output_complete(&d.out, &a);

    // Bad input through Enqueue (a folder outside the export folder): quarantined, input kept.
    let elsewhere = d.root.path().join("elsewhere");
    export_study(&bad_src, &elsewhere, "bad", Duration::ZERO);
    let before: Vec<PathBuf> = files_under(&elsewhere);
    tx.send(Command::Enqueue(elsewhere.clone())).expect("send");
    let q = wait_for(Duration::from_secs(60), || d.entry(&bad).filter(|e| e.state.is_final()));
    let q = q.unwrap_or_else(|| panic!("{:?}", rec.calls()));
    assert_eq!(q.state, StudyState::Quarantined, "{:?}", q.last_error);
    assert!(q.last_error.as_deref().is_some_and(|e| e.contains("PET/CT pair")), "{:?}", q.last_error);
    let qdir = d.state.join("quarantine").join(edgeseg::queue::uid_hash(&bad));
    let reason = std::fs::read_to_string(qdir.join("reason.txt")).expect("reason.txt");
    assert!(reason.contains(&bad) && reason.contains("PET/CT pair"), "{reason}");
    // No Rust debug text: the pairing in words.
    assert!(!reason.contains("Unpaired {") && !reason.contains("study_uid:"), "{reason}");
    assert!(reason.contains("a PT series with no CT series in its frame of reference"), "{reason}");
    // Quarantine command: Clear takes the record away and the study out of the count.
    let hbad = edgeseg::queue::uid_hash(&bad);
    assert!(rec.has(&format!("result {hbad} quarantined 0 true")), "{:?}", rec.calls());
    assert!(
        wait_for(Duration::from_secs(10), || rec
            .calls()
            .iter()
            .any(|c| c.starts_with("qrecords") && c.contains(&hbad))
            .then_some(()))
        .is_some(),
        "{:?}",
        rec.calls()
    );
    let listed = std::fs::read_to_string(qdir.join("files.txt")).expect("files.txt");
    assert_eq!(listed.lines().count(), before.len());
    assert_eq!(files_under(&elsewhere), before, "the input stays");
    // Reports follow the journal's commit.
    let reported = wait_for(Duration::from_secs(10), || {
        (rec.has(&format!("finished {bad} quarantined {}", qdir.display())) && rec.has("quarantined 1")).then_some(())
    });
    assert!(reported.is_some(), "{:?}", rec.calls());
    assert!(!d.out.join(&bad).exists(), "no output for a quarantined study");
    // Files: those of the studies done went in, the quarantined study's were refused.
    let ingested = |c: &String| c.strip_prefix("files ingested ").and_then(|n| n.parse::<u64>().ok());
    assert!(
        rec.calls().iter().filter_map(ingested).all(|n| n > 0) && rec.calls().iter().any(|c| ingested(c).is_some())
    );
    assert!(rec.has(&format!("files refused {}", before.len())), "{:?}", rec.calls());
    tx.send(Command::ClearQuarantine(hbad.clone())).expect("send");
    let cleared = wait_for(Duration::from_secs(10), || d.entry(&bad).filter(|e| e.state == StudyState::Failed));
    assert!(cleared.is_some(), "{:?}", d.entry(&bad));
    assert!(!qdir.exists(), "the record is removed");
    assert!(
        wait_for(Duration::from_secs(10), || {
            let last = rec.calls().into_iter().rev().find(|c| c.starts_with("quarantined "));
            (last.as_deref() == Some("quarantined 0")).then_some(())
        })
        .is_some(),
        "{:?}",
        rec.calls()
    );
    assert_eq!(files_under(&elsewhere), before, "the input stays");

    // A reload of a broken file is refused (and reported); the running configuration stays.
    d.write_config("pair_wait_seconds = -3\n");
    tx.send(Command::ReloadConfig).expect("send");
    assert!(
        wait_for(Duration::from_secs(10), || rec.has("reloaded false").then_some(())).is_some(),
        "{:?}",
        rec.calls()
    );

    // Disk guard through a reload: a threshold above the free space pauses intake.
    d.write_config("pair_wait_seconds = 0\n[disk]\nmin_free_mb = 100000000\n");
    tx.send(Command::ReloadConfig).expect("send");
    assert!(
        wait_for(Duration::from_secs(10), || rec.has("state disk_low").then_some(())).is_some(),
        "{:?}",
        rec.calls()
    );
    assert!(rec.has("ready true true false"));
    assert!(rec.has("reloaded true"), "{:?}", rec.calls());

    control.stop.store(true, Ordering::SeqCst);
    let r = daemon.join().expect("thread");
    assert!(r.is_ok(), "{r:?}");
    assert!(rec.has("notify stopping") && rec.has("state stopping"));

    // A second start counts on from the journal (a crash loop shows in monitoring).
    let rec2 = Recorder::default();
    let control2 = Control::default();
    let (_tx2, rx2) = std::sync::mpsc::channel();
    let (config, r2, c2) = (d.config.clone(), rec2.clone(), control2.clone());
    let again = std::thread::spawn(move || service::run(&config, &r2, &c2, &rx2));
    assert!(wait_for(Duration::from_secs(60), || rec2.has("starts 2").then_some(())).is_some(), "{:?}", rec2.calls());
    control2.stop.store(true, Ordering::SeqCst);
    assert!(again.join().expect("thread").is_ok());
}

/// Issue 12, item 1: `[gpu] postprocess = "cuda"` where CUDA cannot run (a
/// build without the `cuda` feature, or no device) refuses to start, naming
/// the key and the way out, before READY; `auto` is the setting that falls
/// back. (On a box where the CUDA kernels run, the daemon starts: nothing to check.)
#[test]
fn gpu_postprocess_cuda_without_cuda_refuses_to_start() {
    if edgeseg::gpu::Backend::cuda().is_ok() {
        return;
    }
    let d = Deployment::simulated("[gpu]\npostprocess = \"cuda\"\n");
    let rec = Recorder::default();
    let (_tx, rx) = std::sync::mpsc::channel();
    let e = service::run(&d.config, &rec, &Control::default(), &rx).expect_err("refused");
    let msg = e.to_string();
    assert!(msg.contains("postprocess = \"cuda\"") && msg.contains("\"auto\""), "{msg}");
    assert!(!msg.contains("NotCompiled") && !msg.contains("Cuda("), "no Rust debug text: {msg}");
    assert!(!rec.has("notify ready") && !rec.has("model "), "{:?}", rec.calls());
}
