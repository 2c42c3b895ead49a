"""`edgeseg evaluate` against its judges (issue 17), equal within 1e-6:

- Dice, Jaccard and volumes: numpy;
- HD95, average surface distance and surface Dice: DeepMind's surface-distance
  (PyPI surface-distance 0.1, which still uses ``np.Inf``: the alias is restored here);
- lesion-wise TP/FP/FN and lesion Dice: panoptica (NaiveThresholdMatching on IoU,
  one to one) on the components that scipy.ndimage labels with the same connectivity;
- autoPET's false-positive and false-negative volumes: the formulas of the challenge's
  evaluation script (lab-midas/autoPET val_script.py: 18-connected components of one
  mask that touch no voxel of the other, times the voxel volume from pixdim).

Cases with known answers: touching lesions, empty truth, empty prediction, one-voxel
lesions, anisotropic spacing, and random blobs."""
import json

import cc3d
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from conftest import run_edgeseg

if not hasattr(np, "Inf"):
    np.Inf = np.inf  # surface-distance 0.1 predates numpy 2's removal of the alias
from surface_distance import metrics as sd  # noqa: E402

TOL = 1e-6


def structure(connectivity):
    return ndimage.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])


def write(path, arr, spacing):
    nib.Nifti1Image(arr.astype(np.uint8), np.diag([*spacing, 1.0])).to_filename(str(path))


def evaluate(tmp_path, pred, truth, spacing, *flags):
    write(tmp_path / "pred.nii.gz", pred, spacing)
    write(tmp_path / "truth.nii.gz", truth, spacing)
    p = run_edgeseg("evaluate", "--pred", tmp_path / "pred.nii.gz", "--truth", tmp_path / "truth.nii.gz",
                    "--label", "1", "--json", *flags)
    doc = json.loads(p.stdout)
    assert [c["case"] for c in doc["cases"]] == ["pred"]
    return doc["cases"][0]["labels"]["1"], doc


def autopet_fp_fn_ml(truth, pred, spacing):
    """lab-midas/autoPET val_script.py: false_pos_pix / false_neg_pix (cc3d, connectivity 18) x voxel_vol."""
    voxel_vol = float(np.prod(spacing)) / 1000

    def missed(a, other):
        cc = cc3d.connected_components(a, connectivity=18)
        total = 0
        for idx in range(1, cc.max() + 1):
            comp = np.isin(cc, idx)
            if (comp * other).sum() == 0:
                total += comp.sum()
        return total

    return missed(pred, truth) * voxel_vol, missed(truth, pred) * voxel_vol


def panoptica_counts(truth, pred, connectivity, threshold):
    from panoptica import InputType, NaiveThresholdMatching, Panoptica_Evaluator
    from panoptica.metrics import Metric

    ref, _ = ndimage.label(truth, structure(connectivity))
    prd, _ = ndimage.label(pred, structure(connectivity))
    ev = Panoptica_Evaluator(expected_input=InputType.UNMATCHED_INSTANCE,
                             instance_matcher=NaiveThresholdMatching(matching_metric=Metric.IOU,
                                                                     matching_threshold=threshold))
    r = ev.evaluate(prd.astype(np.int32), ref.astype(np.int32), verbose=False)["ungrouped"]
    return int(r.tp), int(r.fp), int(r.fn), r.rq


def close(got, want, what):
    if want is None or (isinstance(want, float) and not np.isfinite(want)):
        assert got is None, f"{what}: {got} where the judge has no value ({want})"
    else:
        assert got is not None and abs(got - want) <= TOL, f"{what}: {got} vs {want}"


