//! `edgeseg process` with a CT screening model (profile `ct-screening`) on
//! dual-phase pancreas CT studies written by tests/fixtures/dualphase.py
//! (pydicom): the model runs on each phase, the S4C rules give the verdict in
//! report.json, and the picture shows the finding; the daemon loads the
//! phases ahead of inference, on its loader thread.

use edgeseg::export::{nifti, palette::lesion_colour};
use serde_json::Value;

use crate::util::{cached_fixture, edgeseg, fixture_script, ort_lib, s, text};

#[test]
fn dual_phase_study_gets_the_verdict_in_report_json() {
    let data = cached_fixture("dualphase", |d| fixture_script("dualphase.py", &["--out", s(d)]));
    let model = cached_fixture("nearest-screening", |d| {
        fixture_script("onnx_package.py", &["--out", s(d), "--screening", "--patch", "16"])
    })
    .join("model");
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("truth.json")).expect("truth")).expect("json");
    let out = tempfile::tempdir().expect("tempdir");
    let lib = ort_lib();
    let o = edgeseg(&[
        "process",
        s(&data.join("dicom")),
        "--model",
        s(&model),
        "--out",
        s(out.path()),
        "--onnxruntime",
        s(&lib),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    for name in ["net", "normal"] {
        let t = &truth[name];
        let dir = out.path().join(t["study_instance_uid"].as_str().expect("uid"));
        let report: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("report")).expect("json");
        let v = &report["verdict"];
        assert_eq!(v["abnormal"], t["abnormal"], "{name}: {v}");
        assert_eq!(v["arterial"]["tumour_voxels"], t["arterial_tumour_voxels"], "{name}");
        assert_eq!(v["venous"]["tumour_voxels"], t["venous_tumour_voxels"], "{name}");
        assert_eq!(report["rules"]["tumour_voxels"], 40);
        assert_eq!(report["suv"]["status"], "not-applicable");
        let phases: Vec<(&str, &str)> = report["inputs"]
            .as_array()
            .expect("inputs")
            .iter()
            .map(|i| (i["phase"].as_str().expect("phase"), i["series_instance_uid"].as_str().expect("uid")))
            .collect();
        assert_eq!(
            phases,
            vec![
                ("arterial", t["arterial_series_uid"].as_str().expect("a")),
                ("venous", t["venous_series_uid"].as_str().expect("v"))
            ]
        );
        // The files are on the phase that shows the finding.
        let shown = if name == "net" { "arterial_series_uid" } else { "venous_series_uid" };
        assert_eq!(report["reference_series_uid"], t[shown], "{name}");
        let labels = nifti::read_f32(&dir.join("labels.nii.gz")).expect("labels");
        let tumour = labels.data.iter().filter(|&&c| c == 2.0).count();
        assert_eq!(tumour as u64, t["arterial_tumour_voxels"].as_u64().expect("n"), "{name}");
        if name == "net" {
            assert!(v["reason"].as_str().expect("reason").starts_with("arterial: tumour 64"), "{v}");
        } else {
            assert!(v["reason"].is_null());
        }
        // mip.png: axial slices through the tumour, outlined in class 2's colour.
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(dir.join("mip.png")).expect("png")));
        let mut r = dec.read_info().expect("png header");
        let mut buf = vec![0; r.output_buffer_size().expect("size")];
        r.next_frame(&mut buf).expect("png data");
        let has = |c: [u8; 3]| buf.chunks(3).any(|p| p == c);
        assert!(has(lesion_colour(1)), "{name}: pancreas outlined");
        assert_eq!(has(lesion_colour(2)), name == "net", "{name}: tumour outlined only where there is one");
        // No lesion table for this profile: the header alone.
        let csv = std::fs::read_to_string(dir.join("lesions.csv")).expect("csv");
        assert_eq!(csv.matches("\r\n").count(), 1);
    }
}

/// Issue 12, item 5: the daemon loads a screening study's contrast phases
/// and runs nnU-Net's preprocessing on them on its loader thread, ahead of
/// the GPU worker, as for every profile. The STATUS= lines (the stages the
/// loader and then the GPU worker report, in order) show both phases loaded
/// and preprocessed before the first phase's inference.
#[test]
fn daemon_loads_and_preprocesses_both_phases_ahead_of_inference() {
    use std::os::unix::net::UnixDatagram;
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use edgeseg::queue::StudyState;

    use crate::daemon_util::{Deployment, export_study, petct_model, signal, wait_exit, wait_for};

    let data = cached_fixture("dualphase", |d| fixture_script("dualphase.py", &["--out", s(d)]));
    let model = cached_fixture("nearest-screening", |d| {
        fixture_script("onnx_package.py", &["--out", s(d), "--screening", "--patch", "16"])
    })
    .join("model");
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("truth.json")).expect("truth")).expect("json");
    let d = Deployment::new("");
    let cfg = std::fs::read_to_string(&d.config)
        .expect("config")
        .replace(&petct_model().display().to_string(), &model.display().to_string());
    std::fs::write(&d.config, cfg).expect("config");
    // systemd's side of sd_notify: every datagram, in order.
    let sock_path = d.root.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("notify socket");
    let notes = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let notes = notes.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                notes.lock().expect("lock").push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
    }
    let log = std::fs::OpenOptions::new().create(true).append(true).open(d.log()).expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgeseg"))
        .args(["daemon", "--config", s(&d.config)])
        .env("EDGESEG_LOG", "info")
        .env("NOTIFY_SOCKET", &sock_path)
        .env_remove("JOURNAL_STREAM")
        .env_remove("ORT_DYLIB_PATH")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("edgeseg daemon starts");
    export_study(&data.join("dicom/net"), &d.export, "NET", Duration::ZERO);
    let uid = truth["net"]["study_instance_uid"].as_str().expect("uid").to_string();
    let done = wait_for(Duration::from_secs(180), || d.entry(&uid).filter(|e| e.state == StudyState::Done));
    assert!(done.is_some(), "screening study done; log:\n{}", d.log_text());
    signal(&child, libc::SIGTERM);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).is_some_and(|s| s.success()));

    let notes = notes.lock().expect("lock").clone();
    let first = |stage: &str| {
        notes
            .iter()
            .position(|m| m.lines().any(|l| l.starts_with("STATUS=") && l.ends_with(stage)))
            .unwrap_or_else(|| panic!("no status line ending in {stage:?}: {notes:#?}"))
    };
    let order = [
        "arterial phase: loading",
        "venous phase: loading",
        "arterial phase: preprocessing",
        "venous phase: preprocessing",
        "arterial phase: inference",
        "venous phase: inference",
        "post-processing",
    ]
    .map(first);
    assert!(order.windows(2).all(|w| w[0] < w[1]), "stages out of order {order:?}: {notes:#?}");
}
