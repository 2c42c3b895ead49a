#!/usr/bin/env python3
"""Seed corpus for the `series` fuzz target (written, never committed).

Usage: python fuzz/make_seeds.py OUT_DIR

Takes a tiny phantom PET/CT (tests/fixtures/phantom.py), crops three slices of
each series to 8×8 pixels and writes each seed as one fuzz input: one to three
Part-10 files joined by the target's FILE_SEPARATOR. Transfer syntaxes: explicit
and implicit little endian, deflated, RLE, JPEG-LS, JPEG 2000 (pydicom's
encoders), so the fuzzer starts inside every decoder the ingest reaches.
"""
from __future__ import annotations

import copy
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                         JPEG2000Lossless, JPEGLSLossless, RLELossless)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "fixtures"))
import phantom  # noqa: E402

SEP = b"\n--edgeseg-next-file--\n"


def crop(ds: pydicom.Dataset, n: int = 8) -> pydicom.Dataset:
    d = copy.deepcopy(ds)
    a = d.pixel_array[: n, : n].copy()
    d.Rows, d.Columns = a.shape
    d.PixelData = a.tobytes()
    return d


def encode(ds: pydicom.Dataset, ts: str) -> bytes:
    d = copy.deepcopy(ds)
    if pydicom.uid.UID(ts).is_compressed:
        d.compress(ts, generate_instance_uid=False)
    else:
        d.file_meta.TransferSyntaxUID = ts
    buf = io.BytesIO()
    d.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        phantom.generate(tmp, size="tiny", vendor="siemens", nuclide="ga68", seed=1)
        files = sorted(p for p in Path(tmp).rglob("*") if p.is_file() and p.suffix in ("", ".dcm"))
        by_mod: dict[str, list[pydicom.Dataset]] = {}
        for p in files:
            try:
                ds = pydicom.dcmread(p)
            except Exception:  # noqa: BLE001 - truth files etc.
                continue
            if "PixelData" in ds:
                by_mod.setdefault(ds.Modality, []).append(ds)
        n = 0
        for mod, series in sorted(by_mod.items()):
            series.sort(key=lambda d: float(d.ImagePositionPatient[2]))
            three = [crop(d) for d in series[:3]]
            for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                       RLELossless, JPEGLSLossless, JPEG2000Lossless):
                try:
                    blobs = [encode(d, ts) for d in three]
                except Exception as e:  # noqa: BLE001 - an encoder missing: skip that seed
                    print(f"skip {mod} {ts}: {e}", file=sys.stderr)
                    continue
                (out / f"{mod}-{ts}-1").write_bytes(blobs[0])
                (out / f"{mod}-{ts}-3").write_bytes(SEP.join(blobs))
                n += 2
    print(f"wrote {n} seeds to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
