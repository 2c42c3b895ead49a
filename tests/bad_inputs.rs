//! The bad-input corpus (`tests/bad-inputs/make.py`, written with pydicom, zlib
//! and os only) through `edgeseg convert`, the ingest path the daemon uses
//! (scan, header parse, plan, pixel load). For every kind of its manifest:
//!
//! - the process ends with exit code 0, 1 or 2, never a signal or a panic (101);
//! - its peak memory (VmHWM, from `/usr/bin/time -v`) stays under
//!   [`HWM_LIMIT_KB`]: a declared 4 GiB element, a deflate bomb or 10,000
//!   declared frames are refused before anything is allocated for them;
//! - a "quarantine" kind is refused on stderr with a line naming its file (or
//!   series) and one of the manifest's reasons, and writes no volume;
//! - a "processed" kind writes its volume, named by a UID or a hash, inside
//!   the output folder; an "ignored" kind raises no error and each of its
//!   files is named on an `info: skipped` line.
//!
//! Kinds marked `daemon_only` (a file still being written) need the running
//! daemon and are left to the daemon test. The manifest's format (both forms
//! of make.py, also read by `daemon_bad_inputs` and `ingest_bad_input`) is
//! [`Manifest`].

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{cached_fixture, python, root};

/// Peak resident memory allowed for one `edgeseg convert` of a corpus folder.
/// The corpus' good images are 64 × 64; the binary itself peaks near 20 MiB.
const HWM_LIMIT_KB: u64 = 128 * 1024;

/// Runs tests/bad-inputs/make.py, the one writer of bad inputs.
fn make(args: &[&str]) {
    let out =
        Command::new(python()).arg(root().join("tests/bad-inputs/make.py")).args(args).output().expect("python runs");
    assert!(out.status.success(), "make.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// The corpus of kinds each alone in its folder (make.py's first form).
pub(crate) fn corpus() -> PathBuf {
    cached_fixture("bad-input-corpus", |d| make(&["--out", d.to_str().expect("utf-8 path")]))
}

/// The corpus of kinds each beside a whole good series (make.py `beside`):
/// the PET series of a phantom without CT.
pub(crate) fn beside_corpus() -> PathBuf {
    let template = crate::util::phantom(&["--no-ct", "--vendor", "siemens"]).join("dicom/PT");
    cached_fixture("bad-inputs-beside", |d| {
        let out = d.join("corpus");
        make(&["beside", "--template", crate::util::s(&template), "--out", crate::util::s(&out)]);
    })
    .join("corpus")
}

/// `manifest.json` of a corpus (both forms of make.py write this format).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Manifest {
    /// The good series the kinds are derived from.
    pub template_series_uid: String,
    /// Its files.
    pub template_files: usize,
    /// Whether each folder also holds the whole template series.
    pub beside_template: bool,
    /// The kinds.
    pub kinds: Vec<Kind>,
}

/// One kind of bad input.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct Kind {
    /// Its name.
    pub kind: String,
    /// Its folder, relative to the corpus.
    pub folder: String,
    /// What must become of it.
    pub outcome: Outcome,
    /// Each must occur (lowercase) in the message naming it.
    pub reason_all: Vec<String>,
    /// If any, one must occur (lowercase) in the message naming it.
    pub reason_any: Vec<String>,
    /// What the message must name: file names, or `series-uid:UID`.
    pub names: Vec<String>,
    /// Needs a running daemon.
    pub daemon_only: bool,
    /// The studies of its readable files.
    pub study_uids: Vec<String>,
}

/// What becomes of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Outcome {
    /// Refused with a message naming it and the reasons.
    Quarantine,
    /// Loads (a warning or a dropped copy at most).
    Processed,
    /// Passed over on purpose.
    Ignored,
}

impl Manifest {
    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> Self {
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).expect("manifest")).expect("manifest")
    }

    /// The kind named `kind`.
    pub fn kind(&self, kind: &str) -> &Kind {
        self.kinds.iter().find(|k| k.kind == kind).unwrap_or_else(|| panic!("kind {kind} not in the manifest"))
    }
}

impl Kind {
    /// What a message naming `name` contains: the file name, or the UID of a `series-uid:` name.
    pub fn needle(name: &str) -> &str {
        name.strip_prefix("series-uid:").unwrap_or(name)
    }

    /// Whether the fault is named by its series (not a file).
    pub fn series_level(&self) -> bool {
        self.names.iter().any(|n| n.starts_with("series-uid:"))
    }

