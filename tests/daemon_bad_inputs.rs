//! The bad-input corpus (`tests/bad-inputs/make.py`) dropped into a running
//! daemon's export folder, each kind a study of its own, then a good study.
//!
//! - The daemon survives all of it (still running, no panic in its log) and
//!   processes the good study afterwards, completely.
//! - A kind whose files have readable headers (its fault shows when the series
//!   is planned or loaded: pixel data length, mixed sizes under one UID, gantry
//!   tilt, a missing slice, a corrupt JPEG-LS stream) is quarantined:
//!   `<state>/quarantine/<study hash>/reason.txt` gives one of the manifest's
//!   reasons, the journal says `quarantined`, and no output is written for it.
//! - A file still being written when the settle time passes (`make.py
//!   slow-write`: the last slice of a series in three chunks two settle times
//!   apart) ends up processed from its complete contents (second test).
//! - Kinds the reader refuses at the header (no study can be named from them)
//!   must leave the daemon running and write nothing; the issue also wants a
//!   quarantine record for them, checked by the ignored test at the end until
//!   the watcher writes one.
//!
//! Needs the daemon (`edgeseg daemon --config`) and its test helpers
//! (`tests/daemon_util.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bad_inputs::{Manifest, Outcome};
use crate::daemon_util::{Deployment, export_study, files_under, petct_model, wait_for};
use crate::util::{cached_fixture, fixture_script, phantom, python, root, s, truth};

/// The point-wise one-channel CT model of onnx_package.py: a CT-only study is
/// run, so each kind fails on its own fault, not on a missing PET.
fn ct_model() -> PathBuf {
    cached_fixture("pointwise-ct", |d| fixture_script("onnx_package.py", &["--out", s(d), "--patch", "32"]))
        .join("model")
}

/// A deployment running the CT model, settle 1 s, pair wait 1 s.
fn deployment() -> Deployment {
    let d = Deployment::new("pair_wait_seconds = 1\n");
    let text = std::fs::read_to_string(&d.config).expect("config");
    let text = text.replace(s(&petct_model()), s(&ct_model()));
    std::fs::write(&d.config, text).expect("config");
    d
}

/// Copies a corpus folder into the export folder as it is (symlinks kept),
/// under a temporary name first so the watcher sees it whole.
fn drop_into(src: &Path, export: &Path, name: &str) {
    let part = export.join(format!("{name}.part"));
    let ok = Command::new("cp").arg("-a").arg(src).arg(&part).status().expect("cp");
    assert!(ok.success(), "cp -a {}", src.display());
    std::fs::rename(&part, export.join(name)).expect("rename");
}

fn reason_text(state: &Path, hash: &str) -> Option<String> {
    std::fs::read_to_string(state.join("quarantine").join(hash).join("reason.txt")).ok()
}

#[test]
fn the_daemon_quarantines_bad_studies_and_processes_a_good_one_after_them() {
    let corpus = crate::bad_inputs::corpus();
    let kinds = Manifest::read(&corpus).kinds;
    let d = deployment();
    let mut child = d.spawn();

    // Every kind but the slow writer (its own test below), then a good study.
    for k in &kinds {
        if k.daemon_only {
            continue;
        }
        drop_into(&corpus.join(&k.folder), &d.export, &k.kind);
    }
    let good = phantom(&["--size", "tiny", "--seed", "47"]);
    let good_uid = truth(&good)["study_instance_uid"].as_str().expect("uid").to_string();
    export_study(&good.join("dicom"), &d.export, "good", Duration::ZERO);

    let done = wait_for(Duration::from_secs(300), || {
        d.entry(&good_uid).filter(|e| e.state.as_str() == "done").map(|e| e.output_dir)
    });
    let log = d.log_text();
    assert!(child.try_wait().expect("try_wait").is_none(), "the daemon exited:\n{log}");
    assert!(!log.contains("panicked"), "a panic in the log:\n{log}");
    let out = done.flatten().unwrap_or_else(|| panic!("the good study was not processed:\n{log}"));
    assert!(out.join("labels.nii.gz").is_file() && out.join("report.json").is_file(), "{}", out.display());

    let mut failures = Vec::new();
    for k in &kinds {
        let kind = k.kind.as_str();
        if k.outcome == Outcome::Quarantine && k.series_level() {
            for uid in &k.study_uids {
                let entry =
                    wait_for(Duration::from_secs(60), || d.entry(uid).filter(|e| e.state.as_str() == "quarantined"));
                let Some(entry) = entry else {
                    failures.push(format!("{kind}: study {uid} not quarantined ({:?})", d.entry(uid)));
                    continue;
                };
                match reason_text(&d.state, &entry.hash) {
                    Some(r) if k.reasons_in(&r) => {}
                    other => failures.push(format!("{kind}: reason.txt {other:?} lacks the reasons ({})", k.reasons())),
                }
                if d.out.join(uid).exists() {
                    failures.push(format!("{kind}: an output folder was written"));
                }
            }
        }
    }
    // Nothing was written outside the output and state folders, and every
    // output file is 0640.
    use std::os::unix::fs::PermissionsExt;
    for f in files_under(&d.out) {
        let mode = std::fs::metadata(&f).expect("metadata").permissions().mode() & 0o777;
        if mode != 0o640 {
            failures.push(format!("{}: mode {mode:o}", f.display()));
        }
    }
    crate::daemon_util::signal(&child, 15);
    let _ = crate::daemon_util::wait_exit(&mut child, Duration::from_secs(60));
    assert!(failures.is_empty(), "{}\nlog:\n{}", failures.join("\n"), d.log_text());
}

