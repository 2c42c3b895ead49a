#!/usr/bin/env python3
"""Benchmark peer: read DICOM series into float32 volumes the obvious pydicom way.

Usage:
    python tests/peers/pydicom_read.py [--save OUT_DIR] SERIES_DIR [SERIES_DIR ...]

For each folder (its files, not sub-folders): pydicom.dcmread every file
(files that are not DICOM, or hold no pixel data, are skipped), take each
frame's position along the slice normal (ImageOrientationPatient x
ImagePositionPatient; for multi-frame objects from the Shared / Per-Frame
Functional Groups), sort by it, apply pixel_array * RescaleSlope +
RescaleIntercept per frame and stack into one float32 array (z, rows, cols).

Prints one JSON line per folder:
    {"dir": ..., "shape": [z, rows, cols], "seconds": ..., "checksum": sum as float}
With --save, each volume is also written to OUT_DIR/<n>.f32 (n: the folder's
position in the argument list; float32 little endian, z then rows then
columns, columns fastest) and the line names it ("saved"). At the end:
    {"peak_rss_mb": ru_maxrss / 1024}
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError


def _normal(iop) -> np.ndarray:
    r = np.array([float(v) for v in iop[:3]])
    c = np.array([float(v) for v in iop[3:6]])
    n = np.cross(r, c)
    return n / np.linalg.norm(n)


def _rescale(*sources) -> tuple[float, float]:
    """Slope/intercept from the first source that has them (default 1, 0)."""
    for s in sources:
        if s is not None and "RescaleSlope" in s:
            return float(s.RescaleSlope), float(s.get("RescaleIntercept", 0) or 0)
    return 1.0, 0.0


def _first(group, keyword):
    """Item 0 of sequence `keyword` in a functional-group item, or None."""
    if group is None or keyword not in group or not group[keyword].value:
        return None
    return group[keyword].value[0]


def _frames(ds):
    """Yield (iop, ipp, 2-D stored pixel array, slope, intercept) for each frame of ds."""
    arr = ds.pixel_array
    if "PerFrameFunctionalGroupsSequence" in ds:
        if arr.ndim == 2:
            arr = arr[None]
        shared = (ds.SharedFunctionalGroupsSequence[0]
                  if "SharedFunctionalGroupsSequence" in ds else None)
        for k, pf in enumerate(ds.PerFrameFunctionalGroupsSequence):
            ori = _first(pf, "PlaneOrientationSequence") or _first(shared, "PlaneOrientationSequence")
            pos = _first(pf, "PlanePositionSequence") or _first(shared, "PlanePositionSequence")
            pvt = (_first(pf, "PixelValueTransformationSequence")
                   or _first(shared, "PixelValueTransformationSequence"))
            slope, icpt = _rescale(pvt, ds)
            yield ori.ImageOrientationPatient, pos.ImagePositionPatient, arr[k], slope, icpt
    else:
        slope, icpt = _rescale(ds)
        if arr.ndim == 3:  # multi-frame without functional groups: one position only
            raise ValueError("multi-frame object without PerFrameFunctionalGroupsSequence")
        yield ds.ImageOrientationPatient, ds.ImagePositionPatient, arr, slope, icpt


def read_series(folder: str) -> np.ndarray:
    normal = None
    slices: list[tuple[float, np.ndarray]] = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, EOFError):
            continue
        if "PixelData" not in ds:
            continue
        for iop, ipp, stored, slope, icpt in _frames(ds):
            if normal is None:
                normal = _normal(iop)
            z = float(np.dot([float(v) for v in ipp], normal))
            slices.append((z, (stored * slope + icpt).astype(np.float32)))
    if not slices:
        raise ValueError(f"{folder}: no DICOM images")
    slices.sort(key=lambda t: t[0])
    return np.stack([s for _, s in slices])


def main(argv: list[str]) -> int:
    save = None
    if argv[:1] == ["--save"] and len(argv) >= 2:
        save, argv = argv[1], argv[2:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    status = 0
    for n, folder in enumerate(argv):
        t0 = time.perf_counter()
        try:
            vol = read_series(folder)
        except Exception as e:  # report and go on with the next folder
            print(json.dumps({"dir": folder, "error": f"{type(e).__name__}: {e}"}), flush=True)
            status = 1
            continue
        seconds = time.perf_counter() - t0
        line = {
            "dir": folder,
            "shape": list(vol.shape),
            "seconds": round(seconds, 6),
            "checksum": float(vol.sum(dtype=np.float64)),
        }
        if save is not None:
            out = os.path.join(save, f"{n}.f32")
            np.ascontiguousarray(vol, dtype="<f4").tofile(out)
            line["saved"] = out
        print(json.dumps(line), flush=True)
        del vol
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": round(peak, 3)}), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
