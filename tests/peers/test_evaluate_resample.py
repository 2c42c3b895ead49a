"""`edgeseg evaluate --resample-truth` against SimpleITK: the truth put on the prediction's
grid with SimpleITK's nearest-neighbour ResampleImageFilter (0 outside), then Dice and
volumes by numpy, equal within 1e-6; and without the flag the grid mismatch is refused
naming both geometries."""
import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run_edgeseg


def write(path, arr, affine):
    nib.Nifti1Image(arr.astype(np.uint8), affine).to_filename(str(path))


@pytest.mark.parametrize("offset", [(0.0, 0.0, 0.0), (-0.5, 0.25, 1.0), (3.0, -2.0, 0.5)])
def test_resampled_truth_matches_simpleitk_nearest_neighbour(tmp_path, offset):
    rng = np.random.default_rng(7)
    # The truth: 1 mm voxels, blobs of labels 1 and 2; the prediction: a coarser, shifted grid.
    shape_t = (40, 36, 30)
    idx = np.indices(shape_t)
    truth = np.zeros(shape_t, np.uint8)
    for label, n in ((1, 6), (2, 2)):
        for _ in range(n):
            c, r = rng.uniform(4, np.array(shape_t) - 4), rng.uniform(2, 6)
            truth[((idx[0] - c[0]) ** 2 + (idx[1] - c[1]) ** 2 + (idx[2] - c[2]) ** 2) <= r * r] = label
    aff_t = np.diag([1.0, 1.0, 1.0, 1.0])
    aff_p = np.diag([2.0, 1.5, 2.5, 1.0])
    aff_p[:3, 3] = offset
    shape_p = (21, 25, 13)
    pred = (rng.random(shape_p) < 0.05).astype(np.uint8)
    write(tmp_path / "truth.nii.gz", truth, aff_t)
    write(tmp_path / "pred.nii.gz", pred, aff_p)

    refused = run_edgeseg("evaluate", "--pred", tmp_path / "pred.nii.gz", "--truth", tmp_path / "truth.nii.gz",
                          check=False)
    assert refused.returncode == 1
    assert "21×25×13 voxels of 2.000×1.500×2.500 mm" in refused.stderr
    assert "40×36×30 voxels of 1.000×1.000×1.000 mm" in refused.stderr

    p = run_edgeseg("evaluate", "--pred", tmp_path / "pred.nii.gz", "--truth", tmp_path / "truth.nii.gz",
                    "--resample-truth", "--label", "1", "2", "--json")
    labels = json.loads(p.stdout)["cases"][0]["labels"]

    ref = sitk.ReadImage(str(tmp_path / "pred.nii.gz"))
    rs = sitk.ResampleImageFilter()
    rs.SetReferenceImage(ref)
    rs.SetInterpolator(sitk.sitkNearestNeighbor)
    rs.SetDefaultPixelValue(0)
    judged = sitk.GetArrayFromImage(rs.Execute(sitk.ReadImage(str(tmp_path / "truth.nii.gz"))))
    pr = sitk.GetArrayFromImage(ref)
    voxel_ml = 2.0 * 1.5 * 2.5 / 1000
    for label in (1, 2):
        t, q = judged == label, pr == label
        m = labels[str(label)]
        assert m["voxels_truth"] == int(t.sum())
        assert abs(m["volume_truth_ml"] - t.sum() * voxel_ml) < 1e-6
        want = 2 * (t & q).sum() / (t.sum() + q.sum())
        assert abs(m["dice"] - want) < 1e-6, (label, m["dice"], want)
