//! `edgeseg daemon` as a subprocess on temporary folders with the simulated
//! PET/CT package (no ONNX Runtime: the network is incidental here):
//! a generated study exported file by file with pauses (PET first, the CT
//! after a pause longer than the settle time) is processed once, its outputs
//! written once; temporary names and stray files are ignored; SIGTERM stops
//! the daemon cleanly; a restart does not process the study again.

use std::time::Duration;

use edgeseg::queue::StudyState;

use crate::daemon_util::{Deployment, assert_output_complete, export_study, names, signal, study, wait_exit, wait_for};

#[test]
fn daemon_processes_an_exported_study_once() {
    let (src, uid) = study(21);
    let d = Deployment::simulated("");
    let mut child = d.spawn();
    d.wait_watching();
    // Stray files: a temporary name never renamed, and a non-DICOM file.
    std::fs::write(d.export.join("incoming.part"), b"half a file").expect("write");
    std::fs::write(d.export.join("README.txt"), b"not DICOM").expect("write");
    // PET now; the CT after a pause longer than settle_seconds: the study must
    // wait for its pair rather than run with the PET alone.
    export_study(&src.join("PT"), &d.export, "st/PT", Duration::from_millis(10));
    std::thread::sleep(Duration::from_millis(2500));
    let e = d.entry(&uid).expect("the study is in the journal");
    assert_eq!(e.state, StudyState::Seen, "PET alone is not ready (pair_wait_seconds 600)");
    export_study(&src.join("CT"), &d.export, "st/CT", Duration::from_millis(10));
    let done = wait_for(Duration::from_secs(120), || d.entry(&uid).filter(|e| e.state.is_final()));
    let e = done.unwrap_or_else(|| panic!("not done in time; log:\n{}", d.log_text()));
    assert_eq!(e.state, StudyState::Done, "{:?}\n{}", e.last_error, d.log_text());
    assert_eq!((e.attempts, e.completions), (1, 1));
    assert_eq!(e.files.len(), 24 + 48, "every PET and CT file, nothing else");
    assert_output_complete(&d.out, &uid);
    assert_eq!(names(&d.out), vec![uid.clone()], "no staging folder left");
    let report = std::fs::metadata(d.out.join(&uid).join("report.json")).expect("report");
    // Nothing more happens while the files stay as they are.
    std::thread::sleep(Duration::from_secs(3));
    let e = d.entry(&uid).expect("entry");
    assert_eq!((e.state, e.attempts, e.completions), (StudyState::Done, 1, 1));
    // SIGTERM: a clean stop.
    signal(&child, 15);
    let status = wait_exit(&mut child, Duration::from_secs(30)).expect("stops on SIGTERM");
    assert!(status.success(), "exit {status:?}\n{}", d.log_text());
    // A restart sees the same files and does not process them again.
    let mut child = d.spawn();
    std::thread::sleep(Duration::from_secs(4));
    let e = d.entry(&uid).expect("entry");
    assert_eq!((e.state, e.attempts, e.completions), (StudyState::Done, 1, 1), "{}", d.log_text());
    let again = std::fs::metadata(d.out.join(&uid).join("report.json")).expect("report");
    assert_eq!(report.modified().ok(), again.modified().ok(), "outputs written once");
    signal(&child, 2);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).expect("stops on SIGINT").success());
    // The log names the study by its hash only.
    let log = d.log_text();
    assert!(log.contains(&edgeseg::queue::uid_hash(&uid)), "{log}");
    assert!(!log.contains("Phantom^") && !log.contains("PHANTOM-"), "no patient name or ID in the log");
}

