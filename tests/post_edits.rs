//! The physician's edit loop on a processed PET/CT phantom (issue 13 item
//! 16): `add-lesion` refuses a seed inside a lesion, a growth that would
//! merge lesions and one over `--max-ml`, changing nothing; `remove-lesion`
//! and `add-lesion` keep every other lesion's number and give a new lesion
//! the next number; each edit rewrites seg.dcm, rtstruct.dcm and mip.dcm as
//! new series (SeriesNumber + 1) without the source DICOM; `edits list`
//! shows them and `edits undo` restores the folder byte for byte.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use serde_json::Value;

use crate::util::{cached_fixture, edgeseg, fixture_script, ort_lib, phantom, s, text, truth};

fn petct_package() -> PathBuf {
    cached_fixture("pointwise-petct", |d| {
        fixture_script("onnx_package.py", &["--out", s(d), "--petct", "--patch", "32"])
    })
    .join("model")
}

/// Every file of a folder (hidden ones and subfolders included) by relative path.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(d).expect("dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(p.strip_prefix(root).expect("inside").to_path_buf(), std::fs::read(&p).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn report(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("report")).expect("json")
}

fn numbers(report: &Value) -> Vec<u64> {
    report["lesions"].as_array().expect("lesions").iter().map(|l| l["number"].as_u64().expect("n")).collect()
}

/// SeriesNumber, SeriesInstanceUID, SeriesDescription and the lesion labels
/// (SegmentLabel / ROIName starting with "Lesion") of a DICOM output.
fn dicom(p: &Path) -> (i32, String, String, Vec<String>) {
    let o = dicom_object::open_file(p).expect("DICOM output");
    let t = |tag| o.element(tag).expect("element").to_str().expect("str").trim().to_string();
    let number: i32 = o.element(tags::SERIES_NUMBER).expect("number").to_int().expect("int");
    let mut labels = Vec::new();
    for (sq, name) in
        [(tags::SEGMENT_SEQUENCE, tags::SEGMENT_LABEL), (tags::STRUCTURE_SET_ROI_SEQUENCE, tags::ROI_NAME)]
    {
        if let Ok(e) = o.element(sq) {
            for item in e.items().expect("items") {
                let l = item.element(name).expect("label").to_str().expect("str").trim().to_string();
                if l.starts_with("Lesion") {
                    labels.push(l);
                }
            }
        }
    }
    (number, t(tags::SERIES_INSTANCE_UID), t(tags::SERIES_DESCRIPTION), labels)
}

fn lesion_labels(ns: &[u64]) -> Vec<String> {
    ns.iter().map(|n| format!("Lesion {n}")).collect()
}