    /// Whether `message` gives the kind's reasons: every one of
    /// `reason_all`, and one of `reason_any` where there are any.
    pub fn reasons_in(&self, message: &str) -> bool {
        let m = message.to_lowercase();
        self.reason_all.iter().all(|r| m.contains(r.as_str()))
            && (self.reason_any.is_empty() || self.reason_any.iter().any(|r| m.contains(r.as_str())))
    }

    /// The reasons, for a failure message.
    pub fn reasons(&self) -> String {
        format!("all of {:?}, any of {:?}", self.reason_all, self.reason_any)
    }
}

struct Run {
    exit: Option<i32>,
    signal: Option<String>,
    hwm_kb: u64,
    stdout: String,
    stderr: String,
}

/// `edgeseg convert DIR --out OUT` under `/usr/bin/time -v`.
fn convert(dir: &Path, out: &Path) -> Run {
    let report = out.with_extension("time");
    let o = Command::new("/usr/bin/time")
        .arg("-v")
        .arg("-o")
        .arg(&report)
        .arg(env!("CARGO_BIN_EXE_edgeseg"))
        .arg("convert")
        .arg(dir)
        .arg("--out")
        .arg(out)
        .env("EDGESEG_LOG", "warn")
        .output()
        .expect("/usr/bin/time runs (scripts/deps.sh installs it)");
    let time = std::fs::read_to_string(&report).expect("time report");
    let field = |name: &str| time.lines().find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()));
    Run {
        exit: field("Exit status:").and_then(|v| v.parse().ok()),
        signal: field("Command terminated by signal"),
        hwm_kb: field("Maximum resident set size (kbytes):").and_then(|v| v.parse().ok()).expect("VmHWM figure"),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().to_path_buf())
        .collect()
}

#[test]
fn every_bad_input_is_refused_with_its_reason_in_bounded_memory() {
    let corpus = corpus();
    let manifest = Manifest::read(&corpus);
    assert!(!manifest.beside_template);
    let kinds = &manifest.kinds;
    assert!(kinds.len() >= 30, "the corpus has {} kinds, at least 30 wanted", kinds.len());
    let outs = tempfile::tempdir().expect("tempdir");
    let mut failures = Vec::new();
    println!("| kind | expected | exit | VmHWM (MiB) | first message |");
    println!("|---|---|---|---|---|");
    for k in kinds {
        let kind = k.kind.as_str();
        if k.daemon_only {
            println!("| {kind} | daemon only | - | - | - |");
            continue;
        }
        let outcome = k.outcome;
        let dir = corpus.join(&k.folder);
        let out = outs.path().join(kind);
        let r = convert(&dir, &out);
        let first = r.stderr.lines().next().unwrap_or("").replace('|', "\\|");
        println!(
            "| {kind} | {outcome:?} | {} | {:.1} | {} |",
            r.exit.map(|c| c.to_string()).or(r.signal.clone()).unwrap_or_default(),
            r.hwm_kb as f64 / 1024.0,
            first.chars().take(160).collect::<String>()
        );
        let mut fail = |why: String| failures.push(format!("{kind}: {why}\nstderr: {}", r.stderr));
        if let Some(sig) = &r.signal {
            fail(format!("terminated by signal {sig}"));
            continue;
        }
        if !matches!(r.exit, Some(0..=2)) {
            fail(format!("exit {:?} (0, 1 or 2 expected)", r.exit));
            continue;
        }
        if r.stderr.contains("panicked") || r.stderr.contains("overflowed its stack") {
            fail("panic".into());
        }
        if r.hwm_kb > HWM_LIMIT_KB {
            fail(format!("peak memory {} KiB over the {} KiB bound", r.hwm_kb, HWM_LIMIT_KB));
        }
        let written: Vec<PathBuf> = if out.exists() { files_under(&out) } else { Vec::new() };
        let volumes = written.iter().filter(|p| p.to_string_lossy().ends_with(".nii.gz")).count();
        match outcome {
            Outcome::Quarantine => {
                if r.exit != Some(2) {
                    fail(format!("exit {:?}, 2 (refused files) expected", r.exit));
                }
                if volumes != 0 {
                    fail(format!("{volumes} volume(s) written from a refused input"));
                }
                let lines: Vec<String> =
                    r.stderr.lines().filter(|l| l.contains("skipped")).map(str::to_lowercase).collect();
                for n in &k.names {
                    let needle = Kind::needle(n).to_lowercase();
                    let named: Vec<&String> = lines.iter().filter(|l| l.contains(&needle)).collect();
                    if named.is_empty() {
                        fail(format!("no error line names {n}"));
                    } else if !named.iter().any(|l| k.reasons_in(l)) {
                        fail(format!("the error naming {n} gives not the reasons ({})", k.reasons()));
                    }
                }
            }
            Outcome::Processed => {
                if r.exit != Some(0) {
                    fail(format!("exit {:?}, 0 expected", r.exit));
                }
                if volumes != 1 {
                    fail(format!("{volumes} volumes written, 1 expected"));
                }
                use std::os::unix::fs::PermissionsExt;
                let loose: Vec<&PathBuf> = written
                    .iter()
                    .filter(|p| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777 != 0o640).unwrap_or(true))
                    .collect();
                if !loose.is_empty() {
                    fail(format!("outputs not mode 0640: {loose:?}"));
                }
                let outside: Vec<&PathBuf> = written.iter().filter(|p| p.parent() != Some(out.as_path())).collect();
                if !outside.is_empty() {
                    fail(format!("files written outside the output folder: {outside:?}"));
                }
            }
            Outcome::Ignored => {
                if r.exit != Some(0) {
                    fail(format!("exit {:?}, 0 expected", r.exit));
                }
                // Each passed-over file named on an info line with its reason.
                for n in &k.names {
                    let named =
                        r.stderr.lines().any(|l| l.starts_with("edgeseg: info: skipped ") && l.contains(n.as_str()));
                    if !named {
                        fail(format!("no info line names the skipped {n}"));
                    }
                }
            }
        }
        let _ = &r.stdout;
    }
    // Each kind's own checks, where the outcome has more to it.
    let sidecar = |kind: &str| -> serde_json::Value {
        let out = outs.path().join(kind);
        let json = files_under(&out)
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "json"))
            .unwrap_or_else(|| panic!("{kind}: no sidecar"));
        serde_json::from_str(&std::fs::read_to_string(json).expect("sidecar")).expect("sidecar json")
    };
    let pet = sidecar("pet-no-dose-weight-times");
    assert_eq!(pet["series"]["suv"]["status"], "unavailable", "{pet}");
    assert_eq!(pet["series"]["unit"], "Bq/ml", "{pet}");
    let uid_out = files_under(&outs.path().join("uid-with-slashes"));
    assert!(
        uid_out.iter().all(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("uid-"))),
        "a malformed UID names its output by a hash: {uid_out:?}"
    );
    assert_eq!(files_under(&outs.path().join("directory-loop")).len(), 2, "the slice beside the loop is read once");
    assert!(failures.is_empty(), "{} kind(s) failed:\n{}", failures.len(), failures.join("\n\n"));
}

