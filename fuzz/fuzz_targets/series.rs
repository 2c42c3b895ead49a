//! Fuzz target for the file-to-series path: the input is one or more files
//! (split at `FILE_SEPARATOR`), written to a fresh folder, then read exactly as
//! `edgeseg inspect`/`process` and the daemon read a folder: scan (header
//! parse), group, plan (geometry, order, SUV) and load (pixel decode).
//! Any panic, abort or allocation above libFuzzer's malloc limit is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../split.rs"]
mod split;
use split::split;

/// libfuzzer-sys aborts in its panic hook, before any `catch_unwind` in the
/// code under test runs; the ingest catches codec panics on purpose (a panic
/// there is that file's decode error), so the default hook is put back. A
/// panic that escapes the target still aborts (libfuzzer-sys catches it and
/// calls abort), so it is still a finding.
static HOOK: std::sync::Once = std::sync::Once::new();

fuzz_target!(|data: &[u8]| {
    HOOK.call_once(|| {
        let _ = std::panic::take_hook();
    });
    let Ok(dir) = tempfile::tempdir() else { return };
    for (i, bytes) in split(data).into_iter().enumerate() {
        if std::fs::write(dir.path().join(format!("{i:02}.dcm")), bytes).is_err() {
            return;
        }
    }
    let folder = edgeseg::ingest::index(dir.path());
    for e in &folder.errors {
        // Every error names its file or series (the Display impl must not panic).
        let _ = e.to_string();
    }
    for s in &folder.series {
        if let Ok(plan) = s.plan() {
            let _ = plan.load();
        }
    }
    let studies = folder.studies();
    for series in studies.values() {
        let _ = edgeseg::ingest::pair(series);
    }
});
