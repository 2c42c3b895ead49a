//! No patient data in what the daemon says (issue 13, items 2 and 13).
//!
//! DICOM receivers name folders after the patient (storescp
//! `--sort-on-patientname`): studies exported under `Doe^John_19600101/`,
//! one with a truncated CT slice (quarantined when loaded, its reason built
//! from errors that embed paths) and a 0-byte file (no study can be named
//! from it), one good study sent twice. No log line, `reason.txt` or metric
//! names the patient or a full StudyInstanceUID; `files.txt` has the full
//! paths, mode 0600. The log lines are self-contained (values in the text),
//! "files changed" is logged once per arrival and duplicate SOP instances
//! once per series, and ONNX Runtime's own INFO lines stay out. The metrics
//! listen on `localhost:0` (a host name).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use edgeseg::queue::{StudyState, uid_hash};

use crate::daemon_util::{Deployment, export_study, files_under, study, wait_for};
use crate::observe_http::http;

const PATIENT_PARTS: [&str; 5] = ["Doe", "19600101", "19700202", "John", "Jane"];

#[test]
fn paths_naming_the_patient_stay_out_of_logs_records_and_metrics() {
    let d = Deployment::new("");
    // A host name as the metrics address (item 12: it was refused).
    let config = std::fs::read_to_string(&d.config).expect("config");
    assert!(config.contains("listen = \"127.0.0.1:0\""), "{config}");
    std::fs::write(&d.config, config.replace("listen = \"127.0.0.1:0\"", "listen = \"localhost:0\"")).expect("config");
    let mut child = d.spawn();
    d.wait_watching();
    let log = d.log_text();
    assert!(log.contains("daemon state: idle"), "the state in the message text:\n{log}");
    assert!(log.contains(&format!("watching {}", d.export.display())), "the folders in the message text:\n{log}");

    // Study A: a CT slice cut short, and a 0-byte file beside it.
    let (src_a, uid_a) = study(61);
    let broken = tempfile::tempdir().expect("tempdir");
    let copy = broken.path().join("dicom");
    let ok = std::process::Command::new("cp").arg("-a").arg(&src_a).arg(&copy).status().expect("cp");
    assert!(ok.success());
    let ct = files_under(&copy.join("CT"));
    let victim = ct.get(ct.len() / 2).expect("a CT file");
    let len = std::fs::metadata(victim).expect("meta").len();
    let f = std::fs::OpenOptions::new().write(true).open(victim).expect("open");
    f.set_len(len - 200).expect("truncate");
    drop(f);
    export_study(&copy, &d.export, "Doe^John_19600101", Duration::ZERO);
    std::fs::write(d.export.join("Doe^John_19600101/empty.dcm"), b"").expect("0-byte file");

    // Study B: file by file (many scans see it change), then sent again.
    let (src_b, uid_b) = study(62);
    export_study(&src_b, &d.export, "Doe^Jane_19700202", Duration::from_millis(40));
    let quarantined = wait_for(Duration::from_secs(180), || {
        d.entry(&uid_a).filter(|e| e.state == StudyState::Quarantined).map(|_| ())
    });
    assert!(quarantined.is_some(), "study A quarantined; log:\n{}", d.log_text());
    let done = wait_for(Duration::from_secs(180), || d.entry(&uid_b).filter(|e| e.state == StudyState::Done));
    assert!(done.is_some(), "study B done; log:\n{}", d.log_text());
    export_study(&src_b, &d.export, "Doe^Jane_19700202_again", Duration::ZERO);
    let again = wait_for(Duration::from_secs(180), || {
        d.entry(&uid_b).filter(|e| e.state == StudyState::Done && e.completions >= 2).map(|_| ())
    });
    assert!(again.is_some(), "study B done again; log:\n{}", d.log_text());
    let file_record = wait_for(Duration::from_secs(60), || {
        crate::daemon_util::names(&d.state.join("quarantine")).into_iter().find(|n| n.starts_with("file-"))
    });
    assert!(file_record.is_some(), "the 0-byte file's record; log:\n{}", d.log_text());

    // Metrics.
    let log = d.log_text();
    let at = log.find("metrics on http://").expect("metrics address") + "metrics on http://".len();
    let addr: std::net::SocketAddr = log[at..].split('/').next().and_then(|a| a.parse().ok()).expect("address");
    let (code, _, metrics) = http(addr, "GET", "/metrics");
    assert_eq!(code, 200);
    crate::daemon_util::signal(&child, 15);
    let _ = crate::daemon_util::wait_exit(&mut child, Duration::from_secs(60));
    let log = d.log_text();

    for part in PATIENT_PARTS {
        assert!(!log.contains(part), "{part} in the log:\n{log}");
        assert!(!metrics.contains(part), "{part} in the metrics:\n{metrics}");
    }
    // No UID at all in the log (the quarantine reason named the series).
    assert!(!log.contains("1.2.826.0.1.3680043"), "a full UID in the log:\n{log}");
    for uid in [&uid_a, &uid_b] {
        assert!(!log.contains(uid.as_str()), "the full UID {uid} in the log:\n{log}");
        assert!(log.contains(&uid_hash(uid)), "study {uid} by its hash:\n{log}");
    }
    // The records: reason.txt names files by hash; files.txt has the paths, 0600.
    let records = files_under(&d.state.join("quarantine"));
    let reasons: Vec<_> = records.iter().filter(|p| p.file_name().is_some_and(|n| n == "reason.txt")).collect();
    assert!(reasons.len() >= 2, "{records:?}");
    for r in &reasons {
        let text = std::fs::read_to_string(r).expect("reason.txt");
        for part in PATIENT_PARTS {
            assert!(!text.contains(part), "{part} in {}:\n{text}", r.display());
        }
        assert!(text.contains("file "), "a file named by its hash in {}:\n{text}", r.display());
        let list = r.with_file_name("files.txt");
        let paths = std::fs::read_to_string(&list).expect("files.txt");
        assert!(paths.contains("Doe^John_19600101/"), "{paths}");
        let mode = std::fs::metadata(&list).expect("files.txt").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", list.display());
    }
    // A file's hash is that of its path relative to the watch folder.
    let empty_hash = uid_hash("Doe^John_19600101/empty.dcm");
    assert!(log.contains(&format!("file {empty_hash}")), "{log}");

    // Quiet: one "files changed" per arrival, one duplicate line per series,
    // no ONNX Runtime INFO lines.
    let changed = log.lines().filter(|l| l.contains("files changed")).count();
    assert!(changed <= 3, "{changed} 'files changed' lines:\n{log}");
    let duplicates = log.lines().filter(|l| l.contains("duplicate SOP instance")).count();
    assert!((1..=2).contains(&duplicates), "{duplicates} duplicate lines (2 series):\n{log}");
    assert!(!log.lines().any(|l| l.contains("ort::") && l.contains(" INFO ")), "ONNX Runtime INFO lines:\n{log}");
}
