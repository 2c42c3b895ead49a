//! `edgeseg predict` end to end with ONNX Runtime's CPU library, on a
//! point-wise network whose nnU-Net result is known in closed form (written by
//! tests/fixtures/onnx_package.py with onnx/numpy/nibabel): every tile, mirror
//! and fold agrees, so the prediction must equal the expected labels exactly,
//! with and without TTA, one fold or two. Plus the errors an operator meets:
//! no library, a tampered package, a GPU provider this build does not have.

use std::path::{Path, PathBuf};

use edgeseg::export::nifti;

use crate::util::{cached_fixture, edgeseg, fixture_script, ort_lib, s, text};

fn package() -> PathBuf {
    cached_fixture("pointwise-package", |d| fixture_script("onnx_package.py", &["--out", s(d)]))
}

fn labels(p: &Path) -> Vec<f32> {
    nifti::read_f32(p).expect("nifti").data
}

fn predict(extra: &[&str]) -> (tempfile::TempDir, std::process::Output) {
    let pkg = package();
    let out = tempfile::tempdir().expect("tempdir");
    let lib = ort_lib();
    let (input, model) = (pkg.join("input"), pkg.join("model"));
    let mut args = vec!["predict", "-i", s(&input), "-o", s(out.path()), "-m", s(&model), "--onnxruntime", s(&lib)];
    args.extend_from_slice(extra);
    let o = edgeseg(&args);
    (out, o)
}

#[test]
fn prediction_equals_the_closed_form_result() {
    let expected = labels(&package().join("expected/CASE1.nii.gz"));
    assert!(expected.contains(&1.0) && expected.contains(&0.0));
    for extra in
        [&[][..], &["--disable-tta"], &["-f", "0"], &["-f", "0", "1", "--step-size", "0.3"], &["--batch-size", "5"]]
    {
        let (out, o) = predict(extra);
        assert_eq!(o.status.code(), Some(0), "{extra:?}: {}", text(&o).1);
        let got = labels(&out.path().join("CASE1.nii.gz"));
        let differ = got.iter().zip(&expected).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{extra:?}: {differ} voxels differ");
        assert!(text(&o).0.contains("CASE1.nii.gz"));
    }
}

