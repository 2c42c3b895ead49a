//! `edgeseg predict` end to end with ONNX Runtime's CPU library, on a
//! point-wise network whose nnU-Net result is known in closed form (written by
//! tests/fixtures/onnx_package.py with onnx/numpy/nibabel): every tile, mirror
//! and fold agrees, so the prediction must equal the expected labels exactly,
//! with and without TTA, one fold or two. Plus the errors an operator meets:
//! no library, a tampered package, a GPU provider this build does not have.
//! And `predict` as a drop-in for nnUNetv2_predict (issue 13, item 19): its
//! flags as written for it, checks against the package, a bad case skipped by
//! name, an extra channel file refused, the export command for a folder
//! without model.toml, no Rust debug text, progress on and off a terminal.

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
fn openvino_from_a_library_without_it_is_an_error_not_a_fallback() {
    // ONNX Runtime's CPU wheel has no OpenVINO provider; asked for by name,
    // it is refused with the reason (and no output), never run on the CPU.
    let (out, o) = predict(&["--provider", "openvino"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o).1);
    assert!(text(&o).1.contains("has no OpenVINO provider"), "{}", text(&o).1);
    assert!(!text(&o).1.contains("falling back"), "{}", text(&o).1);
    assert!(!out.path().join("CASE1.nii.gz").exists());
}

