//! Test helpers: the venv's Python, fixture generation (cached per test run),
//! and running the `edgeseg` binary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python that has the fixture writers' packages (the project venv).
pub fn python() -> PathBuf {
    let p = std::env::var_os("EDGESEG_PYTHON").map(PathBuf::from).unwrap_or_else(|| root().join(".venv/bin/python"));
    assert!(p.exists(), "{} missing: run scripts/venv.sh (scripts/test.sh does) first", p.display());
    p
}

/// Runs a fixture script under `tests/fixtures/`, failing the test on error.
pub fn fixture_script(script: &str, args: &[&str]) {
    let out = Command::new(python())
        .arg(root().join("tests/fixtures").join(script))
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A folder under target/ for this test run's fixtures (kept for inspection).
fn fixture_base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let d = root().join("target/test-fixtures").join(format!("run-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("fixture folder");
        d
    })
}

/// Makes a fixture once per test run: `make(dir)` is called the first time a
/// `name` is asked for; later callers (other threads too) get the same folder.
pub fn cached_fixture(name: &str, make: impl FnOnce(&Path)) -> PathBuf {
    static SLOTS: OnceLock<Mutex<HashMap<String, Arc<OnceLock<PathBuf>>>>> = OnceLock::new();
    let slot = {
        let mut m = SLOTS.get_or_init(Default::default).lock().expect("fixture map");
        m.entry(name.to_string()).or_default().clone()
    };
    slot.get_or_init(|| {
        let d = fixture_base().join(name);
        std::fs::create_dir_all(&d).expect("fixture folder");
        make(&d);
        d
    })
    .clone()
}

/// A phantom study written by tests/fixtures/phantom.py with these flags.
pub fn phantom(flags: &[&str]) -> PathBuf {
    let name = format!("phantom{}", flags.join("").replace('-', "_"));
    cached_fixture(&name, |d| {
        let mut args = vec!["--out", d.to_str().expect("utf-8 path"), "-q"];
        args.extend_from_slice(flags);
        fixture_script("phantom.py", &args);
    })
}

/// The truth JSON of a phantom.
pub fn truth(phantom: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(phantom.join("truth/truth.json")).expect("truth.json");
    serde_json::from_str(&text).expect("truth.json parses")
}

/// Runs the edgeseg binary.
pub fn edgeseg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgeseg")).args(args).env("EDGESEG_LOG", "info").output().expect("edgeseg runs")
}

/// stdout and stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Path as &str.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// libonnxruntime.so from the venv's onnxruntime wheel.
pub fn ort_lib() -> PathBuf {
    let capi = std::fs::read_dir(root().join(".venv/lib"))
        .expect(".venv/lib")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/onnxruntime/capi"))
        .find(|p| p.is_dir())
        .expect("onnxruntime installed in .venv (scripts/venv.sh)");
    std::fs::read_dir(&capi)
        .expect("capi")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so")))
        .expect("libonnxruntime.so in the onnxruntime wheel")
}