#[test]
fn edits_keep_numbers_refuse_bad_growths_rewrite_dicom_and_undo() {
    let p = phantom(&["--size", "small", "--vendor", "siemens", "--nuclide", "cu64", "--seed", "11"]);
    let t = truth(&p);
    let out = tempfile::tempdir().expect("tempdir");
    let o = edgeseg(&[
        "process",
        s(&p.join("dicom")),
        "--model",
        s(&petct_package()),
        "--out",
        s(out.path()),
        "--onnxruntime",
        s(&ort_lib()),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let dir = out.path().join(t["study_instance_uid"].as_str().expect("uid"));
    let original = snapshot(&dir);
    let r0 = report(&dir);
    assert_eq!(r0["dicom_outputs"], serde_json::json!(["seg.dcm", "rtstruct.dcm", "mip.dcm"]));
    let n0 = numbers(&r0);
    let (seg_number, seg_uid, seg_desc, seg_labels) = dicom(&dir.join("seg.dcm"));
    assert_eq!(seg_number, 901);
    assert!(seg_desc.ends_with("NOT FOR CLINICAL USE"), "the test model is not cleared: {seg_desc}");
    assert_eq!(seg_labels, lesion_labels(&n0));

    // The largest placed lesion: its centre lies in a lesion the model found.
    let placed = t["lesions"]
        .as_array()
        .expect("lesions")
        .iter()
        .max_by_key(|l| l["voxels_pet"].as_u64().expect("v"))
        .expect("a lesion");
    let at: Vec<String> =
        placed["centre_lps_mm"].as_array().expect("c").iter().map(|v| format!("{}", v.as_f64().expect("f"))).collect();
    let at = at.join(",");
    let lesions = edgeseg::export::nifti::read_f32(&dir.join("lesions.nii.gz")).expect("lesions");
    let c = lesions.geometry.lps_to_voxel([0, 1, 2].map(|a| placed["centre_lps_mm"][a].as_f64().expect("f")));
    let hit = lesions.data[lesions.geometry.index(c[0].round() as usize, c[1].round() as usize, c[2].round() as usize)]
        as u64;
    assert!(hit > 0, "the placed lesion was found");

    // Refusals change nothing: a seed inside lesion `hit`, a growth at SUV 0.5
    // from the body (issue 13: "grew 458 mL and merged four lesions").
    let o = edgeseg(&["add-lesion", s(&dir), "--at", &at, "--threshold", "40%"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o).1;
    assert!(err.contains(&format!("lies in lesion {hit} ")), "{err}");
    assert!(err.contains(&format!("remove-lesion {} {hit}", dir.display())), "says what to try: {err}");
    let o = edgeseg(&["add-lesion", s(&dir), "--at", &at, "--threshold", "0.5"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("lies in lesion"), "{}", text(&o).1);
    // A voxel just outside lesion `hit` (face neighbour) with SUV above 0.5:
    // growing from it at SUV 0.5 reaches the lesion.
    let suv = edgeseg::export::nifti::read_f32(&dir.join("suv.nii.gz")).expect("suv");
    let g = &lesions.geometry;
    let [nx, ny, nz] = g.dims;
    let beside = (1..nz - 1)
        .flat_map(|k| (1..ny - 1).flat_map(move |j| (1..nx - 1).map(move |i| [i, j, k])))
        .find(|&[i, j, k]| {
            let at = |i: usize, j: usize, k: usize| lesions.data[g.index(i, j, k)] as u64;
            at(i, j, k) == 0
                && suv.data[g.index(i, j, k)] > 0.6
                && [at(i + 1, j, k), at(i - 1, j, k), at(i, j + 1, k), at(i, j - 1, k)].contains(&hit)
        })
        .expect("a voxel beside the lesion");
    let lps = g.voxel_to_lps(beside.map(|v| v as f64));
    let seed = format!("{},{},{}", lps[0], lps[1], lps[2]);
    let o = edgeseg(&["add-lesion", s(&dir), "--at", &seed, "--threshold", "0.5"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o).1;
    assert!(err.contains("would merge") && err.contains(&hit.to_string()), "{err}");
    assert!(err.contains("try a threshold above SUV 0.50"), "{err}");
    assert_eq!(snapshot(&dir), original, "a refused edit changes nothing");

    // remove-lesion: the others keep their numbers; DICOM rewritten as new series.
    let o = edgeseg(&["remove-lesion", s(&dir), &hit.to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let r1 = report(&dir);
    let n1: Vec<u64> = n0.iter().copied().filter(|&n| n != hit).collect();
    assert_eq!(numbers(&r1), n1);
    for l in r1["lesions"].as_array().expect("lesions") {
        let before = r0["lesions"].as_array().expect("l").iter().find(|b| b["number"] == l["number"]).expect("kept");
        assert_eq!(l["voxels"], before["voxels"], "lesion {} unchanged", l["number"]);
    }
    let map = edgeseg::export::nifti::read_f32(&dir.join("lesions.nii.gz")).expect("lesions");
    let mut present: Vec<u64> = map.data.iter().filter(|&&v| v > 0.0).map(|&v| v as u64).collect();
    present.sort_unstable();
    present.dedup();
    assert_eq!(present, n1, "lesions.nii.gz keeps the numbers");
    let (num, uid, _, labels) = dicom(&dir.join("seg.dcm"));
    assert_eq!((num, labels), (902, lesion_labels(&n1)));
    assert_ne!(uid, seg_uid, "a new series");
    let (num, _, _, labels) = dicom(&dir.join("rtstruct.dcm"));
    assert_eq!((num, labels), (903, lesion_labels(&n1)));
    assert_eq!(dicom(&dir.join("mip.dcm")).0, 904);
    let csv = std::fs::read_to_string(dir.join("lesions.csv")).expect("csv");
    let rows: Vec<&str> = csv.trim_end().split("\r\n").collect();
    assert_eq!(rows.len(), 1 + n1.len() + 1, "header, lesions, total");
    assert!(rows.last().expect("total").starts_with("total,"));
    assert!(rows[1..=n1.len()].iter().zip(&n1).all(|(r, n)| r.starts_with(&format!("{n},"))));

    // add-lesion over the limit, then within it: the next number, never a reused one.
    let o = edgeseg(&["add-lesion", s(&dir), "--at", &at, "--threshold", "40%", "--max-ml", "0.5"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("more than the limit of 0.5 mL"), "{}", text(&o).1);
    let o = edgeseg(&["add-lesion", s(&dir), "--at", &at, "--threshold", "40%"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let r2 = report(&dir);
    let next = n0.iter().max().expect("max") + 1;
    let mut n2 = n1.clone();
    n2.push(next);
    assert_eq!(numbers(&r2), n2);
    let edit = &r2["edits"][1];
    assert_eq!((edit["action"].as_str(), edit["lesion"].as_u64()), (Some("add-lesion"), Some(next)));
    assert!(edit["when"].as_str().expect("when").ends_with('Z'));
    assert!(edit["edgeseg_version"].as_str().is_some());
    assert_eq!(r2["edits"][0]["action"], "remove-lesion");
    let (num, _, _, labels) = dicom(&dir.join("seg.dcm"));
    assert_eq!((num, labels), (903, lesion_labels(&n2)));
    // Written from .edgeseg/dicom-source.json alone, they still pass dciodvfy.
    for file in ["seg.dcm", "rtstruct.dcm", "mip.dcm"] {
        let o = std::process::Command::new("dciodvfy").arg(dir.join(file)).output().expect("dciodvfy (dicom3tools)");
        let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        let errors: Vec<&str> = all.lines().filter(|l| l.starts_with("Error")).collect();
        assert!(errors.is_empty(), "{file} after edits: {}", errors.join("\n"));
    }
    assert_eq!(r2["patient"]["lesion_count"].as_u64(), Some(n2.len() as u64));
    assert_eq!(r2["patient"]["total_tlg_g"], r2["patient"]["total_lesion_uptake"]);
    // The history is in report.json without patient data.
    let seg = dicom_object::open_file(dir.join("seg.dcm")).expect("seg");
    let name = seg.element(tags::PATIENT_NAME).expect("name").to_str().expect("str").trim().to_string();
    assert!(!name.is_empty());
    assert!(!std::fs::read_to_string(dir.join("report.json")).expect("report").contains(&name));

    let o = edgeseg(&["edits", s(&dir), "list"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let list = text(&o).0;
    assert!(
        list.contains(&format!("remove-lesion: lesion {hit}")) && list.contains(&format!("add-lesion: lesion {next}"))
    );

    // Undo twice: the folder as `process` wrote it, byte for byte; a third has nothing to undo.
    for _ in 0..2 {
        let o = edgeseg(&["edits", s(&dir), "undo"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    }
    assert_eq!(snapshot(&dir), original, "undo restores the previous state exactly");
    let o = edgeseg(&["edits", s(&dir), "undo"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("no edit to undo"), "{}", text(&o).1);
}
