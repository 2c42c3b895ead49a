//! The public conformance set (`../shared/conformance/`, beside the
//! repository; its README names each file's source): every folder in it goes
//! through `edgeseg convert`, which must exit 0 with one volume whose voxel
//! values equal pydicom's (pydicom with pylibjpeg / pyjpegls / GDCM for the
//! compressed files; `tests/peers/pydicom_read.py`): exactly for every
//! lossless syntax and for JPEG-LS near-lossless (its decoding is integer
//! arithmetic, fixed by the standard), within two stored levels for the DCT
//! processes of JPEG baseline and extended (1.2.840.10008.1.2.4.50 / .51:
//! PS3.5 leaves the inverse DCT's rounding to the decoder; ours and pydicom's
//! differ by at most one level on the NEMA 12-bit file).
//!
//! Among them: Explicit VR Big Endian (NEMA WG04 CT1, dcm_qa_ts MR 3) and
//! the NEMA enhanced CT0012 with several fragments per frame and an empty
//! Basic Offset Table in .51, .57, .70, .80 and .81.
//!
//! The files are read where they are, never copied into the repository. When
//! the folder is absent the test says so and passes: the set is not part of
//! the repository.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{edgeseg, python, root, s, text};

/// Stored levels a DCT decoder may differ by from pydicom's.
const DCT_LEVELS: f64 = 2.0;

/// The conformance set, when it is there.
fn conformance() -> Option<PathBuf> {
    let dir = root().parent()?.join("shared/conformance");
    dir.is_dir().then_some(dir)
}

fn folders(set: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(set)
        .expect("conformance folder")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

/// The transfer syntax of the one file in `dir`, from dcmdump.
fn transfer_syntax(dir: &Path) -> String {
    let file = std::fs::read_dir(dir)
        .expect("folder")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.is_file())
        .expect("a file");
    let o = Command::new("dcmdump").args(["-M", "-q", "-Un", "+P", "0002,0010"]).arg(&file).output();
    let o = o.expect("dcmdump runs (dcmtk)");
    // (0002,0010) UI [1.2.840.10008.1.2.4.80]                 #  22, 1 TransferSyntaxUID
    let line = String::from_utf8_lossy(&o.stdout).into_owned();
    line.split(['[', ']']).nth(1).map(|u| u.trim_end_matches('\0').to_string()).unwrap_or(line)
}

/// The largest |difference| a reader may show against pydicom, in stored levels.
fn tolerance_levels(ts: &str) -> f64 {
    match ts {
        "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51" => DCT_LEVELS,
        _ => 0.0,
    }
}

/// pydicom's volumes of `dirs`, each (z, rows, cols) as f32.
fn pydicom_volumes(dirs: &[PathBuf], save: &Path) -> Vec<(Vec<usize>, Vec<f32>)> {
    let mut cmd = Command::new(python());
    cmd.arg(root().join("tests/peers/pydicom_read.py")).arg("--save").arg(save).args(dirs);
    let o = cmd.output().expect("python runs");
    let (out, err) = text(&o);
    assert!(o.status.success(), "pydicom_read.py failed:\n{out}\n{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .filter(|v: &serde_json::Value| v.get("dir").is_some())
        .collect();
    assert_eq!(lines.len(), dirs.len(), "{out}");
    lines
        .iter()
        .map(|v| {
            let shape: Vec<usize> =
                v["shape"].as_array().expect("shape").iter().map(|d| d.as_u64().expect("dim") as usize).collect();
            let bytes = std::fs::read(v["saved"].as_str().expect("saved")).expect("saved volume");
            let data = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            (shape, data)
        })
        .collect()
}

#[test]
fn every_public_conformance_file_converts_to_pydicoms_values() {
    let Some(set) = conformance() else {
        println!(
            "skipped: {} is absent",
            root().parent().map(|p| p.join("shared/conformance")).unwrap_or_default().display()
        );
        return;
    };
    let dirs = folders(&set);
    assert!(dirs.len() >= 26, "{} folders in {}", dirs.len(), set.display());
    let tmp = tempfile::tempdir().expect("tempdir");
    let peers = pydicom_volumes(&dirs, tmp.path());
    let mut failures = Vec::new();
    println!("| folder | transfer syntax | max |diff| (levels) | tolerance |");
    for (dir, (shape, want)) in dirs.iter().zip(peers) {
        let name = dir.file_name().expect("name").to_string_lossy().into_owned();
        let out = tmp.path().join(&name);
        let o = edgeseg(&["convert", s(dir), "--out", s(&out)]);
        let (stdout, stderr) = text(&o);
        if o.status.code() != Some(0) {
            failures.push(format!("{name}: exit {:?}\n{stderr}", o.status.code()));
            continue;
        }
        let niftis: Vec<&str> = stdout.lines().filter(|l| l.ends_with(".nii.gz")).collect();
        if niftis.len() != 1 {
            failures.push(format!("{name}: {} volumes written, 1 expected", niftis.len()));
            continue;
        }
        let v = edgeseg::export::nifti::read_f32(Path::new(niftis[0])).expect("our NIfTI reads back");
        // Ours: i (column) fastest, then j (row), then k along the normal;
        // pydicom's: (z sorted along the normal, rows, cols), columns fastest.
        let dims = v.geometry.dims;
        // A Siemens mosaic: pydicom gives the one stored image, ours its N
        // slices (their geometry is judged by dcm2niix and nibabel in
        // ingest_mosaic); the values must be pydicom's tiles, slice k being
        // tile (k / tiles, k % tiles) of a ceil(sqrt(N)) grid.
        let want = if shape[0] == 1 && dims[2] > 1 {
            let tiles = (1..=dims[2]).find(|t| t * t >= dims[2]).unwrap_or(1);
            if shape[1] != tiles * dims[1] || shape[2] != tiles * dims[0] {
                failures.push(format!("{name}: dims {dims:?} are no mosaic of pydicom's {shape:?}"));
                continue;
            }
            let mut tiled = Vec::with_capacity(v.data.len());
            for k in 0..dims[2] {
                let (tr, tc) = (k / tiles, k % tiles);
                for j in 0..dims[1] {
                    for i in 0..dims[0] {
                        tiled.push(want[(tr * dims[1] + j) * shape[2] + tc * dims[0] + i]);
                    }
                }
            }
            tiled
        } else if [dims[2], dims[1], dims[0]] != [shape[0], shape[1], shape[2]] {
            failures.push(format!("{name}: dims {dims:?}, pydicom's (z, rows, cols) {shape:?}"));
            continue;
        } else {
            want
        };
        let ts = transfer_syntax(dir);
        // Every file of the set has RescaleSlope 1 or none: a level is 1.
        let tolerance = tolerance_levels(&ts);
        let worst = v.data.iter().zip(&want).map(|(a, b)| f64::from((a - b).abs())).fold(0.0, f64::max);
        println!("| {name} | {ts} | {worst} | {tolerance} |");
        if worst > tolerance || v.data.len() != want.len() {
            failures.push(format!("{name} ({ts}): max |difference| from pydicom {worst}, tolerance {tolerance}"));
        }
        let nonzero = want.iter().any(|&x| x != want[0]);
        assert!(nonzero, "{name}: pydicom's volume is flat, the comparison would mean nothing");
    }
    assert!(failures.is_empty(), "{} folder(s) failed:\n{}", failures.len(), failures.join("\n"));
}
