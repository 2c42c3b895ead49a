//! `seg.dcm`, `rtstruct.dcm` and `mip.dcm` (the Secondary Capture of the
//! MIP) from `edgeseg process` judged by dicom3tools' `dciodvfy` (no line
//! starting with "Error"; warnings printed) and parsed by dcmtk's `dcmdump`,
//! for axial, oblique, feet-first and hollow-lesion phantom studies; a study
//! without findings gets neither SEG nor RTSTRUCT.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::{cached_fixture, edgeseg, fixture_script, ort_lib, phantom, s, text, truth};

fn petct_package() -> PathBuf {
    cached_fixture("pointwise-petct", |d| {
        fixture_script("onnx_package.py", &["--out", s(d), "--petct", "--patch", "32"])
    })
    .join("model")
}

/// Runs `edgeseg process` on `dicom` and returns the study folder and its report.
fn process(dicom: &Path, study_uid: &str) -> (tempfile::TempDir, PathBuf, Value) {
    let out = tempfile::tempdir().expect("tempdir");
    let o = edgeseg(&[
        "process",
        s(dicom),
        "--model",
        s(&petct_package()),
        "--out",
        s(out.path()),
        "--onnxruntime",
        s(&ort_lib()),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let dir = out.path().join(study_uid);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("report")).expect("json");
    (out, dir, report)
}

/// dciodvfy's verdict: the error lines and the warning lines.
fn dciodvfy(file: &Path) -> (Vec<String>, Vec<String>) {
    let o = Command::new("dciodvfy").arg(file).output().expect("dciodvfy (Debian dicom3tools) installed");
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let errors = all.lines().filter(|l| l.starts_with("Error")).map(str::to_string).collect();
    let warnings = all.lines().filter(|l| l.starts_with("Warning")).map(str::to_string).collect();
    (errors, warnings)
}

fn dcmdump(file: &Path) -> String {
    let o = Command::new("dcmdump").arg("+P").arg("0008,0060").arg(file).output().expect("dcmdump (dcmtk) installed");
    assert!(o.status.success(), "dcmdump cannot parse {}: {}", file.display(), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Processes a study and checks both DICOM files; returns the output folder
/// (kept alive) and the study folder.
fn check_study(name: &str, dicom: &Path, study_uid: &str) -> (tempfile::TempDir, PathBuf) {
    let (out, dir, report) = process(dicom, study_uid);
    let written: Vec<&str> =
        report["dicom_outputs"].as_array().expect("dicom_outputs").iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(written, ["seg.dcm", "rtstruct.dcm", "mip.dcm"], "{name}");
    for (file, modality) in [("seg.dcm", "SEG"), ("rtstruct.dcm", "RTSTRUCT"), ("mip.dcm", "OT")] {
        let p = dir.join(file);
        let (errors, warnings) = dciodvfy(&p);
        for w in &warnings {
            println!("{name} {file}: {w}");
        }
        assert!(errors.is_empty(), "{name} {file}: dciodvfy errors:\n{}", errors.join("\n"));
        assert!(dcmdump(&p).contains(&format!("[{modality}]")), "{name} {file}: Modality {modality}");
    }
    (out, dir)
}

#[test]
fn seg_and_rtstruct_pass_dciodvfy_axial() {
    let p = phantom(&["--size", "small", "--vendor", "siemens", "--nuclide", "cu64", "--seed", "11"]);
    check_study("axial", &p.join("dicom"), truth(&p)["study_instance_uid"].as_str().expect("uid"));
}

#[test]
fn seg_and_rtstruct_pass_dciodvfy_oblique() {
    let p = phantom(&["--size", "small", "--seed", "5", "--oblique"]);
    check_study("oblique", &p.join("dicom"), truth(&p)["study_instance_uid"].as_str().expect("uid"));
}

#[test]
fn seg_and_rtstruct_pass_dciodvfy_feet_first() {
    let p = phantom(&["--size", "small", "--seed", "7", "--feet-first"]);
    check_study("feet-first", &p.join("dicom"), truth(&p)["study_instance_uid"].as_str().expect("uid"));
}

#[test]
fn seg_and_rtstruct_pass_dciodvfy_lesion_with_holes() {
    let p = phantom(&["--size", "small", "--vendor", "siemens", "--nuclide", "cu64", "--seed", "11"]);
    let hollow = cached_fixture("hollow-seed11", |d| fixture_script("hollow.py", &["--phantom", s(&p), "--out", s(d)]));
    check_study("hollow", &hollow.join("dicom"), truth(&hollow)["study_instance_uid"].as_str().expect("uid"));
}

#[test]
fn study_without_findings_gets_no_dicom_outputs() {
    // The tiny phantom with every PET pixel set to zero (hollow.py --cold,
    // pydicom): nothing above the model's threshold, no lesion, no class voxel.
    let p = phantom(&["--vendor", "siemens"]);
    let cold =
        cached_fixture("cold-pet", |d| fixture_script("hollow.py", &["--phantom", s(&p), "--out", s(d), "--cold"]));
    let (_out, dir, report) = process(&cold.join("dicom"), truth(&p)["study_instance_uid"].as_str().expect("uid"));
    assert_eq!(report["lesions"].as_array().map(Vec::len), Some(0));
    assert_eq!(report["dicom_outputs"], serde_json::json!(["mip.dcm"]), "the picture still goes");
    assert!(!dir.join("seg.dcm").exists() && !dir.join("rtstruct.dcm").exists());
    assert!(dir.join("labels.nii.gz").exists(), "the NIfTI outputs are still written");
}

#[test]
fn seg_and_rtstruct_pass_dciodvfy_multiframe_source() {
    // The PET as one Enhanced PET object (variants.py, pydicom) beside the CT:
    // frames are referenced by ReferencedFrameNumber.
    let p = phantom(&["--size", "small", "--vendor", "siemens", "--nuclide", "cu64", "--seed", "11"]);
    let study = cached_fixture("enhanced-pet-study", |d| {
        let v = d.join("variants");
        fixture_script(
            "variants.py",
            &["--series", s(&p.join("dicom/PT")), "--out", s(&v), "--kind", "enhanced-multiframe", "--no-dciodvfy"],
        );
        let dicom = d.join("dicom");
        std::fs::create_dir_all(dicom.join("PT")).expect("mkdir");
        std::fs::rename(v.join("enhanced-multiframe"), dicom.join("PT/enhanced")).expect("move");
        copy_dir(&p.join("dicom/CT"), &dicom.join("CT"));
    });
    let uid = truth(&p)["study_instance_uid"].as_str().expect("uid").to_string();
    let (_out, dir) = check_study("enhanced-pet", &study.join("dicom"), &uid);
    let dump = Command::new("dcmdump").arg(dir.join("seg.dcm")).output().expect("dcmdump");
    assert!(String::from_utf8_lossy(&dump.stdout).contains("ReferencedFrameNumber"), "frames referenced by number");
}

/// Copies a folder tree (the scan follows no directory symlink).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

/// Writes both files from the library for a synthetic grid with a lesion with
/// a hole, a liver, an uncoded class and a class touching the image border, a
/// non-ASCII patient name and extreme coordinates, and runs dciodvfy on them.
#[test]
fn library_writer_with_classes_and_extreme_geometry_passes_dciodvfy() {
    use edgeseg::export::dicom_refs::{PatientStudy, SourceRefs, SourceSlice};
    use edgeseg::export::{DicomInputs, seg::Algorithm, write_dicom};
    use edgeseg::volume::{Geometry, Volume};

    let (nx, ny, nz) = (12, 10, 4);
    let c = 20f64.to_radians().cos();
    let sn = 20f64.to_radians().sin();
    let row = [c, sn, 0.0];
    let col = [-sn * 0.5, c * 0.5, 0.75f64.sqrt()];
    let normal = edgeseg::volume::cross(row, col);
    let g = Geometry {
        dims: [nx, ny, nz],
        spacing: [0.976562512345, 0.976562512345, 3.0],
        origin: [-123456.7890123, 98765.4321987, -99999.999999],
        direction: [row, col, normal],
    };
    let mut labels = Volume::filled(g.clone(), 0u8);
    let mut lesions = Volume::filled(g.clone(), 0u32);
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let idx = g.index(i, j, k);
                if (2..7).contains(&i) && (2..7).contains(&j) && !(i == 4 && j == 4) {
                    labels.data[idx] = 1;
                    lesions.data[idx] = 1;
                } else if i >= 9 && k < 2 {
                    labels.data[idx] = 2; // liver, touching the border
                } else if j == 0 && k == 3 {
                    labels.data[idx] = 3; // no SNOMED code known
                }
            }
        }
    }
    let slices = (0..nz)
        .map(|k| SourceSlice {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.128".into(),
            sop_instance_uid: format!("1.2.826.0.1.3680043.8.498.{}", 1000 + k),
            frame: None,
            position: g.voxel_to_lps([0.0, 0.0, k as f64]),
        })
        .collect();
    let inputs = DicomInputs {
        source: SourceRefs {
            study_uid: "1.2.826.0.1.3680043.8.498.1".into(),
            series_uid: "1.2.826.0.1.3680043.8.498.2".into(),
            frame_of_reference_uid: "1.2.826.0.1.3680043.8.498.3".into(),
            orientation: [row[0], row[1], row[2], col[0], col[1], col[2]],
            slices,
            resampled: None,
            patient: PatientStudy {
                patient_name: "Müller^José".into(),
                patient_id: "P-1".into(),
                patient_birth_date: "19500101".into(),
                patient_sex: "O".into(),
                study_date: "20260101".into(),
                study_time: "101010".into(),
                accession_number: "A1".into(),
                referring_physician_name: "".into(),
                study_id: "S1".into(),
            },
        },
        classes: vec![(0, "background".into()), (1, "lesion".into()), (2, "liver".into()), (3, "pancreas_tail".into())],
        lesion_label: Some(1),
        algorithm: Algorithm { model_name: "m".into(), model_version: "1".into(), model_sha256: "0".repeat(64) },
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let written = write_dicom(dir.path(), &inputs, &labels, Some(&lesions)).expect("written");
    assert_eq!(written, ["seg.dcm", "rtstruct.dcm"]);
    for file in written {
        let (errors, warnings) = dciodvfy(&dir.path().join(&file));
        for w in &warnings {
            println!("synthetic {file}: {w}");
        }
        assert!(errors.is_empty(), "{file}: dciodvfy errors:\n{}", errors.join("\n"));
    }
    let dump = Command::new("dcmdump").arg("+L").arg(dir.path().join("rtstruct.dcm")).output().expect("dcmdump");
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(dump.contains("[Lesion 1]") && dump.contains("[liver]") && dump.contains("[pancreas_tail]"));
    // Every DS value of the contours fits 16 characters.
    for line in dump.lines().filter(|l| l.contains("ContourData")) {
        let (open, close) = (line.find('[').expect("["), line.rfind(']').expect("]"));
        for v in line[open + 1..close].split('\\') {
            assert!(v.len() <= 16, "{v}");
        }
    }
    let seg = Command::new("dcmdump").arg(dir.path().join("seg.dcm")).output().expect("dcmdump");
    let seg = String::from_utf8_lossy(&seg.stdout).into_owned();
    assert!(seg.contains("[10200004]") && seg.contains("[85756007]") && seg.contains("[108369006]"));
}

/// sRGB (0-255) of a RecommendedDisplayCIELabValue (PS3.3 C.10.7.1.1 scaling,
/// CIELab with a D65 white point).
fn lab_to_rgb(v: &[u16]) -> [u8; 3] {
    let l = f64::from(v[0]) * 100.0 / 65535.0;
    let a = f64::from(v[1]) * 255.0 / 65535.0 - 128.0;
    let b = f64::from(v[2]) * 255.0 / 65535.0 - 128.0;
    let fy = (l + 16.0) / 116.0;
    let inv = |t: f64| if t > 6.0 / 29.0 { t * t * t } else { 3.0 * (6.0f64 / 29.0).powi(2) * (t - 4.0 / 29.0) };
    let (x, y, z) = (0.95047 * inv(fy + a / 500.0), inv(fy), 1.08883 * inv(fy - b / 200.0));
    let lin = [
        3.2406 * x - 1.5372 * y - 0.4986 * z,
        -0.9689 * x + 1.8758 * y + 0.0415 * z,
        0.0557 * x - 0.2040 * y + 1.0570 * z,
    ];
    lin.map(|c| {
        let c = c.clamp(0.0, 1.0);
        let g = if c <= 0.0031308 { 12.92 * c } else { 1.055 * c.powf(1.0 / 2.4) - 0.055 };
        (g * 255.0).round() as u8
    })
}

/// Issue 12, item 2: one lesion palette for every output. Lesion n has the
/// colour docs/report.md gives it in seg.dcm (CIELab back to sRGB), in
/// rtstruct.dcm (ROIDisplayColor), and the colours of mip.png's outlines and
/// numbers are exactly those of the study's lesions.
#[test]
fn lesion_colours_agree_in_seg_rtstruct_mip_and_the_docs() {
    use dicom_dictionary_std::tags;
    let p = phantom(&["--size", "small", "--vendor", "siemens", "--nuclide", "cu64", "--seed", "11"]);
    let uid = truth(&p)["study_instance_uid"].as_str().expect("uid").to_string();
    let (_out, dir, report) = process(&p.join("dicom"), &uid);
    let lesions = report["lesions"].as_array().expect("lesions").len();
    assert!(lesions >= 2, "a study with several lesions: {lesions}");
    let docs = std::fs::read_to_string(crate::util::root().join("docs/report.md")).expect("docs/report.md");
    let mut documented = std::collections::BTreeMap::new();
    for line in docs.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        for pair in cells.windows(2) {
            if let (Ok(n), Some(rgb)) = (pair[0].parse::<usize>(), pair[1].strip_prefix('(')) {
                let v: Vec<u8> =
                    rgb.split(')').next().unwrap_or("").split(',').filter_map(|c| c.trim().parse().ok()).collect();
                if v.len() == 3 {
                    documented.insert(n, [v[0], v[1], v[2]]);
                }
            }
        }
    }
    assert_eq!(documented.len(), 12, "the palette table of docs/report.md: {documented:?}");
    let want = |n: usize| documented[&((n - 1) % 12 + 1)];

    let seg = dicom_object::open_file(dir.join("seg.dcm")).expect("seg.dcm");
    let mut seg_colours = std::collections::BTreeMap::new();
    for item in seg.element(tags::SEGMENT_SEQUENCE).expect("segments").items().expect("items") {
        let label = item.element(tags::SEGMENT_LABEL).expect("label").to_str().expect("str").trim().to_string();
        let lab: Vec<u16> =
            item.element(tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE).expect("lab").to_multi_int().expect("us");
        if let Some(n) = label.strip_prefix("Lesion ").and_then(|n| n.parse::<usize>().ok()) {
            seg_colours.insert(n, lab_to_rgb(&lab));
        }
    }
    let rt = dicom_object::open_file(dir.join("rtstruct.dcm")).expect("rtstruct.dcm");
    let mut names = std::collections::BTreeMap::new();
    for item in rt.element(tags::STRUCTURE_SET_ROI_SEQUENCE).expect("rois").items().expect("items") {
        let number: i32 = item.element(tags::ROI_NUMBER).expect("number").to_int().expect("int");
        names.insert(number, item.element(tags::ROI_NAME).expect("name").to_str().expect("str").trim().to_string());
    }
    let mut rt_colours = std::collections::BTreeMap::new();
    for item in rt.element(tags::ROI_CONTOUR_SEQUENCE).expect("contours").items().expect("items") {
        let number: i32 = item.element(tags::REFERENCED_ROI_NUMBER).expect("ref").to_int().expect("int");
        let rgb: Vec<u8> = item.element(tags::ROI_DISPLAY_COLOR).expect("colour").to_multi_int().expect("is");
        if let Some(n) = names[&number].strip_prefix("Lesion ").and_then(|n| n.parse::<usize>().ok()) {
            rt_colours.insert(n, [rgb[0], rgb[1], rgb[2]]);
        }
    }
    assert_eq!(seg_colours.len(), lesions, "{seg_colours:?}");
    for n in 1..=lesions {
        let (s, r, w) = (seg_colours[&n], rt_colours[&n], want(n));
        assert!(s.iter().zip(&w).all(|(a, b)| a.abs_diff(*b) <= 2), "lesion {n}: seg.dcm {s:?}, docs {w:?}");
        assert_eq!(r, w, "lesion {n}: rtstruct.dcm ROIDisplayColor");
    }

    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(dir.join("mip.png")).expect("mip")));
    let mut reader = decoder.read_info().expect("png");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("frame");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let drawn: std::collections::BTreeSet<[u8; 3]> = buf[..info.buffer_size()]
        .chunks(3)
        .map(|c| [c[0], c[1], c[2]])
        .filter(|c| !(c[0] == c[1] && c[1] == c[2]) && *c != edgeseg::export::mip::NOTICE_COLOUR)
        .collect();
    let expected: std::collections::BTreeSet<[u8; 3]> = (1..=lesions).map(want).collect();
    assert_eq!(drawn, expected, "mip.png's outline colours are the lesions' palette colours");
}
