//! Issue 11 in the daemon: a whole-body PET/CT export whose PET slices sit in
//! six overlapping bed positions (junction gaps off the nominal spacing by
//! more than the 1 % the reader once allowed), with the clutter a vendor
//! export writes beside it (DIRFILE, DICOMDIR, a screen shot, a dose SR, a
//! sagittal localizer, all of the same study), is processed once, with no
//! quarantine record for the clutter, and its report records the PET's
//! largest deviation from the uniform grid.

use std::time::Duration;

use edgeseg::queue::StudyState;

use crate::daemon_util::{Deployment, assert_output_complete, export_study, signal, study, wait_exit, wait_for};
use crate::util::{cached_fixture, fixture_script, s};

#[test]
fn issue_11_daemon_processes_a_whole_body_export_with_overlapping_beds_once() {
    let (src, uid) = study(31);
    let beds = cached_fixture("geometry-beds-study-31-clutter", |d| {
        fixture_script("geometry.py", &["--out", s(d), "--kind", "beds-study", "--study", s(&src)]);
    });
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(beds.join("truth.json")).expect("truth")).expect("json");
    let spacing = truth["spacing_mm"].as_f64().expect("spacing");
    let worst_gap = truth["gaps_mm"]
        .as_array()
        .expect("gaps")
        .iter()
        .map(|g| (g.as_f64().expect("gap") - spacing).abs())
        .fold(0f64, f64::max);
    assert!(worst_gap > 0.01 * spacing, "the junctions break the old 1 % rule ({worst_gap} mm of {spacing})");
    let d = Deployment::new("");
    let mut child = d.spawn();
    d.wait_watching();
    export_study(&beds.join("dicom"), &d.export, "wholebody", Duration::ZERO);
    let done = wait_for(Duration::from_secs(120), || d.entry(&uid).filter(|e| e.state.is_final()));
    let e = done.unwrap_or_else(|| panic!("not done in time; log:\n{}", d.log_text()));
    assert_eq!(e.state, StudyState::Done, "{:?}\n{}", e.last_error, d.log_text());
    assert_eq!((e.attempts, e.completions), (1, 1));
    assert_output_complete(&d.out, &uid);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.out.join(&uid).join("report.json")).expect("report"))
            .expect("json");
    let pet = report["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .find(|i| i["modality"] == "PT")
        .unwrap_or_else(|| panic!("no PT input: {report}"));
    assert_eq!(pet["slice_grid"]["method"], "none", "{pet}");
    let dev = pet["slice_grid"]["max_deviation_mm"].as_f64().expect("deviation");
    let want = truth["max_deviation_mm"].as_f64().expect("truth deviation");
    assert!((dev - want).abs() < 1e-6, "deviation {dev}, the fixture's {want}");
    // Processed once: nothing more happens while the files stay as they are.
    std::thread::sleep(Duration::from_secs(3));
    let e = d.entry(&uid).expect("entry");
    assert_eq!((e.state, e.attempts, e.completions), (StudyState::Done, 1, 1), "{}", d.log_text());
    // The clutter: no quarantine record, no study of its own, each file named once as skipped.
    let clutter: Vec<String> =
        truth["clutter"].as_array().expect("clutter").iter().map(|c| c.as_str().expect("name").to_string()).collect();
    assert_eq!(clutter.len(), 5, "{clutter:?}");
    let records = crate::daemon_util::files_under(&d.state.join("quarantine"));
    assert!(records.is_empty(), "quarantine records for the clutter: {records:?}\n{}", d.log_text());
    assert_eq!(d.entries().len(), 1, "one study in the journal: {:?}", d.entries());
    let log = d.log_text();
    // Files are named by a hash of their path relative to the export folder
    // (a path may name the patient).
    let src = beds.join("dicom");
    for name in &clutter {
        let file = crate::daemon_util::files_under(&src)
            .into_iter()
            .find(|f| f.ends_with(format!("clutter/{name}")))
            .unwrap_or_else(|| panic!("clutter/{name} in the fixture"));
        let rel = std::path::Path::new("wholebody").join(file.strip_prefix(&src).expect("under the fixture"));
        let label = format!("file {}", edgeseg::queue::uid_hash(&rel.to_string_lossy()));
        let lines = log.lines().filter(|l| l.contains(&label) && l.contains("skipped")).count();
        assert!(lines >= 1, "{name} ({label}) is not logged as skipped:\n{log}");
        assert!(!log.contains(&format!("clutter/{name}")), "{name}'s path in the log:\n{log}");
    }
    signal(&child, 15);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).expect("stops on SIGTERM").success());
}
