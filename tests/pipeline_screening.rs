//! `edgeseg process` with a CT screening model (profile `ct-screening`) on
//! dual-phase pancreas CT studies written by tests/fixtures/dualphase.py
//! (pydicom): the model runs on each phase, the S4C rules give the verdict in
//! report.json, and the picture shows the finding.

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
