//! Helpers of the daemon tests: temporary deployments (export, output and
//! state folders with a configuration), studies written by phantom.py, the
//! daemon as a subprocess, and the journal read through `Journal::inspect`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgeseg::queue::{Journal, StudyEntry};

use crate::util::{cached_fixture, fixture_script, ort_lib, phantom, s, truth};

/// The point-wise PET/CT model package of onnx_package.py (fast on the CPU).
pub fn petct_model() -> PathBuf {
    cached_fixture("pointwise-petct", |d| {
        fixture_script("onnx_package.py", &["--out", s(d), "--petct", "--patch", "32"])
    })
    .join("model")
}

/// The same package with a simulated network (`network = "simulated"`, the
/// same rule without ONNX Runtime); `fail`: onnx_package.py's `--fail`.
pub fn simulated_petct_model(fail: Option<&str>) -> PathBuf {
    let name = format!("simulated-petct-{}", fail.unwrap_or("never"));
    cached_fixture(&name, |d| {
        let mut args = vec!["--out", s(d), "--petct", "--patch", "32", "--simulated"];
        if let Some(f) = fail {
            args.extend(["--fail", f]);
        }
        fixture_script("onnx_package.py", &args)
    })
    .join("model")
}

/// A library path that does not exist: a deployment of a simulated package
/// names it to show that ONNX Runtime is never loaded.
pub const NO_ONNX_RUNTIME: &str = "/nonexistent/libonnxruntime.so";

/// A tiny PET/CT phantom study: its DICOM folder and StudyInstanceUID.
pub fn study(seed: u32) -> (PathBuf, String) {
    let seed = seed.to_string();
    let p = phantom(&["--size", "tiny", "--seed", &seed]);
    let uid = truth(&p)["study_instance_uid"].as_str().expect("uid").to_string();
    (p.join("dicom"), uid)
}

/// A tiny PET-only study (no CT: the PET/CT model cannot take it).
pub fn pet_only_study(seed: u32) -> (PathBuf, String) {
    let seed = seed.to_string();
    let p = phantom(&["--size", "tiny", "--seed", &seed, "--no-ct"]);
    let uid = truth(&p)["study_instance_uid"].as_str().expect("uid").to_string();
    (p.join("dicom"), uid)
}

/// Every file under a folder, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    v.sort();
    v
}