def judge(m, truth, pred, spacing, connectivity=26, threshold=0.1):
    t, p = truth.astype(bool), pred.astype(bool)
    inter, nt, np_ = int((t & p).sum()), int(t.sum()), int(p.sum())
    vox_ml = float(np.prod(spacing)) / 1000
    close(m["dice"], 2 * inter / (nt + np_) if nt + np_ else None, "dice")
    close(m["jaccard"], inter / (nt + np_ - inter) if nt + np_ else None, "jaccard")
    close(m["volume_pred_ml"], np_ * vox_ml, "volume_pred_ml")
    close(m["volume_truth_ml"], nt * vox_ml, "volume_truth_ml")
    dists = sd.compute_surface_distances(t, p, list(spacing))
    hd = sd.compute_robust_hausdorff(dists, 95) if nt and np_ else None
    close(m["hd95_mm"], hd, "hd95_mm")
    if nt and np_:
        a, b = sd.compute_average_surface_distance(dists)
        close(m["assd_mm"], (a + b) / 2, "assd_mm")
    else:
        close(m["assd_mm"], None, "assd_mm")
    with np.errstate(invalid="ignore", divide="ignore"):
        nsd = sd.compute_surface_dice_at_tolerance(dists, 1.0) if nt or np_ else None
    close(m["surface_dice"], nsd, "surface_dice")
    fp_ml, fn_ml = autopet_fp_fn_ml(truth, pred, spacing)
    close(m["fp_volume_ml"], fp_ml, "fp_volume_ml")
    close(m["fn_volume_ml"], fn_ml, "fn_volume_ml")
    n_ref = ndimage.label(truth, structure(connectivity))[1]
    n_pred = ndimage.label(pred, structure(connectivity))[1]
    if n_ref or n_pred:
        tp, fp, fn, rq = panoptica_counts(truth, pred, connectivity, threshold)
        assert (m["tp"], m["fp"], m["fn"]) == (tp, fp, fn)
        close(m["lesion_dice"], rq, "lesion_dice")
    else:
        assert (m["tp"], m["fp"], m["fn"]) == (0, 0, 0)
        close(m["lesion_dice"], None, "lesion_dice")
    tp, fp, fn = m["tp"], m["fp"], m["fn"]
    close(m["sensitivity"], tp / (tp + fn) if tp + fn else None, "sensitivity")
    close(m["precision"], tp / (tp + fp) if tp + fp else None, "precision")


def cube(shape, lo, hi):
    a = np.zeros(shape, np.uint8)
    a[tuple(slice(l, h) for l, h in zip(lo, hi))] = 1
    return a


def test_touching_lesions_follow_the_connectivity(tmp_path):
    # Two true lesions that share only an edge: one lesion at 18/26-connectivity, two at 6.
    truth = cube((16, 16, 12), (2, 2, 2), (6, 6, 6)) | cube((16, 16, 12), (6, 6, 2), (10, 10, 6))
    pred = cube((16, 16, 12), (2, 2, 3), (6, 6, 7)) | cube((16, 16, 12), (6, 6, 2), (10, 10, 6))
    spacing = (1.0, 1.0, 2.0)
    m26, _ = evaluate(tmp_path, pred, truth, spacing, "--connectivity", "26")
    assert (m26["tp"], m26["fp"], m26["fn"]) == (1, 0, 0)
    judge(m26, truth, pred, spacing, 26)
    m6, _ = evaluate(tmp_path, pred, truth, spacing, "--connectivity", "6")
    assert (m6["tp"], m6["fp"], m6["fn"]) == (2, 0, 0)
    judge(m6, truth, pred, spacing, 6)


def test_empty_truth(tmp_path):
    truth = np.zeros((12, 10, 8), np.uint8)
    pred = cube(truth.shape, (2, 2, 2), (5, 4, 4))
    pred[9, 8, 6] = 1
    spacing = (2.0, 2.0, 3.0)
    m, _ = evaluate(tmp_path, pred, truth, spacing)
    assert m["dice"] == 0.0 and m["hd95_mm"] is None and m["assd_mm"] is None
    assert (m["tp"], m["fp"], m["fn"]) == (0, 2, 0)
    assert m["sensitivity"] is None and m["precision"] == 0.0 and m["lesion_dice"] == 0.0
    assert abs(m["fp_volume_ml"] - 13 * 0.012) < TOL and m["fn_volume_ml"] == 0.0
    judge(m, truth, pred, spacing)


def test_empty_prediction(tmp_path):
    truth = cube((12, 10, 8), (3, 3, 3), (6, 6, 6))
    pred = np.zeros_like(truth)
    spacing = (1.5, 1.5, 1.5)
    m, _ = evaluate(tmp_path, pred, truth, spacing)
    assert (m["tp"], m["fp"], m["fn"]) == (0, 0, 1)
    assert m["surface_dice"] == 0.0 and m["precision"] is None and m["sensitivity"] == 0.0
    assert abs(m["fn_volume_ml"] - 27 * 1.5 ** 3 / 1000) < TOL
    judge(m, truth, pred, spacing)


