"""`edgeseg components` (the CPU twins) against cc3d and numpy.

Done-when of the post-processing issue: the CPU twins agree exactly with cc3d
(PyPI connected-components-3d) on partitions for 6/18/26-connectivity, and
with numpy for the statistics, on random and structured volumes."""
import json

import cc3d
import nibabel as nib
import numpy as np
import pytest

from conftest import run_edgeseg


def blobs(shape, n, rng, rmax=6):
    m = np.zeros(shape, np.uint8)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    for _ in range(n):
        c = [rng.integers(0, s) for s in shape]
        r = rng.uniform(1, rmax)
        m[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r] = 1
    return m


def volumes():
    rng = np.random.default_rng()  # fresh inputs every run
    out = []
    for shape in [(1, 1, 1), (7, 13, 5), (33, 17, 9), (40, 48, 36)]:
        for density in (0.05, 0.3, 0.6):
            out.append((f"noise{density}-{shape}", (rng.random(shape) < density).astype(np.uint8)))
    out.append(("blobs", blobs((48, 40, 32), 25, rng)))
    out.append(("empty", np.zeros((9, 8, 7), np.uint8)))
    out.append(("full", np.ones((9, 8, 7), np.uint8)))
    corners = np.zeros((6, 5, 4), np.uint8)
    for idx in np.ndindex(2, 2, 2):
        corners[tuple(i * (s - 1) for i, s in zip(idx, corners.shape))] = 1
    out.append(("corners", corners))
    return out


def write(arr, path, spacing=(2.0, 2.0, 3.0), dtype=np.uint8):
    aff = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    aff[:3, 3] = [100.0, 120.0, -300.0]
    nib.save(nib.Nifti1Image(arr.astype(dtype), aff), str(path))
    return aff


def same_partition(a, b):
    """True when two label maps split the foreground the same way."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


@pytest.mark.parametrize("conn", [6, 18, 26])
def test_labels_equal_cc3d(tmp_path, conn):
    for name, m in volumes():
        src = tmp_path / f"{name}.nii.gz"
        out = tmp_path / f"{name}-{conn}-labels.nii.gz"
        write(m, src)
        run_edgeseg("components", src, "--out", out, "--connectivity", conn)
        ours = np.asarray(nib.load(str(out)).dataobj).astype(np.int64)
        theirs = cc3d.connected_components(np.asfortranarray(m), connectivity=conn).astype(np.int64)
        assert ours.max() == theirs.max(), f"{name} {conn}: {ours.max()} vs {theirs.max()} components"
        assert same_partition(ours, theirs), f"{name} {conn}: partitions differ"
        # Same canonical numbering: by each component's first voxel, x fastest.
        assert np.array_equal(ours, theirs), f"{name} {conn}: numbering differs from cc3d"


def test_statistics_equal_numpy(tmp_path):
    rng = np.random.default_rng()
    m = blobs((40, 36, 30), 20, rng)
    img = (rng.gamma(2.0, 3.0, m.shape) * (1 + 5 * m)).astype(np.float32)
    write(m, tmp_path / "m.nii.gz")
    write(img, tmp_path / "img.nii.gz", dtype=np.float32)
    p = run_edgeseg("components", tmp_path / "m.nii.gz", "--out", tmp_path / "l.nii.gz", "--connectivity", 26,
                    "--stats", tmp_path / "img.nii.gz", "--json")
    rep = json.loads(p.stdout)
    ref = cc3d.connected_components(np.asfortranarray(m), connectivity=26)
    assert rep["count"] == ref.max()
    for c in rep["components"]:
        sel = ref == c["label"]
        v = img[sel].astype(np.float64)
        assert c["voxels"] == sel.sum()
        assert c["intensity"]["sum"] == pytest.approx(v.sum(), rel=1e-6)
        assert c["intensity"]["mean"] == pytest.approx(v.mean(), rel=1e-6)
        assert c["intensity"]["std"] == pytest.approx(v.std(), rel=1e-4, abs=1e-5)
        assert c["intensity"]["max"] == pytest.approx(float(v.max()), rel=0, abs=0)
        idx = np.argwhere(sel)
        assert c["bbox_min"] == idx.min(axis=0).tolist()
        assert c["bbox_max"] == idx.max(axis=0).tolist()
        assert c["centroid_ijk"] == pytest.approx(idx.mean(axis=0).tolist(), abs=1e-9)
        assert c["volume_ml"] == pytest.approx(sel.sum() * 2 * 2 * 3 / 1000)
        # The first voxel (x fastest) holding the maximum.
        mi, mj, mk = c["intensity"]["max_ijk"]
        assert img[mi, mj, mk] == v.max()


def test_min_volume_removes_small_components(tmp_path):
    rng = np.random.default_rng()
    m = (rng.random((30, 30, 20)) < 0.25).astype(np.uint8)
    write(m, tmp_path / "m.nii.gz")
    # 0.1 ml at 2×2×3 mm voxels (0.012 ml) is 9 voxels (seed 003: "< 0.1 mL (< 9 voxels)").
    p = run_edgeseg("components", tmp_path / "m.nii.gz", "--out", tmp_path / "l.nii.gz", "--connectivity", 6,
                    "--min-ml", 0.1, "--json")
    rep = json.loads(p.stdout)
    ref = cc3d.connected_components(np.asfortranarray(m), connectivity=6)
    counts = np.bincount(ref.ravel(order="F"))[1:]
    keep = np.flatnonzero(counts >= 9) + 1
    assert rep["count"] == len(keep)
    ours = np.asarray(nib.load(str(tmp_path / "l.nii.gz")).dataobj).astype(np.int64)
    expect = np.zeros_like(ref, dtype=np.int64)
    for new, old in enumerate(keep, start=1):
        expect[ref == old] = new
    assert np.array_equal(ours, expect)
    assert all(c["voxels"] >= 9 for c in rep["components"])