#[test]
fn many_tiny_files_each_get_their_own_error() {
    let corpus = corpus();
    let out = tempfile::tempdir().expect("tempdir");
    let dir = corpus.join("many-tiny-files");
    let n = std::fs::read_dir(&dir).expect("folder").count();
    assert!(n >= 5000, "{n} files");
    let r = convert(&dir, &out.path().join("o"));
    assert_eq!(r.exit, Some(2), "{}", r.stderr);
    let refused = r.stderr.lines().filter(|l| l.contains("skipped") && l.contains("many-tiny-files/tiny")).count();
    assert_eq!(refused, n, "every file named once");
    assert!(r.hwm_kb <= HWM_LIMIT_KB, "{} KiB", r.hwm_kb);
}

/// The point-wise one-channel CT model of onnx_package.py (2 mm grid).
fn ct_model() -> PathBuf {
    cached_fixture("pointwise-ct", |d| {
        crate::util::fixture_script("onnx_package.py", &["--out", d.to_str().expect("utf-8 path"), "--patch", "32"])
    })
    .join("model")
}

/// A one-slice series resamples to no slice on the model's grid: found when
/// the corpus went through the daemon (a panic in the resampler's clamp);
/// now refused as input, naming the reason.
#[test]
fn a_one_slice_study_is_refused_by_the_model_step_not_a_panic() {
    let corpus = corpus();
    let out = tempfile::tempdir().expect("tempdir");
    let lib = crate::util::ort_lib();
    let o = Command::new(env!("CARGO_BIN_EXE_edgeseg"))
        .arg("process")
        .arg(corpus.join("directory-loop"))
        .args(["--model", ct_model().to_str().expect("utf-8"), "--out"])
        .arg(out.path())
        .args(["--onnxruntime", lib.to_str().expect("utf-8"), "--provider", "cpu"])
        .output()
        .expect("edgeseg runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(matches!(o.status.code(), Some(1 | 2)), "exit {:?}\n{stderr}", o.status.code());
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("too small for the model"), "{stderr}");
}
