//! `[limits] memory_mb` (issue 16): the daemon estimates each study's peak
//! memory before reading its pixels and (1) overlaps two studies when both
//! fit, (2) loads the second only after the first has ended when they do not
//! fit together, (3) quarantines a study that cannot fit alone, naming its
//! folder by hash and both figures. Two tiny PET/CT phantoms (phantom.py)
//! exported before the daemon starts, so both are ready at once; the
//! simulated network (no ONNX Runtime). The estimate is read from the
//! daemon's own log of the first run, so the limits of the others are set
//! around what this build estimates, not around figures written here.

use std::path::PathBuf;
use std::time::Duration;

use edgeseg::queue::{StudyEntry, StudyState, uid_hash};

use crate::daemon_util::{Deployment, export_study, signal, study, wait_exit, wait_for};

/// Folder names as a scanner writes them: patient data, which no log or
/// reason may repeat.
const FOLDERS: [&str; 2] = ["Doe^Jane_19700101", "Roe^Rick_19650505"];

/// A deployment with `[limits] memory_mb = mb`, both studies exported into
/// it before the daemon starts; runs until both are final, then stops it.
fn run(mb: u64, studies: &[(PathBuf, String)]) -> (Deployment, Vec<StudyEntry>) {
    let d = Deployment::simulated(&format!("[limits]\nmemory_mb = {mb}\n"));
    for ((src, _), name) in studies.iter().zip(FOLDERS) {
        export_study(src, &d.export, name, Duration::ZERO);
    }
    let mut child = d.spawn();
    let done = wait_for(Duration::from_secs(180), || {
        let e: Vec<StudyEntry> = studies.iter().filter_map(|(_, uid)| d.entry(uid)).collect();
        (e.len() == studies.len() && e.iter().all(|e| e.state.is_final())).then_some(e)
    });
    let entries = done.unwrap_or_else(|| panic!("not final in time; log:\n{}", d.log_text()));
    signal(&child, 15);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).expect("stops").success(), "{}", d.log_text());
    (d, entries)
}

/// The log line's position and the estimate (MB) of `study <hash>: loading,
/// estimated peak N MB`.
fn loading(log: &str, hash: &str) -> Option<(usize, u64)> {
    let needle = format!("study {hash}: loading, estimated peak ");
    let at = log.find(&needle)?;
    let rest = &log[at + needle.len()..];
    let mb = rest.split(' ').next()?.parse().ok()?;
    Some((at, mb))
}

#[test]
fn memory_limit_overlaps_serialises_or_quarantines() {
    let studies = [study(61), study(62)];
    let hashes: Vec<String> = studies.iter().map(|(_, uid)| uid_hash(uid)).collect();

    // Plenty of memory: both done, neither waits; the estimates as logged.
    let (d, entries) = run(1_000_000, &studies);
    assert!(entries.iter().all(|e| e.state == StudyState::Done), "{entries:?}\n{}", d.log_text());
    let log = d.log_text();
    assert!(log.contains("memory budget for studies: 1000000 MB ([limits] memory_mb)"), "{log}");
    assert!(!log.contains("waits for memory"), "{log}");
    let need: Vec<u64> = hashes
        .iter()
        .map(|h| loading(&log, h).unwrap_or_else(|| panic!("no estimate of study {h}:\n{log}")).1)
        .collect();
    // Same phantom size, same model: the same estimate; at least 2 MB, so
    // that a limit of one MB less is still a limit.
    assert_eq!(need[0], need[1]);
    let need = need[0];
    assert!(need >= 2, "{need} MB");

    // Room for one study, not two: the second one waits, and its load
    // starts only after the first one's end is recorded.
    let (d, entries) = run(need, &studies);
    assert!(entries.iter().all(|e| e.state == StudyState::Done), "{entries:?}\n{}", d.log_text());
    let log = d.log_text();
    let mut loads: Vec<(usize, &String)> =
        hashes.iter().map(|h| (loading(&log, h).unwrap_or_else(|| panic!("{h} not loaded:\n{log}")).0, h)).collect();
    loads.sort();
    let (first, second) = (loads[0].1, loads[1].1);
    let first_done =
        log.find(&format!("study {first} done")).unwrap_or_else(|| panic!("study {first} not done:\n{log}"));
    assert!(first_done < loads[1].0, "study {second} was loaded before study {first} had ended:\n{log}");
    assert!(log.contains(&format!("study {second}: waits for memory: needs about {need} MB")), "{log}");

    // Room for less than one study: both quarantined, the reason names the
    // folder by hash and both figures, never the folder's name.
    let (d, entries) = run(need - 1, &studies);
    let log = d.log_text();
    for e in &entries {
        assert_eq!(e.state, StudyState::Quarantined, "{e:?}\n{log}");
        let reason = e.last_error.clone().unwrap_or_default();
        assert!(reason.starts_with("folder "), "{reason}");
        assert!(
            reason.contains(&format!(
                "the study needs about {need} MB of memory at its peak, more than the {} MB ([limits] memory_mb)",
                need - 1
            )),
            "{reason}"
        );
        for name in FOLDERS {
            assert!(!reason.contains(name.split('^').next().unwrap_or(name)), "{reason}");
        }
    }
    assert!(!d.out.join(&studies[0].1).exists() && !d.out.join(&studies[1].1).exists(), "no outputs");
    for name in FOLDERS {
        assert!(!log.contains(name.split('^').next().unwrap_or(name)), "patient data in the log:\n{log}");
    }
}
