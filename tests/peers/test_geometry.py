"""Issue 11, items 1 and 2, judged by peers: `edgeseg convert` of variable
spacing and gantry-tilted CT (tests/fixtures/geometry.py) against dcm2niix's
corrected copies (_Eq_1, _Tilt_1), and seg.dcm / rtstruct.dcm of a processed
resampled CT read back by highdicom and rt-utils onto the source slices.

- irregular and GE tilt: the voxel grids coincide (every edgeseg voxel centre
  on a dcm2niix voxel centre within 1e-3 mm) and the values agree within 1 HU
  away from the field-of-view edge (where the two fill differently).
- Philips tilt: the directions and spacings agree; dcm2niix's grid sits a
  fraction of a voxel elsewhere and its values are ~56 HU off the fixture's
  linear field (its tilt correction is marked "new: please validate"), so
  values are judged against the field itself (within 1 HU).
- outputs: highdicom's frames per source instance equal labels.nii.gz mapped
  onto each source slice (nearest voxel, computed here with numpy from the
  NIfTI affine); rtstruct.dcm's contours lie in their source slice's plane
  and, rasterised on each source slice from its own position, have Dice >=
  0.95 with that mask; rt-utils agrees as well for the unsheared (irregular)
  stack (it places every slice through the first slice's origin, so it cannot
  read a tilted one).
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import FIXTURES, run_edgeseg

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def geometry_fixture(base: Path, kind: str) -> tuple[Path, dict]:
    d = base / kind
    if not (d / "truth.json").exists():
        subprocess.run([sys.executable, str(FIXTURES / "geometry.py"), "--out", str(d), "--kind", kind], check=True)
    return d, json.loads((d / "truth.json").read_text())


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory):
    base = tmp_path_factory.mktemp("geometry")
    return lambda kind: geometry_fixture(base, kind)


def convert(d: Path, tmp: Path) -> nib.Nifti1Image:
    out = tmp / "edgeseg"
    run_edgeseg("convert", d / "dicom", "--out", out)
    return nib.load(str(next(out.glob("*.nii.gz"))))


def dcm2niix(d: Path, tmp: Path, suffix: str) -> nib.Nifti1Image:
    if shutil.which("dcm2niix") is None:
        pytest.fail("dcm2niix not installed (scripts/deps.sh installs it)")
    out = tmp / "dcm2niix"
    out.mkdir()
    p = subprocess.run(["dcm2niix", "-z", "n", "-f", "out", "-o", str(out), str(d / "dicom")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    return nib.load(str(out / f"out{suffix}.nii"))


def centres(img) -> np.ndarray:
    ii, jj, kk = np.meshgrid(*[np.arange(s) for s in img.shape], indexing="ij")
    return np.stack([ii, jj, kk, np.ones_like(ii)], -1) @ img.affine.T


def field(truth: dict, ras: np.ndarray) -> np.ndarray:
    lps = (ras @ LPS.T)[..., :3]
    return truth["field"]["a"] + lps @ np.array(truth["field"]["gradient"])


def interior(v: np.ndarray) -> np.ndarray:
    """Voxels whose in-plane neighbours are not fill either."""
    ok = v != -1024
    m = ok.copy()
    for ax in (0, 1):
        for s in (1, -1):
            m &= np.roll(ok, s, axis=ax)
    m[[0, -1], :, :] = False
    m[:, [0, -1], :] = False
    return m


@pytest.mark.parametrize("kind,suffix", [("irregular", "_Eq_1"), ("tilt-ge", "_Tilt_1"), ("tilt-philips", "_Tilt_1")])
def test_convert_agrees_with_dcm2niix(fixtures, tmp_path, kind, suffix):
    d, truth = fixtures(kind)
    ours, theirs = convert(d, tmp_path), dcm2niix(d, tmp_path, suffix)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    va, vb = ours.get_fdata(), theirs.get_fdata()
    # Directions and spacings (dcm2niix flips the row axis).
    a, b = ours.affine[:3, :3], theirs.affine[:3, :3]
    assert np.allclose(np.abs(a), np.abs(b), atol=1e-3), (a, b)
    pa = centres(ours)
    m = interior(va)
    # Our values against the fixture's linear field.
    worst_field = np.abs(va - field(truth, pa))[m].max()
    assert worst_field <= 1.0, f"{kind}: {worst_field} HU off the field"
    ib = pa @ np.linalg.inv(theirs.affine).T
    r = np.rint(ib[..., :3])
    offset_mm = np.abs((ib[..., :3] - r)).max() * np.abs(np.diag(theirs.header.get_zooms()[:3] * np.eye(3))).max()
    if kind == "tilt-philips":
        worst_theirs = np.median(np.abs(vb - field(truth, centres(theirs)))[interior(vb)])
        print(kind, "edgeseg vs field", round(float(worst_field), 3), "HU; dcm2niix median vs field",
              round(float(worst_theirs), 1), "HU; grid offset", round(float(offset_mm), 3), "mm")
        return
    assert offset_mm < 1e-3, f"{kind}: grids {offset_mm} mm apart"
    ri = r.astype(int)
    vbb = vb[ri[..., 0], ri[..., 1], ri[..., 2]]
    m &= interior(vbb)
    diff = np.abs(va - vbb)[m]
    print(kind, "voxels compared", int(m.sum()), "largest |edgeseg - dcm2niix|", round(float(diff.max()), 3), "HU")
    assert m.sum() > 0.5 * va.size
    assert diff.max() <= 1.0, f"{kind}: {diff.max()} HU apart"


def ort_lib() -> Path:
    import onnxruntime

    libs = sorted((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so*"))
    assert libs
    return libs[0]


@pytest.fixture(scope="session")
def ct_model(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ct-model")
    subprocess.run([sys.executable, str(FIXTURES / "onnx_package.py"), "--out", str(d), "--patch", "16"],
                   check=True, capture_output=True)
    return d / "model"


def mapped_onto(labels: nib.Nifti1Image, ds) -> np.ndarray:
    """labels on the source slice `ds`'s pixels (nearest voxel), [row, column]."""
    iop = np.array(ds.ImageOrientationPatient, float)
    ps = np.array(ds.PixelSpacing, float)
    jj, ii = np.mgrid[0:int(ds.Rows), 0:int(ds.Columns)]
    lps = (np.array(ds.ImagePositionPatient, float) + ii[..., None] * ps[1] * iop[:3]
           + jj[..., None] * ps[0] * iop[3:])
    ras = np.concatenate([lps * np.array([-1, -1, 1]), np.ones(lps.shape[:2] + (1,))], -1)
    idx = np.rint(ras @ np.linalg.inv(labels.affine).T)[..., :3].astype(int)
    v = np.asarray(labels.dataobj)
    ok = np.all((idx >= 0) & (idx < np.array(v.shape)), -1)
    out = np.zeros(ok.shape, v.dtype)
    out[ok] = v[idx[ok][:, 0], idx[ok][:, 1], idx[ok][:, 2]]
    return out