/// Copies a study into `dest/<name>/` file by file as a scanner exports:
/// each file written under a temporary name (`.part`) then renamed, with
/// `pause` between files.
pub fn export_study(src: &Path, dest: &Path, name: &str, pause: Duration) {
    for f in files_under(src) {
        let rel = f.strip_prefix(src).expect("under src");
        let to = dest.join(name).join(rel);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        let part = to.with_extension("part");
        std::fs::copy(&f, &part).expect("copy");
        std::fs::rename(&part, &to).expect("rename");
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
}

/// A temporary deployment: folders and a configuration file.
pub struct Deployment {
    /// Keeps the folders.
    pub root: tempfile::TempDir,
    /// The export folder.
    pub export: PathBuf,
    /// The output folder.
    pub out: PathBuf,
    /// The state folder.
    pub state: PathBuf,
    /// The configuration file.
    pub config: PathBuf,
    /// `[model] path`.
    pub model: PathBuf,
    /// `[model] onnxruntime`.
    pub onnxruntime: PathBuf,
}

impl Deployment {
    /// Folders under a new temporary folder (under target/, not /tmp: a real
    /// disk), with the point-wise PET/CT ONNX model.
    pub fn new(extra: &str) -> Self {
        Self::with_model(extra, petct_model(), ort_lib())
    }

    /// The same with the simulated PET/CT package ([`simulated_petct_model`])
    /// and no ONNX Runtime library: for tests where the network is incidental.
    pub fn simulated(extra: &str) -> Self {
        Self::with_model(extra, simulated_petct_model(None), PathBuf::from(NO_ONNX_RUNTIME))
    }

    /// Folders under a new temporary folder, with this model package and library.
    pub fn with_model(extra: &str, model: PathBuf, onnxruntime: PathBuf) -> Self {
        let base = crate::util::root().join("target/test-daemon");
        std::fs::create_dir_all(&base).expect("base");
        let root = tempfile::tempdir_in(&base).expect("tempdir");
        let export = root.path().join("export");
        let out = root.path().join("results");
        let state = root.path().join("state");
        std::fs::create_dir_all(&export).expect("export");
        let config = root.path().join("edgeseg.toml");
        let d = Self { root, export, out, state, config, model, onnxruntime };
        d.write_config(extra);
        d
    }

    /// Writes the configuration: the deployment's folders, the test model,
    /// settle 1 s, D-Bus off, metrics on a free port, then `extra` (more
    /// sections, or keys appended to `[watch]` when it starts with none).
    pub fn write_config(&self, extra: &str) {
        let text = format!(
            "[watch]\nfolders = [\"{}\"]\nsettle_seconds = 1\npoll_interval_seconds = 1\n{extra}\n\
             [model]\npath = \"{}\"\nonnxruntime = \"{}\"\nprovider = \"cpu\"\ntta = false\n\
             [output]\nfolder = \"{}\"\n[state]\nfolder = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n[dbus]\nbus = \"off\"\n",
            self.export.display(),
            self.model.display(),
            self.onnxruntime.display(),
            self.out.display(),
            self.state.display()
        );
        let tmp = self.config.with_extension("new");
        std::fs::write(&tmp, text).expect("config");
        std::fs::rename(&tmp, &self.config).expect("config");
    }

    /// The daemon's log file (appended to by every start).
    pub fn log(&self) -> PathBuf {
        self.root.path().join("daemon.log")
    }

    /// Starts `edgeseg daemon --config` with stderr appended to [`Deployment::log`].
    pub fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log()).expect("log");
        Command::new(env!("CARGO_BIN_EXE_edgeseg"))
            .args(["daemon", "--config", s(&self.config)])
            .env("EDGESEG_LOG", "info")
            .env_remove("JOURNAL_STREAM")
            .env_remove("ORT_DYLIB_PATH")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("edgeseg daemon starts")
    }

    /// The journal's entry of a study (None before the daemon made the journal).
    pub fn entry(&self, uid: &str) -> Option<StudyEntry> {
        let p = self.state.join("journal.sqlite");
        if !p.exists() {
            return None;
        }
        Journal::inspect(&p).ok()?.get(uid).ok()?
    }

    /// Every study in the journal.
    pub fn entries(&self) -> Vec<StudyEntry> {
        let p = self.state.join("journal.sqlite");
        if !p.exists() {
            return Vec::new();
        }
        Journal::inspect(&p).and_then(|j| j.all()).unwrap_or_default()
    }

    /// Waits until the daemon watches its folders (model loaded, READY).
    pub fn wait_watching(&self) {
        let ok = wait_for(Duration::from_secs(120), || self.log_text().contains("watching").then_some(()));
        assert!(ok.is_some(), "the daemon did not start:\n{}", self.log_text());
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }
}

/// Polls `f` until it gives Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if t.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends a signal to a child.
pub fn signal(child: &Child, sig: i32) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status().expect("kill");
    assert!(ok.success(), "kill -{sig} {}", child.id());
}

/// Waits for a child to exit, at most `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    wait_for(timeout, || child.try_wait().ok().flatten())
}

/// Names in a folder, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Checks a study's output folder is complete: report.json names the study,
/// labels and lesions are there.
pub fn assert_output_complete(out: &Path, uid: &str) {
    let dir = out.join(uid);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("report.json"))
            .expect("report parses");
    assert_eq!(report["study_instance_uid"], uid);
    for f in ["labels.nii.gz", "lesions.nii.gz", "suv.nii.gz"] {
        assert!(dir.join(f).is_file(), "{}/{f} missing", dir.display());
    }
}
