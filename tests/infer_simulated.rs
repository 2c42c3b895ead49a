//! The simulated network (a `network = "simulated"` package, written by
//! tests/fixtures/onnx_package.py --simulated) as a test device: the daemon's
//! out-of-memory retry on the CPU, testable without a GPU, and the package
//! refused where it claims clinical use. No ONNX Runtime is loaded.

use std::time::Duration;

use edgeseg::queue::StudyState;

use crate::daemon_util::{Deployment, NO_ONNX_RUNTIME, signal, simulated_petct_model, study, wait_exit, wait_for};
use crate::daemon_util::{assert_output_complete, export_study};
use crate::util::{edgeseg, s, text};

/// A deployment of the simulated package whose fold runs out of memory
/// unless asked for the CPU, with `provider = "auto"` and the `[model]` and
/// `[queue]` keys given.
fn oom_deployment(model_keys: &str) -> Deployment {
    let d = Deployment::with_model(
        "[queue]\nmax_attempts = 2\nbackoff_seconds = 0\n",
        simulated_petct_model(Some("out-of-memory-on-gpu")),
        NO_ONNX_RUNTIME.into(),
    );
    let text = std::fs::read_to_string(&d.config).expect("config");
    let with = format!("provider = \"auto\"\n{model_keys}");
    assert!(text.contains("provider = \"cpu\"\n"), "{text}");
    std::fs::write(&d.config, text.replace("provider = \"cpu\"\n", &with)).expect("config");
    d
}

fn run_until_final(d: &Deployment, uid: &str) -> edgeseg::queue::StudyEntry {
    let mut child = d.spawn();
    d.wait_watching();
    let (src, _) = study(41);
    export_study(&src, &d.export, "st", Duration::ZERO);
    let e = wait_for(Duration::from_secs(90), || d.entry(uid).filter(|e| e.state.is_final()));
    let e = e.unwrap_or_else(|| panic!("not final in time; log:\n{}", d.log_text()));
    signal(&child, 15);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).expect("stops").success(), "{}", d.log_text());
    e
}

/// `[model] cpu_fallback_on_oom` (on by default): a study whose GPU run ran
/// out of memory is retried on the CPU provider and done; off, it fails with
/// the out-of-memory reason after its attempts.
#[test]
fn daemon_retries_an_out_of_memory_study_on_the_cpu() {
    let (_, uid) = study(41);
    let d = oom_deployment("");
    let e = run_until_final(&d, &uid);
    assert_eq!((e.state, e.attempts), (StudyState::Done, 2), "{:?}\n{}", e.last_error, d.log_text());
    assert_output_complete(&d.out, &uid);
    let log = d.log_text();
    assert!(log.contains("out of memory"), "the first attempt's reason is logged: {log}");

    let d = oom_deployment("cpu_fallback_on_oom = false\n");
    let e = run_until_final(&d, &uid);
    assert_eq!((e.state, e.attempts), (StudyState::Failed, 2), "{}", d.log_text());
    let reason = e.last_error.unwrap_or_default();
    assert!(reason.contains("out of memory"), "{reason}");
    assert!(!d.out.join(&uid).exists(), "no outputs");
}

/// A simulated package is a test device: with `clinical_use = true` it is
/// refused by name before anything runs.
#[test]
fn simulated_package_claiming_clinical_use_is_refused() {
    let src = simulated_petct_model(None);
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("model");
    std::fs::create_dir(&model).expect("mkdir");
    for f in std::fs::read_dir(&src).expect("package") {
        let f = f.expect("entry").path();
        std::fs::copy(&f, model.join(f.file_name().expect("name"))).expect("copy");
    }
    // model.toml itself is not among the checksummed files.
    let toml = std::fs::read_to_string(model.join("model.toml")).expect("model.toml");
    assert!(toml.contains("clinical_use = false\n"), "{toml}");
    std::fs::write(model.join("model.toml"), toml.replace("clinical_use = false\n", "clinical_use = true\n"))
        .expect("write");
    let (input, _) = study(42);
    let out = dir.path().join("out");
    let o = edgeseg(&["process", s(&input), "--model", s(&model), "--out", s(&out), "--onnxruntime", NO_ONNX_RUNTIME]);
    let err = text(&o).1;
    assert_ne!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("network = \"simulated\" is a test device") && err.contains("clinical_use = true"), "{err}");
    assert!(!out.exists() || std::fs::read_dir(&out).expect("out").next().is_none(), "nothing written");
}
