#!/usr/bin/env python3
"""Judge edgeseg's NIfTI of one Siemens mosaic file against dcm2niix and
nibabel (pydicom's pixels, de-mosaiced by nibabel's MosaicWrapper).

Usage:
    python tests/peers/mosaic_judge.py --dicom MOSAIC.dcm --nifti OURS.nii.gz

Checks, each against both peers:
  * dims: the same three lengths (in whatever axis order the peer stores them);
  * grid: the RAS positions of the corners of the voxel-centre box within
    1e-3 mm (the whole affine, slice direction and spacing included);
  * values: equal voxel for voxel once both images are brought to nibabel's
    closest canonical orientation (the rescaled values, as float32).

dcm2niix gets the file decompressed by pydicom when it is compressed (Debian's
build lacks JPEG-LS). Prints one JSON line with the largest corner difference
per peer; exit status 0 when everything agrees, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

TOL_MM = 1e-3


def corners(shape, affine: np.ndarray) -> np.ndarray:
    idx = [(0, n - 1) for n in shape[:3]]
    pts = np.array([[i, j, k, 1.0] for i in idx[0] for j in idx[1] for k in idx[2]])
    world = (affine @ pts.T).T[:, :3]
    world = np.unique(np.round(world, 6), axis=0)
    return world[np.lexsort(world.T[::-1])]


def canonical(data, affine):
    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data, dtype=np.float64), affine))
    return np.asarray(img.dataobj, dtype=np.float64)


def dcm2niix(dicom: Path, work: Path):
    src = work / "in"
    out = work / "out"
    src.mkdir()
    out.mkdir()
    ds = pydicom.dcmread(dicom)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    ds.save_as(src / "1.dcm", enforce_file_format=True)
    p = subprocess.run(["dcm2niix", "-z", "n", "-b", "n", "-f", "peer", "-o", str(out), str(src)],
                       capture_output=True, text=True)
    niis = sorted(out.glob("*.nii"))
    if len(niis) != 1:
        raise SystemExit(f"mosaic_judge: dcm2niix wrote {len(niis)} volumes (exit {p.returncode}): {p.stdout[-300:]}")
    img = nib.load(str(niis[0]))
    return np.asarray(img.dataobj, dtype=np.float64), img.affine


def nibabel_mosaic(dicom: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nibabel.nicom import dicomwrappers

        w = dicomwrappers.wrapper_from_data(pydicom.dcmread(dicom))
        if type(w).__name__ != "MosaicWrapper":
            raise SystemExit(f"mosaic_judge: nibabel does not see a mosaic in {dicom}")
        # The wrapper's affine is DICOM LPS; NIfTI is RAS.
        return np.asarray(w.get_data(), dtype=np.float64), np.diag([-1.0, -1.0, 1.0, 1.0]) @ w.affine


def judge(name: str, ours, ours_aff, theirs, theirs_aff, report: dict) -> list[str]:
    problems = []
    if sorted(ours.shape[:3]) != sorted(theirs.shape[:3]):
        return [f"{name} has dims {theirs.shape[:3]}, ours {ours.shape[:3]}"]
    a, b = corners(ours.shape, ours_aff), corners(theirs.shape, theirs_aff)
    if a.shape != b.shape:
        return [f"{name}: grid corners differ"]
    d = float(np.abs(a - b).max())
    report[f"{name}_grid_mm"] = d
    if d > TOL_MM:
        problems.append(f"{name}: grid differs by {d:.3g} mm")
    ca, cb = canonical(ours, ours_aff), canonical(theirs, theirs_aff)
    if ca.shape != cb.shape or not np.array_equal(ca.astype(np.float32), cb.astype(np.float32)):
        diff = np.abs(ca - cb).max() if ca.shape == cb.shape else "shape"
        problems.append(f"{name}: values differ (max {diff})")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dicom", type=Path, required=True)
    ap.add_argument("--nifti", type=Path, required=True)
    args = ap.parse_args()
    img = nib.load(str(args.nifti))
    ours = np.asarray(img.dataobj, dtype=np.float64)
    report: dict = {"dims": list(ours.shape)}
    problems = []
    with tempfile.TemporaryDirectory(prefix="mosaic-judge-") as t:
        d_data, d_aff = dcm2niix(args.dicom, Path(t))
    problems += judge("dcm2niix", ours, img.affine, d_data, d_aff, report)
    n_data, n_aff = nibabel_mosaic(args.dicom)
    problems += judge("nibabel", ours, img.affine, n_data, n_aff, report)
    report["problems"] = problems
    print(json.dumps(report))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
