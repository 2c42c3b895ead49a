"""The study folder `edgeseg process` writes, judged by independent readers.

Done-when of the outputs issue (the NIfTI, picture and table parts):
- nibabel reads labels.nii.gz, lesions.nii.gz (and the 4D probabilities.nii.gz)
  with the affine dicom2nifti gives for the reference (PET) series, <= 1e-3 mm;
- mip.png, read with Pillow, has the size the documented rule gives from the
  voxel spacing (the MIP, and the legend panel right of it), a white background, and each lesion's palette colour near the
  lesion's centroid, projected here from report.json's centroid_lps_mm and the
  dicom2nifti geometry (not from edgeseg's code);
- lesions.csv, parsed with Python's csv module, equals report.json's lesion table
  at the documented precision.

The studies are phantoms (tests/fixtures/phantom.py, pydicom) and the model is the
point-wise PET/CT test package (tests/fixtures/onnx_package.py), which marks hot
spots as lesions."""
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import dicom2nifti
import dicom2nifti.settings
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from conftest import FIXTURES, run_edgeseg

AFFINE_TOL_MM = 1e-3

# docs/report.md, "mip.png": the palette (lesion n gets entry (n - 1) mod 12),
# the upscaling rule and the window.
PALETTE = [(230, 25, 75), (0, 130, 200), (60, 180, 75), (245, 130, 48), (145, 30, 180), (240, 50, 230),
           (0, 128, 128), (170, 110, 40), (128, 0, 0), (0, 0, 128), (128, 128, 0), (0, 190, 190)]
MIN_HEIGHT, MAX_UPSCALE = 512, 8

# docs/report.md, "lesions.csv": column -> (report.json key, digits after the point; None = integer).
CSV_COLUMNS = {
    "number": ("number", None), "volume_ml": ("volume_ml", 3), "suv_max": ("suv_max", 3),
    "suv_mean": ("suv_mean", 3), "suv_peak": ("suv_peak", 3), "suv_sd": ("suv_sd", 3), "tlg": ("tlg", 3),
    "centroid_lps_x_mm": (("centroid_lps_mm", 0), 2), "centroid_lps_y_mm": (("centroid_lps_mm", 1), 2),
    "centroid_lps_z_mm": (("centroid_lps_mm", 2), 2), "voxels": ("voxels", None),
    "bbox_min_i": (("bbox_min", 0), None), "bbox_min_j": (("bbox_min", 1), None), "bbox_min_k": (("bbox_min", 2), None),
    "bbox_max_i": (("bbox_max", 0), None), "bbox_max_j": (("bbox_max", 1), None), "bbox_max_k": (("bbox_max", 2), None),
}

CASES = [
    ("--size", "small", "--vendor", "siemens", "--nuclide", "cu64", "--seed", "11"),
    ("--size", "small", "--vendor", "ge", "--nuclide", "ga68", "--seed", "3"),
]


@pytest.fixture(scope="session")
def petct_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("pointwise-petct")
    subprocess.run([sys.executable, str(FIXTURES / "onnx_package.py"), "--out", str(d), "--petct", "--patch", "32"],
                   check=True, capture_output=True)
    return d / "model"


def ort_lib() -> Path:
    import onnxruntime
    capi = Path(onnxruntime.__file__).parent / "capi"
    libs = sorted(capi.glob("libonnxruntime.so*"))
    if not libs:
        pytest.fail(f"no libonnxruntime.so in {capi}")
    return libs[0]


def dicom2nifti_pet(series_dir: Path, tmp: Path):
    dicom2nifti.settings.disable_validate_slice_increment()
    out = tmp / "d2n_pet.nii.gz"
    dicom2nifti.dicom_series_to_nifti(str(series_dir), str(out), reorient_nifti=False)
    return nib.load(str(out))


def lesion_value(lesion: dict, key):
    if isinstance(key, tuple):
        return lesion[key[0]][key[1]]
    return lesion[key]