def test_both_empty_is_undefined_not_perfect(tmp_path):
    z = np.zeros((6, 6, 6), np.uint8)
    m, _ = evaluate(tmp_path, z, z, (1.0, 1.0, 1.0))
    for k in ("dice", "jaccard", "hd95_mm", "assd_mm", "surface_dice", "sensitivity", "precision", "f1",
              "lesion_dice"):
        assert m[k] is None, k
    assert (m["tp"], m["fp"], m["fn"]) == (0, 0, 0)


def test_one_voxel_lesions(tmp_path):
    truth = np.zeros((10, 10, 10), np.uint8)
    pred = np.zeros_like(truth)
    truth[2, 2, 2] = truth[7, 7, 7] = truth[2, 8, 5] = 1
    pred[2, 2, 2] = pred[7, 7, 8] = pred[5, 5, 5] = 1
    spacing = (1.0, 2.0, 0.5)
    m, _ = evaluate(tmp_path, pred, truth, spacing)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 2, 2)
    judge(m, truth, pred, spacing)
    # With the overlap threshold at 0 only overlapping pairs match; the neighbours stay apart.
    m0, _ = evaluate(tmp_path, pred, truth, spacing, "--overlap", "0")
    assert (m0["tp"], m0["fp"], m0["fn"]) == (1, 2, 2)


def test_anisotropic_spacing_shifted_sphere(tmp_path):
    shape = (40, 36, 16)
    zz = np.indices(shape).astype(float)
    spacing = (0.8, 1.3, 3.0)
    pos = [zz[a] * spacing[a] for a in range(3)]
    truth = ((pos[0] - 15) ** 2 + (pos[1] - 22) ** 2 + (pos[2] - 24) ** 2 <= 81).astype(np.uint8)
    pred = ((pos[0] - 17) ** 2 + (pos[1] - 21) ** 2 + (pos[2] - 25) ** 2 <= 64).astype(np.uint8)
    m, _ = evaluate(tmp_path, pred, truth, spacing, "--tolerance-mm", "1.0")
    assert (m["tp"], m["fp"], m["fn"]) == (1, 0, 0)
    assert m["hd95_mm"] > 0 and 0 < m["surface_dice"] < 1
    judge(m, truth, pred, spacing)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("connectivity", [6, 26])
def test_random_blobs(tmp_path, seed, connectivity):
    rng = np.random.default_rng(seed)
    shape = (36, 30, 20)
    idx = np.indices(shape)
    truth = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    for _ in range(8):
        c = rng.uniform(0, shape)
        r = rng.uniform(1, 4)
        blob = ((idx[0] - c[0]) ** 2 + (idx[1] - c[1]) ** 2 + (idx[2] - c[2]) ** 2) <= r * r
        truth |= blob
        if rng.random() < 0.75:  # most lesions found, shifted and resized
            d = rng.normal(0, 1, 3)
            r2 = r * rng.uniform(0.6, 1.3)
            pred |= ((idx[0] - c[0] - d[0]) ** 2 + (idx[1] - c[1] - d[1]) ** 2 + (idx[2] - c[2] - d[2]) ** 2) <= r2 * r2
    for _ in range(2):  # false positives
        c = rng.uniform(0, shape)
        pred |= ((idx[0] - c[0]) ** 2 + (idx[1] - c[1]) ** 2 + (idx[2] - c[2]) ** 2) <= 4
    spacing = (1.1, 0.9, 2.5)
    m, _ = evaluate(tmp_path, pred, truth, spacing, "--connectivity", str(connectivity), "--overlap", "0.2")
    judge(m, truth, pred, spacing, connectivity, 0.2)


def test_centroid_rule(tmp_path):
    # A ring whose centre of mass is the single true voxel it does not touch: matched by
    # centroid, not by overlap; a blob whose centroid is outside the true lesion it overlaps.
    truth = np.zeros((12, 12, 5), np.uint8)
    pred = np.zeros_like(truth)
    truth[3, 3, 2] = 1
    pred[2:5, 2:5, 2] = 1
    pred[3, 3, 2] = 0
    truth[8:11, 8:11, 1:4] = 1
    pred[10:12, 10:12, 1:4] = 1
    m, _ = evaluate(tmp_path, pred, truth, (1.0, 1.0, 1.0), "--centroid")
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 1)
    o, _ = evaluate(tmp_path, pred, truth, (1.0, 1.0, 1.0), "--overlap", "0.05")
    assert (o["tp"], o["fp"], o["fn"]) == (1, 1, 1)
    # The ring is matched by its centroid, the blob by its overlap.
    judge(o, truth, pred, (1.0, 1.0, 1.0), 26, 0.05)
