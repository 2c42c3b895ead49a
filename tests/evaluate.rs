//! `edgeseg evaluate` (issue 17): the output contract (JSON keys, CSV columns),
//! pairing by case name (nnU-Net folders, study output folders), the grid
//! check and --resample-truth, screening verdicts, and one command from DICOM
//! studies through the demo model to figures. Label maps are written by
//! nibabel (the venv's Python), never by edgeseg; the metrics' values are
//! judged in tests/peers/test_evaluate_metrics.py.

use std::path::Path;
use std::process::Command;

use crate::util::{cached_fixture, edgeseg, ort_lib, phantom, python, root, s, text, truth};

/// The contract's names of each label's object, in CSV column order.
const CONTRACT: [&str; 16] = [
    "dice",
    "jaccard",
    "volume_pred_ml",
    "volume_truth_ml",
    "hd95_mm",
    "assd_mm",
    "surface_dice",
    "tp",
    "fp",
    "fn",
    "sensitivity",
    "precision",
    "f1",
    "lesion_dice",
    "fp_volume_ml",
    "fn_volume_ml",
];

/// Runs a nibabel script with `dir` as its argument.
fn nibabel(dir: &Path, script: &str) {
    let prelude = "import sys, json, pathlib, numpy as np, nibabel as nib\n\
        d = pathlib.Path(sys.argv[1])\n\
        def save(p, a, spacing=(2.0, 2.0, 3.0), origin=(0.0, 0.0, 0.0)):\n\
        \x20   p = d / p\n\
        \x20   p.parent.mkdir(parents=True, exist_ok=True)\n\
        \x20   aff = np.diag([*spacing, 1.0]); aff[:3, 3] = origin\n\
        \x20   nib.Nifti1Image(a.astype(np.uint8), aff).to_filename(str(p))\n";
    let out =
        Command::new(python()).arg("-c").arg(format!("{prelude}{script}")).arg(dir).output().expect("python runs");
    assert!(out.status.success(), "nibabel script failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// Two nnU-Net-named cases with labels 1 and 2, predictions and truths.
fn nnunet_cases() -> std::path::PathBuf {
    cached_fixture("evaluate-nnunet", |d| {
        nibabel(
            d,
            "t = np.zeros((20, 16, 12)); t[2:6, 2:6, 2:5] = 1; t[10:14, 10:14, 6:9] = 1; t[12:19, 1:8, 1:10] = 2\n\
             p = t.copy(); p[10:14, 10:14, 6:9] = 0; p[2:4, 12:15, 9:11] = 1; p[12:19, 1:8, 1:9] = 2\n\
             save('truth/CASE_a.nii.gz', t); save('pred/CASE_a.nii.gz', p)\n\
             save('truth/CASE_b.nii.gz', t); save('pred/CASE_b.nii.gz', t)\n",
        );
    })
}

fn json(o: &std::process::Output) -> serde_json::Value {
    let (out, err) = text(o);
    assert!(o.status.success(), "edgeseg evaluate failed: {err}");
    serde_json::from_str(&out).expect("--json prints JSON")
}

#[test]
fn evaluate_json_and_csv_follow_the_contract() {
    let d = nnunet_cases();
    let (pred, tr) = (d.join("pred"), d.join("truth"));
    let v = json(&edgeseg(&["evaluate", "--pred", s(&pred), "--truth", s(&tr), "--json"]));
    let cases = v["cases"].as_array().expect("cases");
    assert_eq!(cases.iter().map(|c| c["case"].as_str().unwrap_or("")).collect::<Vec<_>>(), ["CASE_a", "CASE_b"]);
    for c in cases {
        let labels = c["labels"].as_object().expect("labels");
        assert_eq!(labels.keys().map(String::as_str).collect::<Vec<_>>(), ["1", "2"]);
        for m in labels.values() {
            for k in CONTRACT {
                assert!(m.get(k).is_some(), "{k} missing in {m}");
            }
        }
    }
    // CASE_a label 1: the second lesion missed, one false positive.
    let a1 = &cases[0]["labels"]["1"];
    assert_eq!((a1["tp"].as_u64(), a1["fp"].as_u64(), a1["fn"].as_u64()), (Some(1), Some(1), Some(1)));
    assert_eq!(a1["lesion_dice"].as_f64(), Some(0.5));
    // 48 voxels of 12 µL missed entirely: autoPET's false-negative volume.
    assert!((a1["fn_volume_ml"].as_f64().unwrap_or(0.0) - 48.0 * 0.012).abs() < 1e-9, "{a1}");
    let b1 = &cases[1]["labels"]["1"];
    assert_eq!((b1["dice"].as_f64(), b1["hd95_mm"].as_f64()), (Some(1.0), Some(0.0)));
    let sum = &v["summary"]["labels"]["1"];
    assert_eq!(sum["cases"].as_u64(), Some(2));
    assert_eq!((sum["pooled"]["tp"].as_u64(), sum["pooled"]["fn"].as_u64()), (Some(3), Some(1)));
    assert!(sum["per_case"]["dice"]["mean"].as_f64().is_some() && sum["per_case"]["dice"]["sd"].as_f64().is_some());

    let o = edgeseg(&["evaluate", "--pred", s(&pred), "--truth", s(&tr), "--csv", "--label", "1"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    assert_eq!(header[..2], ["case", "label"]);
    assert_eq!(header[2..18], CONTRACT[..]);
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2, "one row per case and label: {out}");
    assert!(rows[0].starts_with("CASE_a,1,"), "{}", rows[0]);

    // --out writes both files; the human summary names the figures.
    let out_dir = d.join("out");
    let o = edgeseg(&["evaluate", "--pred", s(&pred), "--truth", s(&tr), "--out", s(&out_dir)]);
    let (human, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(human.contains("summary over 2 case(s)") && human.contains("lesion Dice"), "{human}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("evaluation.json")).expect("evaluation.json"))
            .expect("JSON");
    assert_eq!(saved["cases"].as_array().map(Vec::len), Some(2));
    assert!(std::fs::read_to_string(out_dir.join("cases.csv")).expect("cases.csv").starts_with("case,label,dice,"));
}

#[test]
fn evaluate_refuses_other_grids_unless_resampling_and_names_missing_cases() {
    let d = cached_fixture("evaluate-grids", |d| {
        nibabel(
            d,
            "t = np.zeros((10, 10, 10)); t[2:6, 2:6, 2:6] = 1\n\
             save('pred/case.nii.gz', t, spacing=(2.0, 2.0, 2.0))\n\
             f = np.zeros((20, 20, 20)); f[4:12, 4:12, 4:12] = 1\n\
             save('truth/case.nii.gz', f, spacing=(1.0, 1.0, 1.0), origin=(-0.5, -0.5, -0.5))\n\
             save('other/case_x.nii.gz', t, spacing=(2.0, 2.0, 2.0))\n",
        );
    });
    let (pred, tr) = (d.join("pred"), d.join("truth"));
    let o = edgeseg(&["evaluate", "--pred", s(&pred), "--truth", s(&tr), "--json"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("10×10×10 voxels of 2.000×2.000×2.000 mm"), "{err}");
    assert!(err.contains("20×20×20 voxels of 1.000×1.000×1.000 mm"), "{err}");
    assert!(err.contains("--resample-truth") && !err.contains("Geometry {"), "{err}");
    // The 1 mm truth, offset by half its voxel, covers the same block: nearest neighbour gives it back.
    let v = json(&edgeseg(&["evaluate", "--pred", s(&pred), "--truth", s(&tr), "--json", "--resample-truth"]));
    assert_eq!(v["cases"][0]["labels"]["1"]["dice"].as_f64(), Some(1.0), "{v}");
    let o = edgeseg(&["evaluate", "--pred", s(&d.join("other")), "--truth", s(&tr)]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("no truth for: case_x"), "{err}");
}

#[test]
fn evaluate_study_folders_and_screening_verdicts() {
    let d = cached_fixture("evaluate-studies", |d| {
        nibabel(
            d,
            "t = np.zeros((12, 12, 8)); t[3:7, 3:7, 2:5] = 1\n\
             for n, (pa, ta) in enumerate([(True, True), (True, False), (False, False), (False, True), (True, True)]):\n\
             \x20   s = f'1.2.3.{n}'\n\
             \x20   save(f'out/{s}/labels.nii.gz', t if pa else np.zeros_like(t))\n\
             \x20   (d / 'out' / s / 'report.json').write_text(json.dumps({'verdict': {'abnormal': pa}}))\n\
             \x20   save(f'truth/{s}.nii.gz', t if ta else np.zeros_like(t))\n\
             (d / 'verdicts.csv').write_text('case,abnormal\\n' + ''.join(f'1.2.3.{n},{int(ta)}\\n' for n, ta in enumerate([1, 0, 0, 1, 1])))\n",
        );
    });
    let v = json(&edgeseg(&[
        "evaluate",
        "--pred",
        s(&d.join("out")),
        "--truth",
        s(&d.join("truth")),
        "--verdicts",
        s(&d.join("verdicts.csv")),
        "--json",
    ]));
    assert_eq!(v["cases"].as_array().map(Vec::len), Some(5));
    assert_eq!(v["cases"][1]["verdict"]["predicted_abnormal"].as_bool(), Some(true));
    let sc = &v["summary"]["screening"];
    assert_eq!(
        (sc["tp"].as_u64(), sc["fn"].as_u64(), sc["tn"].as_u64(), sc["fp"].as_u64()),
        (Some(2), Some(1), Some(1), Some(1))
    );
    assert_eq!(sc["sensitivity"].as_f64(), Some(2.0 / 3.0));
    let ci: Vec<f64> = sc["sensitivity_ci95"].as_array().expect("interval").iter().filter_map(|x| x.as_f64()).collect();
    // Wilson 95 % interval of 2/3: 0.2077 to 0.9385.
    assert!((ci[0] - 0.2077).abs() < 1e-4 && (ci[1] - 0.9385).abs() < 1e-4, "{ci:?}");
    // A study folder alone against one truth file.
    let v = json(&edgeseg(&[
        "evaluate",
        "--pred",
        s(&d.join("out/1.2.3.0")),
        "--truth",
        s(&d.join("truth/1.2.3.0.nii.gz")),
        "--json",
    ]));
    assert_eq!(v["cases"][0]["case"].as_str(), Some("1.2.3.0"));
    assert_eq!(v["cases"][0]["labels"]["1"]["dice"].as_f64(), Some(1.0));
}

#[test]
fn evaluate_segments_dicom_studies_with_the_demo_model_first() {
    let model = root().join("models/demo-petct");
    let p = phantom(&["--size", "small", "--vendor", "siemens", "--nuclide", "cu64", "--seed", "11"]);
    let uid = truth(&p)["study_instance_uid"].as_str().expect("study uid").to_string();
    let d = cached_fixture("evaluate-dicom", |d| {
        std::fs::create_dir_all(d.join("truth")).expect("truth folder");
        std::fs::copy(p.join("truth/labels_pet.nii.gz"), d.join("truth").join(format!("{uid}.nii.gz")))
            .expect("truth copied");
    });
    let out = d.join("eval");
    let lib = ort_lib();
    let o = edgeseg(&[
        "evaluate",
        "--pred",
        s(&p.join("dicom")),
        "--model",
        s(&model),
        "--onnxruntime",
        s(&lib),
        "--truth",
        s(&d.join("truth")),
        "--out",
        s(&out),
        "--label",
        "1",
        "2",
        "--json",
    ]);
    let v = json(&o);
    assert!(out.join("studies").join(&uid).join("labels.nii.gz").is_file());
    let c = &v["cases"][0];
    assert_eq!(c["case"].as_str(), Some(uid.as_str()));
    // The demo model finds the phantom's liver and most of its lesions.
    assert!(c["labels"]["2"]["dice"].as_f64().unwrap_or(0.0) > 0.9, "{c}");
    assert!(c["labels"]["1"]["tp"].as_u64().unwrap_or(0) >= 1, "{c}");
    assert!(out.join("evaluation.json").is_file() && out.join("cases.csv").is_file());
}