@pytest.mark.parametrize("flags", CASES, ids=[" ".join(c) for c in CASES])
def test_outputs_against_peers(phantoms, petct_model, tmp_path, flags):
    root, truth = phantoms(*flags)
    out = tmp_path / "out"
    run_edgeseg("process", root / "dicom", "--model", petct_model, "--out", out, "--onnxruntime", ort_lib(),
                "--save-probabilities")
    study = out / truth["study_instance_uid"]
    report = json.loads((study / "report.json").read_text())
    lesions = report["lesions"]
    assert lesions, "the point-wise model marks the phantom's hot spots"

    # NIfTI: nibabel reads them with dicom2nifti's affine of the PET series.
    ref = dicom2nifti_pet(root / "dicom" / "PT", tmp_path)
    for name in ("labels.nii.gz", "lesions.nii.gz", "probabilities.nii.gz"):
        img = nib.load(str(study / name))
        np.testing.assert_allclose(img.affine, ref.affine, atol=AFFINE_TOL_MM, err_msg=f"{name} sform")
        np.testing.assert_allclose(img.get_qform(), ref.affine, atol=AFFINE_TOL_MM, err_msg=f"{name} qform")
        assert img.shape[:3] == ref.shape, name
    probs = np.asarray(nib.load(str(study / "probabilities.nii.gz")).dataobj)
    assert probs.ndim == 4 and probs.shape[3] == 2, probs.shape
    np.testing.assert_allclose(probs.sum(axis=3), 1.0, atol=1e-4)
    inst = np.asarray(nib.load(str(study / "lesions.nii.gz")).dataobj).astype(np.int64)
    assert inst.max() == len(lesions)
    for les in lesions:
        assert (inst == les["number"]).sum() == les["voxels"]

    # lesions.csv equals the report's table at the documented precision.
    raw = (study / "lesions.csv").read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf"), "no BOM"
    assert raw.endswith(b"\r\n") and raw.count(b"\n") == raw.count(b"\r\n"), "CRLF records"
    rows = list(csv.DictReader(raw.decode("utf-8").splitlines()))
    assert list(rows[0].keys()) == list(CSV_COLUMNS), "columns and their order"
    # The last row is the patient-level summary (docs/report.md): the sums and maxima of the table.
    total = rows.pop()
    assert total["number"] == "total", total
    assert len(rows) == len(lesions)
    assert abs(float(total["volume_ml"]) - report["patient"]["total_tumour_volume_ml"]) <= 5e-4
    assert abs(float(total["tlg"]) - report["patient"]["total_tlg_g"]) <= 5e-4
    assert abs(float(total["suv_max"]) - report["patient"]["highest_suv_max"]) <= 5e-4
    assert int(total["voxels"]) == sum(les["voxels"] for les in lesions)
    assert total["suv_sd"] == "" and total["centroid_lps_x_mm"] == ""
    # report.json's units block and total TLG under its own name (the old key an alias).
    assert report["units"]["suv"] == "g/mL" and report["units"]["volume"] == "mL" and report["units"]["tlg"] == "g"
    assert report["patient"]["total_tlg_g"] == report["patient"]["total_lesion_uptake"]
    for row, les in zip(rows, lesions):
        for col, (key, digits) in CSV_COLUMNS.items():
            want = lesion_value(les, key)
            if digits is None:
                assert int(row[col]) == want, (col, row[col], want)
            else:
                assert abs(float(row[col]) - want) <= 0.5 * 10.0 ** -digits + 1e-9, (col, row[col], want)

    # mip.png: size from the spacing, white background, lesion colours in place.
    check_mip(Image.open(study / "mip.png").convert("RGB"), ref, lesions)


def check_mip(img: Image.Image, ref, lesions):
    """Coronal MIP, radiological: image columns run towards the patient's left
    (LPS +x), rows towards the feet (LPS -z), square pixels."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ref.affine  # voxel -> LPS
    dims = np.array(ref.shape[:3])
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    # This test handles axis-aligned grids: which voxel axis runs along x and z.
    ax_x = int(np.argmax(np.abs(lps[0, :3])))
    ax_z = int(np.argmax(np.abs(lps[2, :3])))
    assert np.allclose(np.abs(lps[:3, :3]) / spacing, np.abs(np.round(lps[:3, :3] / spacing))), "axis-aligned phantom"
    sx, sz = spacing[ax_x], spacing[ax_z]
    base = min(sx, sz)
    scale = min(max(math.ceil(MIN_HEIGHT / max(round(dims[ax_z] * sz / base), 1)), 1), MAX_UPSCALE)
    pixel = base / scale
    # The MIP at the top left, the panel (96 px per font scale) to its right.
    mip_w, mip_h = round(dims[ax_x] * sx / pixel), round(dims[ax_z] * sz / pixel)
    font = min(max(mip_h // 256, 1), 4)
    assert img.size[0] == mip_w + 96 * font and img.size[1] >= mip_h, img.size
    # Physical extent of the picture: voxel-centre range plus half a voxel.
    corners = np.array([[i, j, k, 1.0] for i in (0, dims[0] - 1) for j in (0, dims[1] - 1) for k in (0, dims[2] - 1)])
    world = corners @ lps.T
    x_lo = world[:, 0].min() - sx / 2
    z_hi = world[:, 2].max() + sz / 2
    px = np.asarray(img).astype(np.int64)
    h, w = px.shape[:2]
    for y, x in [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)]:
        assert tuple(px[y, x]) == (255, 255, 255), f"corner ({x}, {y}) is {px[y, x]}, not white"
    for les in lesions:
        cx, _, cz = les["centroid_lps_mm"]
        col = (cx - x_lo) / pixel - 0.5
        row = (z_hi - cz) / pixel - 0.5
        assert 0 <= col < w and 0 <= row < h, f"lesion {les['number']} projects outside the picture"
        # Its footprint lies within its bounding box; look within that extent around the centroid.
        ext = (np.array(les["bbox_max"]) - np.array(les["bbox_min"]) + 1) * spacing / pixel
        rx, rz = ext[ax_x] + 3, ext[ax_z] + 3
        y0, y1 = max(int(row - rz), 0), min(int(row + rz) + 1, h)
        x0, x1 = max(int(col - rx), 0), min(int(col + rx) + 1, w)
        colour = PALETTE[(les["number"] - 1) % len(PALETTE)]
        window = px[y0:y1, x0:x1]
        hits = np.all(window == np.array(colour), axis=2)
        assert hits.any(), f"lesion {les['number']}'s colour {colour} not near ({col:.0f}, {row:.0f})"
        # The outline surrounds the centroid: coloured pixels on both sides of it, horizontally.
        ys, xs = np.nonzero(hits)
        xs = xs + x0
        assert xs.min() <= col + 1 and xs.max() >= col - 1, f"lesion {les['number']} outline does not span its centroid"