#[test]
fn geometry_of_the_output_is_the_input_s() {
    let (out, o) = predict(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let a = nifti::read_f32(&package().join("input/CASE1_0000.nii.gz")).expect("input");
    let b = nifti::read_f32(&out.path().join("CASE1.nii.gz")).expect("output");
    assert_eq!(a.geometry.dims, b.geometry.dims);
    for i in 0..3 {
        assert!((a.geometry.origin[i] - b.geometry.origin[i]).abs() < 1e-4);
        assert!((a.geometry.spacing[i] - b.geometry.spacing[i]).abs() < 1e-6);
    }
}

#[test]
fn probabilities_are_saved_as_npz() {
    let (out, o) = predict(&["--save-probabilities"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let npz = out.path().join("CASE1.npz");
    let check = std::process::Command::new(crate::util::python())
        .args([
            "-c",
            "import sys, numpy as np; p = np.load(sys.argv[1])['probabilities']; \
             assert p.shape == (2, 23, 29, 37), p.shape; \
             assert np.allclose(p.sum(0), 1, atol=1e-5); print('ok')",
            s(&npz),
        ])
        .output()
        .expect("python");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
}

#[test]
fn missing_library_is_a_clear_error() {
    let pkg = package();
    let out = tempfile::tempdir().expect("tempdir");
    let o = edgeseg(&[
        "predict",
        "-i",
        s(&pkg.join("input")),
        "-o",
        s(out.path()),
        "-m",
        s(&pkg.join("model")),
        "--onnxruntime",
        "/nonexistent/libonnxruntime.so",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("/nonexistent/libonnxruntime.so: ONNX Runtime library not found"), "{}", text(&o).1);
}

#[test]
fn tampered_package_is_refused() {
    let pkg = package();
    let copy = tempfile::tempdir().expect("tempdir");
    for e in std::fs::read_dir(pkg.join("model")).expect("model") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), copy.path().join(e.file_name())).expect("copy");
    }
    let mut onnx = std::fs::read(copy.path().join("fold_1.onnx")).expect("read");
    let last = onnx.len() - 1;
    onnx[last] ^= 1;
    std::fs::write(copy.path().join("fold_1.onnx"), onnx).expect("write");
    let out = tempfile::tempdir().expect("tempdir");
    let lib = ort_lib();
    let o = edgeseg(&[
        "predict",
        "-i",
        s(&pkg.join("input")),
        "-o",
        s(out.path()),
        "-m",
        s(copy.path()),
        "--onnxruntime",
        s(&lib),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("fold_1.onnx: sha256"), "{}", text(&o).1);
}

#[test]
fn gpu_provider_missing_falls_back_or_fails_as_asked() {
    // Without the `tensorrt` feature, or with it but ONNX Runtime's CPU library
    // loaded (CI runs both builds), asking for TensorRT gives a clear reason;
    // the documented fallback is the CPU with a warning, and --require-gpu
    // makes it an error.
    let reason =
        if cfg!(feature = "tensorrt") { "has no TensorRT provider" } else { "built without the `tensorrt` feature" };
    let (out, o) = predict(&["--provider", "tensorrt"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    assert!(text(&o).1.contains(reason), "{}", text(&o).1);
    assert!(text(&o).1.contains("falling back to the CPU"), "{}", text(&o).1);
    assert!(out.path().join("CASE1.nii.gz").exists());
    let (_, o) = predict(&["--provider", "tensorrt", "--require-gpu"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("GPU provider not available"), "{}", text(&o).1);
    assert!(text(&o).1.contains(reason), "{}", text(&o).1);
}

#[test]
fn compile_reports_the_provider_per_fold() {
    let pkg = package();
    let lib = ort_lib();
    let model = pkg.join("model");
    let o = edgeseg(&["compile", "--model", s(&model), "--onnxruntime", s(&lib), "--provider", "cpu"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let (out, _) = text(&o);
    assert!(out.contains("fold 0: cpu") && out.contains("fold 1: cpu"), "{out}");
    assert!(out.contains("sha256"), "{out}");
    // "auto" without a GPU build: the documented fallback, logged.
    let o = edgeseg(&["compile", "--model", s(&model), "--onnxruntime", s(&lib)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    assert!(text(&o).1.contains("falling back to the CPU"), "{}", text(&o).1);
}

/// The daemon's loader prepares a case (nnU-Net preprocessing) on one thread
/// and the GPU worker finishes it: the same labels as one call, and a case
/// prepared for another package is refused.
#[test]
fn prepared_case_gives_the_same_prediction_and_belongs_to_its_package() {
    use edgeseg::infer::{PredictOptions, Predictor, prepare};
    let pkg = package();
    let predictor = Predictor::new(&pkg.join("model"), &ort_lib(), PredictOptions::default()).expect("model loads");
    let input = nifti::read_f32(&pkg.join("input/CASE1_0000.nii.gz")).expect("input");
    let whole = predictor.predict(&[&input], false, |_, _| {}).expect("predicts");
    let case = std::thread::scope(|s| s.spawn(|| prepare(&predictor.package, &[&input])).join())
        .expect("thread")
        .expect("prepares");
    assert_eq!(case.package_sha256(), predictor.package.sha256);
    assert!(case.bytes() > 0);
    let split = predictor.predict_prepared(case, false, |_, _| {}).expect("predicts");
    assert_eq!(whole.labels.data, split.labels.data);
    assert_eq!(whole.labels.geometry, split.labels.geometry);
    let expected = labels(&pkg.join("expected/CASE1.nii.gz"));
    assert_eq!(split.labels.data.iter().map(|&v| f32::from(v)).collect::<Vec<_>>(), expected);

    let mut other = edgeseg::infer::model::ModelPackage::load(&pkg.join("model")).expect("package");
    other.sha256 = "0".repeat(64);
    let foreign = prepare(&other, &[&input]).expect("prepares");
    let err = predictor.predict_prepared(foreign, false, |_, _| {}).err().expect("refused").to_string();
    assert!(err.contains("prepared for model package"), "{err}");
}

/// Issue 13, item 1: ONNX Runtime records no telemetry. With HOME in a
/// temporary folder (and no XDG_CACHE_HOME or ORT_DISABLE_TELEMETRY from the
/// caller), `predict` and `compile` leave no `.cache/Microsoft` folder, device
/// id or `onnxruntime.db` behind; the library writes them when its
/// environment is created unless telemetry is off.
#[test]
fn onnxruntime_records_no_telemetry() {
    let pkg = package();
    let lib = ort_lib();
    let home = tempfile::tempdir().expect("tempdir");
    let out = home.path().join("out");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_edgeseg"))
            .args(args)
            .env("HOME", home.path())
            .env_remove("XDG_CACHE_HOME")
            .env_remove("ORT_DISABLE_TELEMETRY")
            .output()
            .expect("edgeseg runs")
    };
    let (input, model) = (pkg.join("input"), pkg.join("model"));
    let o = run(&["predict", "-i", s(&input), "-o", s(&out), "-m", s(&model), "--onnxruntime", s(&lib)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let o = run(&["compile", "--model", s(&model), "--onnxruntime", s(&lib), "--provider", "cpu"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let left: Vec<PathBuf> = walkdir::WalkDir::new(home.path())
        .into_iter()
        .filter_map(|e| e.ok())
        .map(|e| e.into_path())
        .filter(|p| !p.starts_with(&out) && p != home.path())
        .collect();
    assert!(left.is_empty(), "ONNX Runtime left files in HOME: {left:?}");
}