#[test]
fn daemon_poll_mode_symlinks_and_late_files() {
    let (src, uid) = study(22);
    let (outside_src, outside_uid) = study(23);
    let d = Deployment::simulated("mode = \"poll\"\n");
    // A symlink leading out of the export folder is never followed.
    let outside = d.root.path().join("outside");
    export_study(&outside_src, &outside, "x", Duration::ZERO);
    std::os::unix::fs::symlink(outside.join("x"), d.export.join("link")).expect("symlink");
    let mut child = d.spawn();
    export_study(&src, &d.export, "st", Duration::from_millis(5));
    let e = wait_for(Duration::from_secs(120), || d.entry(&uid).filter(|e| e.state.is_final()));
    let e = e.unwrap_or_else(|| panic!("{}", d.log_text()));
    assert_eq!((e.state, e.attempts, e.completions), (StudyState::Done, 1, 1), "{:?}", e.last_error);
    assert!(d.log_text().contains("polling") || d.log_text().contains("inotify=false"), "{}", d.log_text());
    assert!(d.entry(&outside_uid).is_none(), "the study behind the symlink is not taken");
    // A file arriving after the study is done: the study runs again (rule of
    // the queue: added or rewritten files re-run a finished study).
    let one = crate::daemon_util::files_under(&src.join("CT")).into_iter().next().expect("a CT file");
    std::fs::copy(&one, d.export.join("st/CT/late-copy.dcm")).expect("copy");
    let again = wait_for(Duration::from_secs(120), || d.entry(&uid).filter(|e| e.completions == 2));
    let again = again.unwrap_or_else(|| panic!("{:?}\n{}", d.entry(&uid), d.log_text()));
    assert_eq!(again.state, StudyState::Done);
    assert_eq!(again.files.len(), 24 + 48 + 1);
    assert_output_complete(&d.out, &uid);
    assert_eq!(names(&d.out), vec![uid.clone()]);
    // SIGHUP reloads the configuration (a new settle time) without losing work.
    d.write_config("mode = \"poll\"\nsettle_seconds_typo = 1\n");
    signal(&child, 1);
    assert!(
        wait_for(Duration::from_secs(10), || d.log_text().contains("keeping the running one").then_some(())).is_some(),
        "an invalid file is refused on reload: {}",
        d.log_text()
    );
    d.write_config("mode = \"poll\"\n[queue]\nmax_attempts = 5\n");
    signal(&child, 1);
    assert!(
        wait_for(Duration::from_secs(10), || d.log_text().contains("configuration reloaded").then_some(())).is_some()
    );
    assert!(child.try_wait().expect("wait").is_none(), "still running after SIGHUP");
    assert_eq!(d.entry(&uid).map(|e| (e.state, e.completions)), Some((StudyState::Done, 2)));
    signal(&child, 15);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).expect("stops").success());
}

#[test]
fn daemon_refuses_an_invalid_config_with_its_places() {
    let d = Deployment::simulated("settle = 3\n");
    let mut child = d.spawn();
    let status = wait_exit(&mut child, Duration::from_secs(30)).expect("exits");
    assert_eq!(status.code(), Some(1));
    let log = d.log_text();
    let place = format!("{}:5:1: unknown field `settle`", d.config.display());
    assert!(log.contains(&place), "{log}");
    assert!(!d.state.join("journal.sqlite").exists(), "nothing started");
}

#[test]
fn daemon_waits_for_the_expected_image_count_but_not_forever() {
    let (src, uid) = study(24);
    let d = Deployment::simulated("pair_wait_seconds = 6\n");
    let mut child = d.spawn();
    d.wait_watching();
    // Every file but one PET slice (NumberOfSlices says 24).
    export_study(&src, &d.export, "st", Duration::ZERO);
    let missing = crate::daemon_util::files_under(&d.export.join("st/PT")).into_iter().nth(5).expect("a PET file");
    let kept = d.root.path().join("held-back.dcm");
    std::fs::rename(&missing, &kept).expect("hold one back");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(d.entry(&uid).map(|e| e.state), Some(StudyState::Seen), "23 of 24 PET images: not complete");
    // The study is not held back for good: after pair_wait_seconds it is
    // taken with what it has, and the pipeline decides (here: a gap in the
    // slices, so quarantine with the reason; the input stays).
    let e = wait_for(Duration::from_secs(60), || d.entry(&uid).filter(|e| e.state.is_final()));
    let e = e.unwrap_or_else(|| panic!("{}", d.log_text()));
    assert!(matches!(e.state, StudyState::Done | StudyState::Quarantined), "{e:?}");
    assert_eq!(e.files.len(), 23 + 48);
    signal(&child, 15);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).expect("stops").success());
}

#[test]
fn daemon_refuses_a_second_instance_on_the_same_state_folder() {
    let d = Deployment::simulated("");
    let mut first = d.spawn();
    d.wait_watching();
    let mut second = d.spawn();
    let status = wait_exit(&mut second, Duration::from_secs(30)).expect("the second exits");
    assert_eq!(status.code(), Some(1));
    assert!(d.log_text().contains("another edgeseg daemon is running"), "{}", d.log_text());
    assert!(first.try_wait().expect("wait").is_none(), "the first keeps running");
    signal(&first, 15);
    assert!(wait_exit(&mut first, Duration::from_secs(30)).expect("stops").success());
}