#[test]
fn bf16_with_another_provider_than_openvino_is_an_error_not_fp32() {
    // BF16 is OpenVINO's: with the CPU provider it is refused with the
    // reason (and no output), never run in FP32 as if it had been granted.
    let (out, o) = predict(&["--provider", "cpu", "--bf16"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o).1);
    assert!(text(&o).1.contains("bf16 needs the openvino provider, not cpu"), "{}", text(&o).1);
    assert!(!out.path().join("CASE1.nii.gz").exists());
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

/// Issue 13, item 19: nnUNetv2_predict's flags in its own spelling
/// (single-dash long flags, underscores) are accepted; -d, -c, -p are the
/// package's; `-f all` is every fold, `-f 0 1` two; the labels are the same.
#[test]
fn nnunet_flags_are_accepted_as_written_for_nnunetv2_predict() {
    let expected = labels(&package().join("expected/CASE1.nii.gz"));
    let every = [
        "-c",
        "3d_fullres",
        "-p",
        "nnUNetPlans",
        "-step_size",
        "0.5",
        "--disable_tta",
        "-npp",
        "2",
        "-nps",
        "2",
        "-device",
        "cpu",
        "--save_probabilities",
        "--disable_progress_bar",
        "--not_on_device",
        "--verbose",
        "-num_parts",
        "1",
        "-part_id",
        "0",
    ];
    for folds in
        [&["-d", "900", "-f", "all"][..], &["-d", "900", "-f", "0", "1"], &["-d", "Dataset900_Pointwise", "-f", "0"]]
    {
        let mut extra = every.to_vec();
        extra.extend_from_slice(folds);
        let (out, o) = predict(&extra);
        assert_eq!(o.status.code(), Some(0), "{folds:?}: {}", text(&o).1);
        let got = labels(&out.path().join("CASE1.nii.gz"));
        assert_eq!(got, expected, "{folds:?}");
        assert!(out.path().join("CASE1.npz").exists(), "{folds:?}");
        // As nnUNetv2_predict: the model's dataset.json and plans.json beside them.
        for n in ["dataset.json", "plans.json"] {
            let (a, b) = (std::fs::read(out.path().join(n)), std::fs::read(package().join("model").join(n)));
            assert_eq!(a.expect("written"), b.expect("package"), "{n}");
        }
    }
    let (_, o) = predict(&["-f", "all", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("-f all stands alone"), "{}", text(&o).1);
}

/// -d, -c, -tr and -p that contradict the package stop the run with both
/// values named; nothing is written.
#[test]
fn flags_that_contradict_the_package_name_both_values() {
    for (flag, value, has) in [
        ("-c", "2d", "configuration 3d_fullres"),
        ("-d", "901", "dataset Dataset900_Pointwise"),
        ("-d", "Dataset900_Other", "dataset Dataset900_Pointwise"),
        ("-tr", "nnUNetTrainer", "trainer none"),
        ("-p", "nnUNetResEncUNetMPlans", "plans nnUNetPlans"),
    ] {
        let (out, o) = predict(&[flag, value]);
        assert_eq!(o.status.code(), Some(1), "{flag} {value}");
        let err = text(&o).1;
        assert!(err.contains(&format!("{flag} {value} contradicts the model package")), "{err}");
        assert!(err.contains(has), "{err}");
        assert!(!out.path().join("CASE1.nii.gz").exists());
    }
    let (_, o) = predict(&["-device", "mps"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("-device mps: not supported"), "{}", text(&o).1);
    let (_, o) = predict(&["-prev_stage_predictions", "/tmp"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("cascaded models are not supported"), "{}", text(&o).1);
}

/// The two-channel point-wise package and cases written by
/// tests/fixtures/predict_cases.py: GOOD, HALF (no _0001), OTHERGRID (_0001
/// on another grid), ZBROKEN (_0001 not a NIfTI file).
fn two_channel_cases() -> (PathBuf, PathBuf) {
    let model = crate::daemon_util::petct_model();
    let cases = cached_fixture("predict-cases", |d| fixture_script("predict_cases.py", &["--out", s(d)]));
    (model, cases)
}

/// Rust debug text that must never reach a person.
fn assert_no_debug_text(msg: &str) {
    for d in ["Os {", "Io(", "Custom {", "kind:", "Some("] {
        assert!(!msg.contains(d), "debug text {d:?} in: {msg}");
    }
}

/// One bad case is named with its reason and skipped, the others written,
/// exit 2; -num_parts/-part_id split the sorted cases as nnU-Net does;
/// --continue_prediction keeps what exists.
#[test]
fn a_bad_case_is_skipped_by_name_and_the_others_written() {
    let (model, cases) = two_channel_cases();
    let lib = ort_lib();
    let out = tempfile::tempdir().expect("tempdir");
    let run = |extra: &[&str]| {
        let mut args = vec!["predict", "-i", s(&cases), "-o", s(out.path()), "-m", s(&model), "--onnxruntime", s(&lib)];
        args.extend_from_slice(extra);
        edgeseg(&args)
    };
    // Part 1 of 2: HALF and ZBROKEN (sorted: GOOD, HALF, OTHERGRID, ZBROKEN).
    let o = run(&["-num_parts", "2", "-part_id", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o).1);
    assert!(!out.path().join("GOOD.nii.gz").exists());
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o).1);
    let err = text(&o).1;
    assert!(out.path().join("GOOD.nii.gz").exists(), "{err}");
    for bad in ["HALF", "OTHERGRID", "ZBROKEN"] {
        assert!(!out.path().join(format!("{bad}.nii.gz")).exists());
    }
    assert!(err.contains("skipped case HALF: missing channel file(s) _0001"), "{err}");
    assert!(err.contains("skipped case OTHERGRID: channel _0001 is not on channel _0000's grid"), "{err}");
    assert!(err.contains("skipped case ZBROKEN:") && err.contains("ZBROKEN_0001.nii.gz: cannot read NIfTI"), "{err}");
    assert_no_debug_text(&err);
    // Continued: GOOD is kept as it is, the bad cases are still refused.
    let before = std::fs::metadata(out.path().join("GOOD.nii.gz")).and_then(|m| m.modified()).expect("mtime");
    let o = run(&["--continue_prediction"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o).1);
    assert!(text(&o).1.contains("GOOD.nii.gz exists, kept"), "{}", text(&o).1);
    let after = std::fs::metadata(out.path().join("GOOD.nii.gz")).and_then(|m| m.modified()).expect("mtime");
    assert_eq!(before, after);
}

/// A channel file the model does not take (CASE_0002 for a two-channel
/// model) stops the run before anything is predicted, naming the file.
#[test]
fn an_extra_channel_file_is_an_error_naming_it() {
    let (model, cases) = two_channel_cases();
    let input = tempfile::tempdir().expect("tempdir");
    for n in ["GOOD_0000.nii.gz", "GOOD_0001.nii.gz"] {
        std::fs::copy(cases.join(n), input.path().join(n)).expect("copy");
    }
    std::fs::copy(cases.join("GOOD_0001.nii.gz"), input.path().join("GOOD_0002.nii.gz")).expect("copy");
    let out = tempfile::tempdir().expect("tempdir");
    let lib = ort_lib();
    let o =
        edgeseg(&["predict", "-i", s(input.path()), "-o", s(out.path()), "-m", s(&model), "--onnxruntime", s(&lib)]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o).1;
    assert!(err.contains("GOOD_0002.nii.gz: channel files the model does not take (it has 2 channel(s)"), "{err}");
    assert!(!out.path().join("GOOD.nii.gz").exists());
}

/// A folder without model.toml (an nnU-Net results folder given with -m, or
/// found from -d/-c in $nnUNet_results as nnUNetv2_predict finds it) gets the
/// tools/nnunet_export.py command line that makes a package of it.
#[test]
fn a_folder_without_model_toml_gets_the_export_command() {
    let pkg = package();
    let results = tempfile::tempdir().expect("tempdir");
    let trained = results.path().join("Dataset900_Pointwise/nnUNetTrainer__nnUNetPlans__3d_fullres");
    for f in ["fold_0", "fold_3"] {
        std::fs::create_dir_all(trained.join(f)).expect("mkdir");
    }
    for n in ["plans.json", "dataset.json"] {
        std::fs::copy(pkg.join("model").join(n), trained.join(n)).expect("copy");
    }
    let out = tempfile::tempdir().expect("tempdir");
    let lib = ort_lib();
    let input = pkg.join("input");
    let want = format!(
        "python3 tools/nnunet_export.py --trained-model {} --folds 0 3 --checkpoint checkpoint_final.pth --out MODEL_DIR",
        trained.display()
    );
    let o = edgeseg(&["predict", "-i", s(&input), "-o", s(out.path()), "-m", s(&trained), "--onnxruntime", s(&lib)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("no model.toml: an nnU-Net results folder"), "{}", text(&o).1);
    assert!(text(&o).1.contains(&want), "{}", text(&o).1);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_edgeseg"))
        .args(["predict", "-i", s(&input), "-o", s(out.path()), "-d", "900", "-c", "3d_fullres"])
        .args(["--onnxruntime", s(&lib)])
        .env("nnUNet_results", results.path())
        .output()
        .expect("edgeseg runs");
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains(&want), "{}", text(&o).1);
    // process and compile give the same advice for the same folder.
    let o = edgeseg(&["process", s(&input), "--model", s(&trained), "--out", s(out.path()), "--onnxruntime", s(&lib)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains(&want), "{}", text(&o).1);
    let o = edgeseg(&["compile", "--model", s(&trained), "--onnxruntime", s(&lib)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains(&want), "{}", text(&o).1);
}

/// Missing and unreadable files and a bad model folder: plain words, never
/// Rust debug text.
#[test]
fn errors_carry_no_rust_debug_text() {
    let pkg = package();
    let lib = ort_lib();
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("input");
    std::fs::create_dir(&input).expect("mkdir");
    std::os::unix::fs::symlink("/nonexistent/image.nii.gz", input.join("GONE_0000.nii.gz")).expect("symlink");
    std::fs::create_dir(input.join("DIR_0000.nii.gz")).expect("mkdir");
    std::fs::copy(pkg.join("input/CASE1_0000.nii.gz"), input.join("CASE1_0000.nii.gz")).expect("copy");
    let no_fold = tmp.path().join("no-fold");
    std::fs::create_dir(&no_fold).expect("mkdir");
    for e in std::fs::read_dir(pkg.join("model")).expect("model") {
        let e = e.expect("entry");
        if e.file_name() != "fold_1.onnx" {
            std::fs::copy(e.path(), no_fold.join(e.file_name())).expect("copy");
        }
    }
    let out = tmp.path().join("out");
    let model = pkg.join("model");
    let cases: [(&[&str], i32, &str); 5] = [
        (&["-i", s(&input), "-m", s(&model)], 2, "GONE_0000.nii.gz: cannot read NIfTI: No such file or directory"),
        (&["-i", s(&input), "-m", s(&model)], 2, "DIR_0000.nii.gz: cannot read NIfTI: Is a directory"),
        (&["-i", "/nonexistent/in", "-m", s(&model)], 1, "/nonexistent/in: cannot list the input folder"),
        (&["-i", s(&input), "-m", "/nonexistent/model"], 1, "/nonexistent/model: no such model folder"),
        (&["-i", s(&input), "-m", s(&no_fold)], 1, "fold_1.onnx: No such file or directory"),
    ];
    for (args, code, want) in cases {
        let mut all = vec!["predict", "-o", s(&out), "--onnxruntime", s(&lib)];
        all.extend_from_slice(args);
        let o = edgeseg(&all);
        let err = text(&o).1;
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_no_debug_text(&err);
    }
    assert!(out.join("CASE1.nii.gz").exists());
}

/// Over several cases: a progress bar redrawn in place on a terminal (run
/// under a pseudo-terminal by Python's pty module), plain lines otherwise.
#[test]
fn progress_is_a_bar_on_a_terminal_and_plain_lines_otherwise() {
    let (model, cases) = two_channel_cases();
    let lib = ort_lib();
    let out = tempfile::tempdir().expect("tempdir");
    let args = ["predict", "-i", s(&cases), "-o", s(out.path()), "-m", s(&model), "--onnxruntime", s(&lib)];
    let o = edgeseg(&args);
    let err = text(&o).1;
    assert!(err.contains("edgeseg: case 1 of 4: GOOD\n") && err.contains("edgeseg: case 4 of 4: ZBROKEN\n"), "{err}");
    assert!(!err.contains('\r'), "{err}");
    let o = std::process::Command::new(crate::util::python())
        .args(["-c", "import pty, sys; sys.exit(pty.spawn(sys.argv[1:]) >> 8)", env!("CARGO_BIN_EXE_edgeseg")])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("python runs");
    let tty = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(2), "{tty}");
    assert!(
        tty.contains("\r\x1b[2K[") && tty.contains("] 1/4 case GOOD") && tty.contains("] 4/4 case ZBROKEN"),
        "{tty:?}"
    );
    assert!(!tty.contains("case 1 of 4"), "{tty:?}");
    // Messages still reach the terminal whole, on lines of their own.
    assert!(tty.contains("\r\x1b[2Kedgeseg: skipped case HALF: missing channel file(s) _0001"), "{tty:?}");
    let o = std::process::Command::new(crate::util::python())
        .args(["-c", "import pty, sys; sys.exit(pty.spawn(sys.argv[1:]) >> 8)", env!("CARGO_BIN_EXE_edgeseg")])
        .args(args)
        .arg("--disable_progress_bar")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("python runs");
    let tty = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(tty.contains("edgeseg: case 1 of 4: GOOD") && !tty.contains("\x1b[2K"), "{tty:?}");
}