/// A slice written slower than the settle time: the study may be tried while
/// the file is incomplete (the half-written file is refused), but once the
/// file is complete the changed study must run again and end done with all
/// six slices.
#[test]
fn a_file_written_slower_than_the_settle_time_is_processed_once_complete() {
    let corpus = crate::bad_inputs::corpus();
    let manifest = Manifest::read(&corpus);
    let uid = manifest.kind("slow-writer").study_uids.first().expect("study uid").clone();
    let d = deployment();
    let mut child = d.spawn();
    let src = corpus.join("slow-writer");
    let dir = d.export.join("slow-writer");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for f in files_under(&src) {
        if f.extension().is_some_and(|e| e == "dcm") {
            std::fs::copy(&f, dir.join(f.file_name().expect("name"))).expect("copy");
        }
    }
    let writer = Command::new(python())
        .arg(root().join("tests/bad-inputs/make.py"))
        .args(["slow-write", s(&src.join("slow.dcm.src")), s(&dir.join("slow.dcm")), "--seconds", "6", "--chunks", "3"])
        .status()
        .expect("slow writer runs");
    assert!(writer.success());
    // Between the writer's chunks the half-written file may stand still for
    // longer than the settle time, so a run on the 5 complete slices may come
    // first; the completed file changes the study, which runs again. What
    // must hold: the study ends done with all six slices.
    let six = |e: &edgeseg::queue::StudyEntry| {
        let out = e.output_dir.as_ref()?;
        let labels = edgeseg::export::nifti::read_f32(&out.join("labels.nii.gz")).ok()?;
        (labels.geometry.dims[2] == 6).then_some(labels.geometry.dims)
    };
    let done = wait_for(Duration::from_secs(120), || {
        d.entry(&uid).filter(|e| e.state.as_str() == "done").as_ref().and_then(six)
    });
    let entry = d.entry(&uid);
    crate::daemon_util::signal(&child, 15);
    let _ = crate::daemon_util::wait_exit(&mut child, Duration::from_secs(60));
    assert!(done.is_some(), "not processed with all 6 slices once complete: {entry:?}\n{}", d.log_text());
}

/// The issue asks for a quarantine record for every bad input, also for files
/// no study can be named from (a 0-byte file, random bytes, a header the
/// reader refuses): the watcher reports each once it has settled
/// (`StudyEvent::Unreadable`) and the daemon writes
/// `quarantine/file-<hash>/reason.txt` naming it by a hash of its path
/// (a path may name the patient) and `files.txt` (mode 0600) with its path.
#[test]
fn unreadable_files_get_a_quarantine_record_naming_them() {
    let corpus = crate::bad_inputs::corpus();
    let d = deployment();
    let mut child = d.spawn();
    let kinds = ["zero-byte", "random-bytes", "rows-0", "declared-4gb-element", "sequence-depth-bomb"];
    for kind in kinds {
        drop_into(&corpus.join(kind), &d.export, kind);
    }
    let found = wait_for(Duration::from_secs(60), || {
        let text: String = files_under(&d.state.join("quarantine"))
            .iter()
            .filter(|p| p.file_name().is_some_and(|n| n == "files.txt"))
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect();
        kinds.iter().all(|k| text.contains(k)).then_some(())
    });
    crate::daemon_util::signal(&child, 15);
    let _ = crate::daemon_util::wait_exit(&mut child, Duration::from_secs(60));
    assert!(found.is_some(), "no quarantine record names each unreadable file:\n{}", d.log_text());
}