@pytest.mark.parametrize("kind", ["irregular", "tilt-ge", "tilt-philips"])
def test_outputs_rasterise_onto_the_source_slices(fixtures, ct_model, tmp_path, kind):
    from rt_utils import RTStructBuilder

    d, truth = fixtures(kind)
    out = tmp_path / "out"
    run_edgeseg("process", d / "dicom", "--model", ct_model, "--out", out, "--onnxruntime", ort_lib())
    study = out / truth["study_instance_uid"]
    report = json.loads((study / "report.json").read_text())
    assert report["inputs"][0]["slice_grid"]["method"] != "none"
    labels = nib.load(str(study / "labels.nii.gz"))
    src = sorted((pydicom.dcmread(f) for f in (d / "dicom").glob("*.dcm")),
                 key=lambda x: float(x.SliceLocation))
    expected = {x.SOPInstanceUID: mapped_onto(labels, x) for x in src}
    # highdicom: every frame at its source slice's own plane, masks equal.
    seg = hd.seg.segread(str(study / "seg.dcm"))
    pos = {x.SOPInstanceUID: np.array(x.ImagePositionPatient, float) for x in src}
    for f in seg.PerFrameFunctionalGroupsSequence:
        uid = f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert np.abs(np.array(f.PlanePositionSequence[0].ImagePositionPatient, float) - pos[uid]).max() < 1e-4
    uids = [x.SOPInstanceUID for x in src]
    numbers = [s.SegmentNumber for s in seg.SegmentSequence]
    assert len(numbers) == 1, [s.SegmentLabel for s in seg.SegmentSequence]
    px = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=numbers,
                                           assert_missing_frames_are_empty=True)
    on = 0
    for n, uid in enumerate(uids):
        want = expected[uid] == 1
        assert np.array_equal(px[n, :, :, 0] != 0, want), f"{kind}: slice {n} differs"
        on += int(want.sum())
    assert on > 0
    # rtstruct.dcm: every contour in its source slice's plane; rasterised on
    # each source slice from that slice's own position (OpenCV fillPoly,
    # contours combined by the even-odd rule), Dice >= 0.95 with the mask.
    rt = pydicom.dcmread(study / "rtstruct.dcm")
    by_uid = {x.SOPInstanceUID: x for x in src}
    ours = {uid: np.zeros(v.shape, np.uint8) for uid, v in expected.items()}
    for roi in rt.ROIContourSequence:
        for c in getattr(roi, "ContourSequence", []):
            x = by_uid[c.ContourImageSequence[0].ReferencedSOPInstanceUID]
            iop = np.array(x.ImageOrientationPatient, float)
            ps = np.array(x.PixelSpacing, float)
            pts = np.array(c.ContourData, float).reshape(-1, 3) - np.array(x.ImagePositionPatient, float)
            assert np.abs(pts @ np.cross(iop[:3], iop[3:])).max() < 1e-3, "contour off its slice's plane"
            poly = np.rint(np.stack([pts @ iop[:3] / ps[1], pts @ iop[3:] / ps[0]], -1)).astype(np.int32)
            filled = np.zeros_like(ours[x.SOPInstanceUID])
            cv2.fillPoly(filled, [poly], 1)
            ours[x.SOPInstanceUID] ^= filled
    got = np.stack([ours[u] != 0 for u in uids])
    want = np.stack([expected[u] == 1 for u in uids])
    dice = 2 * (got & want).sum() / (got.sum() + want.sum())
    print(kind, "rtstruct Dice on the source slices (own slice origins)", round(float(dice), 4))
    assert dice >= 0.95, f"{kind}: Dice {dice:.3f}"
    if kind.startswith("tilt"):
        # rt-utils maps every contour through the first slice's origin (it
        # assumes an unsheared stack), so it cannot place a tilted series.
        return
    rtu = RTStructBuilder.create_from(dicom_series_path=str(d / "dicom"), rt_struct_path=str(study / "rtstruct.dcm"))
    m = rtu.get_roi_mask_by_name(seg.SegmentSequence[0].SegmentLabel)
    got = np.stack([m[:, :, i] for i in range(m.shape[2])])
    want = np.stack([expected[x.SOPInstanceUID] == 1 for x in rtu.series_data])
    dice = 2 * (got & want).sum() / (got.sum() + want.sum())
    print(kind, "rt-utils Dice on the source slices", round(float(dice), 4))
    assert dice >= 0.95, f"{kind}: rt-utils Dice {dice:.3f}"
