//! Replays the inputs the fuzzers found (and the ones kept as hard cases) on
//! the same paths as the fuzz targets, in the ordinary test build:
//!
//! - `tests/fuzz-regressions/series/*`: one or more files (split at the
//!   `series` target's separator) written to a folder, then scan, plan, load
//!   and pairing, exactly as `fuzz/fuzz_targets/series.rs` does. Each must
//!   end in errors naming their files, never a panic.
//!
//! The inputs are the fuzzers' own artifacts (`cargo fuzz` writes them), not
//! hand-made; RELIABILITY.md says which run found which.

use std::path::{Path, PathBuf};

use crate::util::root;

#[path = "../fuzz/split.rs"]
mod split;
use split::split;

fn inputs(kind: &str) -> Vec<PathBuf> {
    let dir = root().join("tests/fuzz-regressions").join(kind);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The `series` target's body; returns the error messages.
fn series_path(data: &[u8], dir: &Path) -> Vec<String> {
    for (i, bytes) in split(data).into_iter().enumerate() {
        std::fs::write(dir.join(format!("{i:02}.dcm")), bytes).expect("write");
    }
    let folder = edgeseg::ingest::index(dir);
    let mut messages: Vec<String> = folder.errors.iter().map(|e| e.to_string()).collect();
    for s in &folder.series {
        match s.plan().and_then(|p| p.load()) {
            Ok(v) => assert_eq!(v.volume.data.len(), v.volume.geometry.voxel_count()),
            Err(e) => messages.push(e.to_string()),
        }
    }
    for series in folder.studies().values() {
        let _ = edgeseg::ingest::pair(series);
    }
    messages
}

#[test]
fn series_inputs_found_by_the_fuzzer_are_refused_cleanly() {
    let found = inputs("series");
    assert!(!found.is_empty(), "tests/fuzz-regressions/series/ is empty");
    for p in found {
        let data = std::fs::read(&p).expect("read");
        let dir = tempfile::tempdir().expect("tempdir");
        let messages = series_path(&data, dir.path());
        println!("{}: {messages:?}", p.display());
        // An input libFuzzer stopped for an allocation over its limit, or
        // reported as slow (a large zero-filled allocation), must now be
        // refused by the structural pass, before any parser allocates.
        if p.file_name().is_some_and(|n| {
            let n = n.to_string_lossy();
            n.starts_with("oom-") || n.starts_with("slow-unit-")
        }) {
            assert!(
                messages.iter().any(|m| m.contains("refused before parsing")),
                "{}: not refused before parsing: {messages:?}",
                p.display()
            );
        }
        for m in &messages {
            assert!(
                m.contains(".dcm") || m.contains("series"),
                "{}: an error that names neither a file nor a series: {m}",
                p.display()
            );
        }
    }
}