/// A vendor export folder (variants.py `export-clutter`: the CT series in a
/// DICOMDIR file set with Philips-style DIRFILEs, an RGB secondary capture,
/// an SR, a presentation state, raw data and a sagittal single-slice
/// localizer in the same study, a CT scout in a study of its own) dropped
/// into the export folder: the study is processed once, from the axial
/// series, no file gets a quarantine record and the scout makes no study.
#[test]
fn an_export_folders_clutter_is_processed_once_without_quarantine() {
    let base = crate::ingest_formats::variants("CT");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("variants.json")).expect("manifest")).expect("json");
    let entry = manifest.as_array().expect("list").iter().find(|e| e["kind"] == "export-clutter").expect("clutter");
    let uid = entry["study_instance_uid"].as_str().expect("study uid").to_string();
    let series_uid = entry["series_instance_uid"].as_str().expect("series uid").to_string();
    let d = deployment();
    let mut child = d.spawn();
    drop_into(&base.join("export-clutter"), &d.export, "clutter");
    let done = wait_for(Duration::from_secs(180), || {
        d.entry(&uid).filter(|e| e.state.as_str() == "done").and_then(|e| e.output_dir)
    });
    let log = d.log_text();
    let entries = d.entries();
    let records: Vec<PathBuf> = files_under(&d.state.join("quarantine"));
    crate::daemon_util::signal(&child, 15);
    let _ = crate::daemon_util::wait_exit(&mut child, Duration::from_secs(60));
    let out = done.unwrap_or_else(|| panic!("the study was not processed: {:?}\n{log}", d.entry(&uid)));
    assert!(records.is_empty(), "quarantine records written: {records:?}\n{log}");
    assert_eq!(entries.len(), 1, "one study in the journal: {entries:?}");
    assert_eq!(entries[0].completions, 1, "processed once: {:?}", entries[0]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("report.json")).expect("json");
    assert!(report.to_string().contains(&series_uid), "the axial series is the input: {report}");
    for what in ["secondary capture", "structured report", "presentation state", "single-slice localizer", "DIRFILE"] {
        assert!(log.contains(what), "the log names no skipped {what}:\n{log}");
    }
}

/// Issue 13: a study exported with three CT slices that cannot be read (0
/// bytes) is quarantined, and its reason names the three unreadable files
/// (their own `file-<hash>` records) before the gap they cause; once the three
/// files arrive complete, the study is done and its record and the three file
/// records are gone: the folder holds nothing stale.
#[test]
fn unreadable_slices_are_named_first_and_every_record_goes_once_the_study_is_done() {
    use edgeseg::ingest::scan::{HeaderRead, read_header};
    let d = deployment();
    let src = phantom(&["--size", "tiny", "--seed", "49"]);
    let uid = truth(&src)["study_instance_uid"].as_str().expect("uid").to_string();
    let dicom = src.join("dicom");
    let mut ct: Vec<(i64, PathBuf)> = files_under(&dicom.join("CT"))
        .into_iter()
        .filter_map(|p| match read_header(&p, &p) {
            Ok(HeaderRead::Image(h)) => Some((h.instance_number.unwrap_or(0), p)),
            _ => None,
        })
        .collect();
    ct.sort();
    assert!(ct.len() >= 8, "{} CT slices", ct.len());
    let mid = ct.len() / 2;
    let broken: Vec<PathBuf> = ct[mid - 1..=mid + 1].iter().map(|(_, p)| p.clone()).collect();
    // The study with the three slices empty, as an interrupted transfer leaves them.
    let staged = d.root.path().join("staged");
    export_study(&dicom, &staged, "s", Duration::ZERO);
    for b in &broken {
        std::fs::write(staged.join("s").join(b.strip_prefix(&dicom).expect("under dicom")), b"").expect("emptied");
    }
    let mut child = d.spawn();
    export_study(&staged.join("s"), &d.export, "s", Duration::ZERO);
    let q = wait_for(Duration::from_secs(120), || d.entry(&uid).filter(|e| e.state.as_str() == "quarantined"));
    let qroot = d.state.join("quarantine");
    let records = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&qroot)
            .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let Some(q) = q else {
        crate::daemon_util::signal(&child, 15);
        panic!("not quarantined: {:?}\n{}", d.entry(&uid), d.log_text());
    };
    let reason = reason_text(&d.state, &q.hash).expect("reason.txt");
    let line = reason.lines().find(|l| l.starts_with("reason: ")).unwrap_or_default().to_string();
    assert!(line.starts_with("reason: 3 files could not be read (file-"), "{reason}");
    assert!(!reason.contains("Unpaired {") && !reason.contains("Os {"), "{reason}");
    let files: Vec<String> = records().into_iter().filter(|r| r.starts_with("file-")).collect();
    assert_eq!(files.len(), 3, "{:?}", records());
    for f in &files {
        assert!(line.contains(f.as_str()), "{f} not named in {line}");
    }

    // The three slices arrive complete: the study runs again and is done.
    for b in &broken {
        let to = d.export.join("s").join(b.strip_prefix(&dicom).expect("under dicom"));
        let part = to.with_extension("part");
        std::fs::copy(b, &part).expect("copy");
        std::fs::rename(&part, &to).expect("rename");
    }
    let done = wait_for(Duration::from_secs(120), || d.entry(&uid).filter(|e| e.state.as_str() == "done"));
    let emptied = wait_for(Duration::from_secs(30), || records().is_empty().then_some(()));
    crate::daemon_util::signal(&child, 15);
    let _ = crate::daemon_util::wait_exit(&mut child, Duration::from_secs(60));
    assert!(done.is_some(), "not done after the files arrived: {:?}\n{}", d.entry(&uid), d.log_text());
    assert!(emptied.is_some(), "stale quarantine records: {:?}\n{}", records(), d.log_text());
}
