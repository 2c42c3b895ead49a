#!/usr/bin/env python3
"""Bad-input corpora for edgeseg: what a scanner or a person may drop into the
export folder (test fixtures; generated, never committed). The one writer of
bad inputs, in one manifest format.

Usage:
    python tests/bad-inputs/make.py --out DIR [--template SERIES_DIR] [--tiny-files N]
    python tests/bad-inputs/make.py beside --template SERIES_DIR --out DIR [--outside-target PATH]
    python tests/bad-inputs/make.py slow-write SRC DEST [--seconds S] [--chunks N]

The first form writes one folder per kind, DIR/<kind>/, holding only that
kind's files (one "drop" into the export folder). The second ("beside") writes
13 kinds each next to a full copy of the good series SERIES_DIR, which must
still load whole. Both write DIR/manifest.json:

    {"template_series_uid": "...",
     "template_files": n,                    # files of the template series
     "beside_template": false,               # true: each folder also holds the whole template series
     "kinds": [{"kind": "...", "folder": "...", "outcome": "quarantine" | "processed" | "ignored",
                "reason_all": ["lowercase substring", ...],  # each must occur in the error naming it
                "reason_any": ["lowercase substring", ...],  # if non-empty, one must occur
                "names": ["file name" | "series-uid:UID"],    # what the error must name
                "daemon_only": false,                          # true: needs a running daemon
                "study_uids": ["..."],                         # of its readable files
                "note": "..."}]}

    quarantine  the reader refuses the file or series with an error naming it
                and the reasons; nothing else in the folder is affected.
    processed   the series loads (possibly with a warning, e.g. no SUV, or a
                dropped duplicate copy named with the reasons).
    ignored     passed over on purpose (not an image, a loop), no error needed.

SERIES_DIR is one good single-frame series; without it (first form) a tiny
phantom is written by tests/fixtures/phantom.py (seed 7) and its CT is used.
In the first form each kind's series is in a study of its own; in the second,
bad files that would otherwise look like more slices of the good series get
their own SeriesInstanceUID (and fresh SOP Instance UIDs), so the good series
stays intact. Every file is written with pydicom / numpy / zlib / os only,
never by edgeseg.

The third form copies SRC to DEST slowly (N chunks over S seconds, fsync after
each), for the daemon test of a file still being written when the settle time
passes.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import os
import shutil
import struct
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.uid import (UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         JPEGLSLossless, generate_uid)

warnings.filterwarnings("ignore", module="pydicom")  # the corpus is invalid on purpose

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "fixtures"))



def log(*a):
    print(*a, file=sys.stderr, flush=True)


MPEG2_MPML = "1.2.840.10008.1.2.4.100"


# --------------------------------------------------------------------------
# template

def load_template(series_dir: Path) -> list[tuple[Path, Dataset]]:
    out = []
    for root, _dirs, files in os.walk(series_dir):
        for f in sorted(files):
            p = Path(root) / f
            if p.is_symlink() or not p.is_file():
                continue
            try:
                ds = pydicom.dcmread(p)
            except (InvalidDicomError, EOFError, OSError):
                continue
            if "PixelData" in ds and "ImagePositionPatient" in ds:
                out.append((p, ds))
    if not out:
        raise SystemExit(f"no DICOM images under {series_dir}")
    uids = {ds.SeriesInstanceUID for _, ds in out}
    if len(uids) != 1:
        raise SystemExit(f"{series_dir} holds {len(uids)} series, expected one")
    iop = out[0][1].ImageOrientationPatient
    n = np.cross([float(v) for v in iop[:3]], [float(v) for v in iop[3:]])
    out.sort(key=lambda t: float(np.dot([float(v) for v in t[1].ImagePositionPatient], n)))
    return out


class Template:
    def __init__(self, series_dir: Path):
        self.files = load_template(series_dir)
        self.first = self.files[0][1]
        self.series_uid = str(self.first.SeriesInstanceUID)
        iop = [float(v) for v in self.first.ImageOrientationPatient]
        self.row = np.array(iop[:3])
        self.col = np.array(iop[3:])
        self.normal = np.cross(self.row, self.col)
        self.normal /= np.linalg.norm(self.normal)
        self.origin = np.array([float(v) for v in self.first.ImagePositionPatient])
        if len(self.files) > 1:
            last = np.array([float(v) for v in self.files[-1][1].ImagePositionPatient])
            self.spacing = float(np.dot(last - self.origin, self.normal)) / (len(self.files) - 1)
        else:
            self.spacing = float(self.first.get("SliceThickness", 1.0) or 1.0)
        if self.spacing <= 0:
            self.spacing = 1.0
        self.names = []
        seen = set()
        for i, (p, _) in enumerate(self.files):
            name = p.name
            if name in seen:
                name = f"{p.stem}_{i:04d}{p.suffix}"
            seen.add(name)
            self.names.append(name)

    def copy_into(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for (p, _), name in zip(self.files, self.names):
            shutil.copyfile(p, folder / name)

    def derived(self, index: int = 0, series_uid: str | None = None) -> Dataset:
        """A copy of template slice `index` with a fresh SOP Instance UID, native pixels."""
        ds = copy.deepcopy(self.files[index][1])
        if not hasattr(ds, "file_meta") or ds.file_meta is None:
            ds.file_meta = FileMetaDataset()
        if "TransferSyntaxUID" not in ds.file_meta:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        if UID(ds.file_meta.TransferSyntaxUID).is_compressed:
            ds.decompress(generate_instance_uid=False)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPInstanceUID = generate_uid()
        if series_uid is not None:
            ds.SeriesInstanceUID = series_uid
        return ds

    def position(self, k: float) -> list[float]:
        return [float(f"{v:.6f}") for v in self.origin + k * self.spacing * self.normal]


def save(ds: Dataset, path: Path) -> None:
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def new_series(ds: Dataset, uid: str, number: int, description: str) -> None:
    ds.SeriesInstanceUID = uid
    ds.SeriesNumber = number
    ds.SeriesDescription = description


# --------------------------------------------------------------------------
# the beside kinds: each writes its bad thing into a folder that already holds
# the whole template series and returns its fields (bad_path: a file name, a
# list of names, or "." with scope "series"; expect: every keyword must occur
# in the error; expect_any: one of them must), turned into the manifest's by
# `beside`.


def k_zero_byte(t: Template, d: Path) -> dict:
    (d / "empty.dcm").write_bytes(b"")
    return {"bad_path": "empty.dcm", "scope": "file", "expect": ["empty"]}


def k_truncated(t: Template, d: Path) -> dict:
    uid = generate_uid()
    ds = t.derived(len(t.files) // 2, uid)
    new_series(ds, uid, 901, "truncated file (own series)")
    full = d / ".truncated.full"
    save(ds, full)
    data = full.read_bytes()
    full.unlink()
    (d / "truncated.dcm").write_bytes(data[: int(len(data) * 0.6)])
    return {"bad_path": "truncated.dcm", "scope": "file", "expect": [],
            "expect_any": ["truncated", "unexpected end"], "bad_series_uid": uid,
            "note": f"first 60% ({int(len(data) * 0.6)} of {len(data)} bytes) of a valid file"}


def k_non_dicom(t: Template, d: Path) -> dict:
    (d / "notes.dcm").write_text(
        "Scanner notes\nThis is a plain text file with a .dcm extension.\n" * 20)
    rng = np.random.default_rng(12345)
    blob = bytearray(rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    blob[128:132] = b"DICX"  # make sure it is not accidentally a Part 10 file
    (d / "random.bin").write_bytes(bytes(blob))
    return {"bad_path": ["notes.dcm", "random.bin"], "scope": "file", "expect": ["not a dicom"]}


def k_no_pixel_data(t: Template, d: Path) -> dict:
    uid = generate_uid()
    ds = t.derived(0, uid)
    new_series(ds, uid, 902, "no pixel data (own series)")
    del ds.PixelData
    save(ds, d / "nopixel.dcm")
    return {"bad_path": "nopixel.dcm", "scope": "file", "expect": ["no pixel data"],
            "bad_series_uid": uid}


def k_missing_attr(keyword: str, number: int):
    def make(t: Template, d: Path) -> dict:
        uid = generate_uid()
        ds = t.derived(0, uid)
        new_series(ds, uid, number, f"missing {keyword} (own series)")
        delattr(ds, keyword)
        name = f"no-{keyword}.dcm"
        save(ds, d / name)
        return {"bad_path": name, "scope": "file", "expect": [keyword.lower()],
                "bad_series_uid": uid}
    return make


def k_mixed_orientation(t: Template, d: Path) -> dict:
    uid = generate_uid()
    # the odd slice is tilted by 20 degrees about the row direction
    ang = np.deg2rad(20.0)
    tilted_col = np.cos(ang) * t.col + np.sin(ang) * t.normal
    for k in range(5):
        ds = t.derived(min(k, len(t.files) - 1), uid)
        new_series(ds, uid, 905, "mixed orientation (own series)")
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = t.position(k)
        if k == 2:
            ds.ImageOrientationPatient = [float(f"{v:.6f}") for v in list(t.row) + list(tilted_col)]
        save(ds, d / f"mixed-orientation-{k}.dcm")
    return {"bad_path": ".", "scope": "series", "expect": ["orientation"], "bad_series_uid": uid,
            "note": "5 slices; mixed-orientation-2.dcm is tilted 20 degrees"}


def k_nonuniform_spacing(t: Template, d: Path) -> dict:
    uid = generate_uid()
    steps = [0, 1, 2, 3, 5, 6, 7, 8]  # one gap of twice the spacing (3 -> 5)
    for i, k in enumerate(steps):
        ds = t.derived(min(i, len(t.files) - 1), uid)
        new_series(ds, uid, 906, "non-uniform spacing (own series)")
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = t.position(k)
        if "SliceLocation" in ds:
            ds.SliceLocation = float(f"{float(np.dot(t.position(k), t.normal)):.6f}")
        save(ds, d / f"spacing-{i}.dcm")
    return {"bad_path": ".", "scope": "series", "expect": ["spacing"], "bad_series_uid": uid,
            "note": f"8 slices, spacing {t.spacing:g} mm with one gap of {2 * t.spacing:g} mm"}


def k_frame_count_mismatch(t: Template, d: Path) -> dict:
    uid = generate_uid()
    ds = t.derived(0, uid)
    new_series(ds, uid, 907, "NumberOfFrames disagrees with Pixel Data (own series)")
    ds.NumberOfFrames = 3  # Pixel Data holds exactly one frame
    save(ds, d / "frames.dcm")
    return {"bad_path": "frames.dcm", "scope": "file", "expect": ["frame"], "bad_series_uid": uid,
            "note": "NumberOfFrames 3, Pixel Data holds 1 frame"}


def k_unsupported_ts(t: Template, d: Path) -> dict:
    uid = generate_uid()
    ds = t.derived(0, uid)
    new_series(ds, uid, 908, "MPEG2 transfer syntax (own series)")
    rng = np.random.default_rng(7)
    # an MPEG-2 sequence header start code followed by junk, as one fragment
    frame = b"\x00\x00\x01\xb3" + rng.integers(0, 256, size=1020, dtype=np.uint8).tobytes()
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = MPEG2_MPML
    save(ds, d / "mpeg2.dcm")
    return {"bad_path": "mpeg2.dcm", "scope": "file", "expect": ["transfer syntax"],
            "bad_series_uid": uid, "transfer_syntax_uid": MPEG2_MPML}


def k_symlink_outside(outside: Path, relative: bool):
    def make(t: Template, d: Path) -> dict:
        link = d / "escape.dcm"
        # the default target sits beside OUT_DIR: a relative "../../" link (survives
        # moving the tree as a whole); a target given by the user: absolute link
        target = os.path.relpath(outside.resolve(), d.resolve()) if relative else str(outside.resolve())
        os.symlink(target, link)
        return {"bad_path": "escape.dcm", "scope": "file", "expect": ["symlink"],
                "link_target": target, "outside_target": str(outside.resolve())}
    return make


def k_duplicate_position(t: Template, d: Path) -> dict:
    uid = generate_uid()
    # 4 files, positions 0, 1, 2, 2: the last two collide, pixel data differs
    for i, k in enumerate([0, 1, 2, 2]):
        ds = t.derived(min(i, len(t.files) - 1), uid)
        new_series(ds, uid, 909, "duplicate position (own series)")
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = t.position(k)
        if "SliceLocation" in ds:
            ds.SliceLocation = float(f"{float(np.dot(t.position(k), t.normal)):.6f}")
        if i == 3:
            a = ds.pixel_array.copy()
            a[: a.shape[0] // 2] = a[: a.shape[0] // 2][::-1]
            ds.PixelData = np.ascontiguousarray(a).tobytes()
        save(ds, d / f"dup-position-{i}.dcm")
    return {"bad_path": ".", "scope": "series", "expect": ["duplicate", "position"],
            "bad_series_uid": uid,
            "note": "4 slices; dup-position-2.dcm and dup-position-3.dcm share a position "
                    "with different SOP Instance UIDs and pixels"}


def k_duplicate_sop(t: Template, d: Path) -> dict:
    src = d / t.names[len(t.names) // 2]
    dup = "duplicate-copy.dcm"
    shutil.copyfile(src, d / dup)
    return {"bad_path": dup, "scope": "file", "expect": ["duplicate"], "outcome": "processed",
            "duplicate_of": src.name,
            "note": "byte-identical copy (same SOP Instance UID); the series loads with one copy kept"}


# --------------------------------------------------------------------------
# raw helpers


def to_bytes(ds: Dataset) -> bytes:
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def explicit_header(group: int, element: int, vr: bytes, length: int) -> bytes:
    """An explicit VR little-endian element header with a 4-byte length."""
    return struct.pack("<HH", group, element) + vr + b"\0\0" + struct.pack("<I", length)


def set_length_of(data: bytes, group: int, element: int, vr: bytes, new_length: int) -> bytes:
    """Rewrites the declared length of the first (group, element) with a 4-byte length field."""
    head = struct.pack("<HH", group, element) + vr + b"\0\0"
    at = data.rfind(head) if (group, element) == (0x7FE0, 0x0010) else data.find(head)
    if at < 0:
        raise SystemExit(f"({group:04X},{element:04X}) {vr!r} not found")
    return data[: at + 8] + struct.pack("<I", new_length) + data[at + 12:]


def one(t: Template, uid: str | None = None, description: str = "bad input") -> Dataset:
    """A single-slice series of its own, native pixels."""
    uid = uid or generate_uid()
    ds = t.derived(len(t.files) // 2, uid)
    new_series(ds, uid, 990, description)
    return ds


class KindTemplate(Template):
    """The template, with each derived series in a study of its own (a UID
    made from the series UID), so a daemon sees one study per kind."""

    def derived(self, index: int = 0, series_uid: str | None = None) -> Dataset:
        ds = super().derived(index, series_uid)
        if series_uid is not None:
            digits = int(hashlib.sha256(series_uid.encode()).hexdigest()[:30], 16)
            ds.StudyInstanceUID = f"2.25.{digits}"
        return ds


def study_uids(folder: Path) -> list[str]:
    """StudyInstanceUIDs of the readable DICOM files under a folder."""
    found = set()
    for root, _dirs, files in os.walk(folder):
        for f in files:
            p = Path(root) / f
            if p.is_symlink():
                continue
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
                found.add(str(ds.StudyInstanceUID))
            except Exception:  # noqa: BLE001 - the corpus is broken on purpose
                continue
    return sorted(found)


class Corpus:
    def __init__(self, t: KindTemplate, out: Path):
        self.t = t
        self.out = out
        self.kinds: list[dict] = []

    def add(self, kind: str, outcome: str, reason_any: list[str], names: list[str], note: str,
            daemon_only: bool = False) -> Path:
        d = self.out / kind
        if d.is_symlink() or d.is_file():
            d.unlink()
        elif d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        self.kinds.append({"kind": kind, "folder": kind, "outcome": outcome, "reason_all": [],
                           "reason_any": reason_any, "names": names, "daemon_only": daemon_only, "note": note})
        return d

    def series(self, kind: str, outcome: str, reason_any: list[str], slices: list[Dataset], note: str,
               name: str = "s", per_file: bool = False) -> Path:
        """A series in files NAME000.dcm ...; the error names the series, or
        (per_file: the fault is in every file's own header) its first file."""
        uid = str(slices[0].SeriesInstanceUID)
        names = [f"{name}000.dcm"] if per_file else [f"series-uid:{uid}"]
        d = self.add(kind, outcome, reason_any, names, note)
        for i, ds in enumerate(slices):
            save(ds, d / f"{name}{i:03d}.dcm")
        return d


def stack(t: Template, n: int, description: str, uid: str | None = None) -> list[Dataset]:
    uid = uid or generate_uid()
    out = []
    for k in range(n):
        ds = t.derived(min(k, len(t.files) - 1), uid)
        new_series(ds, uid, 991, description)
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = t.position(k)
        out.append(ds)
    return out


# --------------------------------------------------------------------------
# the kinds


def build(c: Corpus, tiny_files: int) -> None:
    t = c.t
    good = to_bytes(one(t, description="template slice"))
    n = len(good)

    # -- empty, truncated, not DICOM
    d = c.add("zero-byte", "quarantine", ["empty"], ["empty.dcm"], "0-byte file")
    (d / "empty.dcm").write_bytes(b"")
    for label, cut in [("64", 64), ("131", 131), ("200", 200), ("60pct", int(n * 0.6)), ("last-10", n - 10)]:
        name = f"truncated-{label}.dcm"
        d = c.add(f"truncated-{label}", "quarantine",
                  ["truncated", "preamble", "not a dicom", "unexpected end", "end of file", "pixel data holds",
                   "could not read", "failed to read"],
                  [name], f"first {cut} of {n} bytes of a valid file")
        (d / name).write_bytes(good[:cut])
    rng = np.random.default_rng(20261123)
    d = c.add("random-bytes", "quarantine", ["not a dicom", "no \"dicm\""], ["random.dcm"], "4 KiB of random bytes")
    blob = bytearray(rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    blob[128:132] = b"DICX"
    (d / "random.dcm").write_bytes(bytes(blob))
    d = c.add("random-after-magic", "quarantine", ["not a dicom", "truncated", "could not", "invalid", "meta",
                                                     "failed"],
              ["magic.dcm"], "128 zero bytes, DICM, then 4 KiB of random bytes")
    (d / "magic.dcm").write_bytes(b"\0" * 128 + b"DICM" + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())

    # -- declared lengths
    ds = one(t, description="4 GB private element")
    ds.add_new(0x00091010, "OB", b"\xab" * 8)
    ds.add_new(0x00090010, "LO", "EDGESEG BAD")
    data = set_length_of(to_bytes(ds), 0x0009, 0x1010, b"OB", 0xFFFFFFF0)
    d = c.add("declared-4gb-element", "quarantine",
              ["declares", "truncated", "unexpected end", "end of file", "length", "could not read", "failed to read",
               "too large", "exceeds"],
              ["huge-element.dcm"], "a private OB element declares 0xFFFFFFF0 bytes in a ~2 KiB file")
    (d / "huge-element.dcm").write_bytes(data)
    ds = one(t, description="4 GB pixel data")
    data = set_length_of(to_bytes(ds), 0x7FE0, 0x0010, b"OW", 0xFFFFFFF0)
    d = c.add("declared-4gb-pixel-data", "quarantine",
              ["declares", "truncated", "unexpected end", "end of file", "length", "pixel data", "could not read",
               "failed to read", "too large", "exceeds"],
              ["huge-pixels.dcm"], "PixelData declares 0xFFFFFFF0 bytes in a small file")
    (d / "huge-pixels.dcm").write_bytes(data)

    ds = one(t, description="short pixel data")
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    d = c.add("pixel-data-short", "quarantine", ["pixel data holds"], ["short.dcm"],
              "PixelData holds half of rows x columns samples")
    save(ds, d / "short.dcm")
    ds = one(t, description="long pixel data")
    ds.PixelData = ds.PixelData * 3
    d = c.add("pixel-data-long", "quarantine", ["pixel data holds"], ["long.dcm"],
              "PixelData holds three frames, NumberOfFrames absent (1)")
    save(ds, d / "long.dcm")

    for kw, v in [("Rows", 0), ("Columns", 0), ("Rows", 65535), ("Columns", 65535)]:
        ds = one(t, description=f"{kw} {v}")
        setattr(ds, kw, v)
        name = f"{kw.lower()}-{v}.dcm"
        d = c.add(f"{kw.lower()}-{v}", "quarantine", [f"{kw.lower()}"], [name],
                  f"{kw} = {v}, pixel data of the template")
        save(ds, d / name)

    ds = one(t, description="10000 frames")
    ds.NumberOfFrames = 10000
    d = c.add("frames-10000", "quarantine", ["numberofframes"], ["frames.dcm"],
              "NumberOfFrames 10000 with one frame of data")
    save(ds, d / "frames.dcm")
    ds = one(t, description="0 frames")
    ds.NumberOfFrames = 0
    d = c.add("frames-0", "quarantine", ["numberofframes"], ["frames0.dcm"], "NumberOfFrames 0")
    save(ds, d / "frames0.dcm")

    # -- series-level
    slices = stack(t, 6, "mixed modality and size under one UID")
    odd = slices[3]
    odd.Modality = "PT"
    a = odd.pixel_array[::2, ::2].copy()
    odd.Rows, odd.Columns = a.shape
    odd.PixelData = a.tobytes()
    c.series("mixed-series-one-uid", "quarantine", ["rows/columns"], slices,
             "6 slices, the 4th a PT of half the size, all one SeriesInstanceUID")

    slices = stack(t, 6, "gantry tilt")
    tilt = np.deg2rad(15.0)
    for k, ds in enumerate(slices):
        ds.GantryDetectorTilt = 15
        p = np.array(t.position(k)) + k * t.spacing * np.tan(tilt) * t.col
        ds.ImagePositionPatient = [float(f"{v:.6f}") for v in p]
    c.series("gantry-tilt", "processed", [], slices,
             "6 slices sheared by 15 degrees along the column direction (GantryDetectorTilt 15): "
             "corrected onto an orthogonal grid (in-plane shear, as dcm2niix); refused only with --strict-geometry")

    slices = stack(t, 8, "missing slice")
    del slices[4]
    c.series("missing-slice", "quarantine", ["spacing"], slices, "8 positions, the 5th file missing")

    slices = stack(t, 4, "negative spacing")
    for ds in slices:
        ds.PixelSpacing = [-1.0, -1.0]
    c.series("negative-pixel-spacing", "quarantine", ["pixelspacing"], slices, "PixelSpacing -1\\-1", per_file=True)
    slices = stack(t, 4, "NaN spacing")
    for ds in slices:
        ds.PixelSpacing = ["NaN", "NaN"]
    c.series("nan-pixel-spacing", "quarantine", ["pixelspacing"], slices, "PixelSpacing NaN\\NaN", per_file=True)
    slices = stack(t, 4, "orientation not orthonormal")
    for ds in slices:
        ds.ImageOrientationPatient = [1, 0, 0, 0.5, 0.5, 0]
    c.series("iop-not-orthonormal", "quarantine", ["imageorientationpatient"], slices,
             "ImageOrientationPatient 1\\0\\0\\0.5\\0.5\\0 (not unit, not perpendicular)", per_file=True)
    slices = stack(t, 4, "orientation zero")
    for ds in slices:
        ds.ImageOrientationPatient = [0, 0, 0, 0, 0, 0]
    c.series("iop-zero", "quarantine", ["imageorientationpatient"], slices, "ImageOrientationPatient all 0", per_file=True)

    for bits in (0, 64):
        ds = one(t, description=f"BitsAllocated {bits}")
        ds.BitsAllocated = bits
        name = f"bits{bits}.dcm"
        d = c.add(f"bits-allocated-{bits}", "quarantine", ["bitsallocated"], [name], f"BitsAllocated {bits}")
        save(ds, d / name)
    ds = one(t, description="RGB")
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    d = c.add("photometric-rgb", "ignored", [], ["rgb.dcm"],
              "SamplesPerPixel 3 / RGB with one sample's worth of data: a colour image is no volume, "
              "skipped with its reason before its pixel data is looked at")
    save(ds, d / "rgb.dcm")
    slices = stack(t, 4, "palette colour, one sample")
    for ds in slices:
        ds.PhotometricInterpretation = "PALETTE COLOR"
    c.series("photometric-palette-1-sample", "processed", [], slices,
             "PhotometricInterpretation PALETTE COLOR but SamplesPerPixel 1 and no LUT: read as grey values")

    # -- PET without SUV inputs: loads, in Bq/ml, SUV unavailable
    slices = stack(t, 4, "PET without dose, weight, times")
    for ds in slices:
        ds.Modality = "PT"
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.128"
        ds.Units = "BQML"
        for kw in ("PatientWeight", "RadiopharmaceuticalInformationSequence", "SeriesTime", "AcquisitionTime",
                   "AcquisitionDateTime", "DecayCorrection"):
            if kw in ds:
                delattr(ds, kw)
    c.series("pet-no-dose-weight-times", "processed", [], slices,
             "PT, Units BQML, no weight, dose or times: loads in Bq/ml with the SUV unavailable")

    # -- identifiers
    slices = stack(t, 3, "UIDs with path characters", uid="../../etc/series/..")
    for ds in slices:
        ds.StudyInstanceUID = "1.2/../../study"
        ds.PatientID = "../../root/.ssh"
        ds.FrameOfReferenceUID = "/tmp/../frame"
    c.series("uid-with-slashes", "processed", [], slices,
             "Study/Series/FrameOfReference UIDs and PatientID with '/' and '..' (SOP UIDs valid, as the "
             "meta group needs them): outputs stay inside the output folder, named by a hash")
    slices = stack(t, 3, "empty series UID")
    for ds in slices:
        ds.SeriesInstanceUID = ""
    d = c.add("empty-series-uid", "quarantine", ["seriesinstanceuid"], ["s000.dcm"], "SeriesInstanceUID empty")
    for i, ds in enumerate(slices):
        save(ds, d / f"s{i:03d}.dcm")

    # -- transfer syntaxes
    for kind, uid, note in [("unknown-transfer-syntax", "1.2.3.4.5.6.7", "TransferSyntaxUID 1.2.3.4.5.6.7"),
                            ("garbage-transfer-syntax", "not/a uid", "TransferSyntaxUID 'not/a uid'")]:
        ds = one(t, description=note)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        raw = to_bytes(ds)
        old = ExplicitVRLittleEndian.encode() + b"\0"
        new = uid.encode() + (b"\0" if len(uid) % 2 else b"")
        # rewrite the (0002,0010) value and its length, and the group length
        at = raw.find(b"\x02\x00\x10\x00UI")
        ln = struct.unpack("<H", raw[at + 6: at + 8])[0]
        raw = raw[: at + 6] + struct.pack("<H", len(new)) + new + raw[at + 8 + ln:]
        gl = raw.find(b"\x02\x00\x00\x00UL")
        glv = struct.unpack("<I", raw[gl + 8: gl + 12])[0] + len(new) - len(old)
        raw = raw[: gl + 8] + struct.pack("<I", glv) + raw[gl + 12:]
        d = c.add(kind, "quarantine", ["transfer syntax", "invalid uid in file meta"], ["ts.dcm"], note)
        (d / "ts.dcm").write_bytes(raw)
    ds = one(t, description="big endian")
    d = c.add("big-endian-retired", "processed", [], ["be.dcm"],
              "Explicit VR Big Endian (retired, still in old archives): read, samples byte-swapped")
    a = ds.pixel_array
    ds.PixelData = a.astype(a.dtype.newbyteorder(">")).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.preamble = b"\0" * 128
    pydicom.dcmwrite(d / "be.dcm", ds, implicit_vr=False, little_endian=False, force_encoding=True)

    ds = one(t, description="corrupt JPEG-LS")
    ds.compress(JPEGLSLossless, generate_instance_uid=False)
    raw = bytearray(to_bytes(ds))
    start = raw.rfind(b"\xff\xd8")  # the JPEG-LS frame inside the pixel item
    for i in range(start + 40, min(len(raw) - 8, start + 400)):
        raw[i] = (raw[i] * 37 + 11) & 0xFF
    d = c.add("jpegls-corrupt", "quarantine", ["decode", "frame", "jpeg", "charls", "pixel"], ["jls.dcm"],
              "JPEG-LS codestream bytes 40..400 scrambled")
    (d / "jls.dcm").write_bytes(bytes(raw))

    # deflate bomb: a small deflated file whose dataset inflates to 1 GiB
    ds = one(t, description="deflate bomb")
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    pydicom.filewriter.write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    body_ds = copy.deepcopy(ds)
    body_ds.file_meta = FileMetaDataset()
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(body, body_ds)  # explicit VR LE (deflated syntax)
    body_bytes = body.getvalue()
    pix = body_bytes.rfind(b"\xe0\x7f\x10\x00")
    bomb_len = 1 << 30
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [z.compress(body_bytes[:pix]), z.compress(explicit_header(0x0009, 0x1011, b"OB", bomb_len))]
    zero = b"\0" * (1 << 20)
    for _ in range(bomb_len >> 20):
        parts.append(z.compress(zero))
    parts.append(z.compress(body_bytes[pix:]))
    parts.append(z.flush())
    d = c.add("deflate-bomb", "quarantine",
              ["too large", "exceeds", "limit", "inflate", "deflate", "could not read", "truncated"],
              ["bomb.dcm"], "Deflated Explicit VR LE, ~1 MiB on disk, a private element inflating to 1 GiB")
    with open(d / "bomb.dcm", "wb") as f:
        f.write(b"\0" * 128 + b"DICM" + meta.getvalue() + b"".join(parts))

    # the same spread over 12 elements of 96 MiB: each fits, the sum does not
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [z.compress(body_bytes[:pix])]
    for i in range(12):
        parts.append(z.compress(explicit_header(0x0009, 0x1020 + i, b"OB", 96 << 20)))
        for _ in range(96):
            parts.append(z.compress(zero))
    parts.append(z.compress(body_bytes[pix:]))
    parts.append(z.flush())
    d = c.add("deflate-bomb-many", "quarantine", ["inflated"], ["bomb.dcm"],
              "Deflated Explicit VR LE, 12 private elements of 96 MiB each (1.1 GiB inflated)")
    with open(d / "bomb.dcm", "wb") as f:
        f.write(b"\0" * 128 + b"DICM" + meta.getvalue() + b"".join(parts))

    # nested sequence depth bomb: 20,000 undefined-length SQ/items, explicit VR LE
    ds = one(t, description="sequence depth bomb")
    raw = to_bytes(ds)
    pix = raw.rfind(b"\xe0\x7f\x10\x00")
    depth = 20000
    opening = (explicit_header(0x0009, 0x1012, b"SQ", 0xFFFFFFFF) + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF))
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    private_creator = explicit_header(0x0009, 0x0010, b"LO", 0)[:6] + struct.pack("<H", 12) + b"EDGESEG BAD "
    nested = private_creator + opening * depth + closing * depth
    d = c.add("sequence-depth-bomb", "quarantine",
              ["nest", "depth", "sequence", "too deep", "could not read", "truncated"],
              ["deep.dcm"], f"{depth} nested undefined-length sequences before PixelData")
    (d / "deep.dcm").write_bytes(raw[:pix] + nested + raw[pix:])

    # -- file system
    d = c.add("symlink-etc-shadow", "quarantine", ["symlink"], ["shadow.dcm"], "symlink to /etc/shadow")
    os.symlink("/etc/shadow", d / "shadow.dcm")
    d = c.add("directory-loop", "ignored", [], ["loop"], "a symlink to its own folder, beside a good slice")
    save(one(t, description="beside a loop"), d / "good.dcm")
    os.symlink(".", d / "loop")
    (d / "sub").mkdir()
    os.symlink("..", d / "sub" / "up")
    d = c.add("newline-dotdot-name", "processed", [], ["\n..\\evil\n.dcm"],
              "a valid slice whose file name holds newlines and '..', in a folder named '..\\n..'")
    (d / "..\n..").mkdir()
    save(one(t, description="odd file name"), d / "..\n.." / "\n..\\evil\n.dcm")
    d = c.add("dicomdir-and-sr", "ignored", [], ["DICOMDIR", "sr.dcm"], "a DICOMDIR and an SR object")
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    sr.SOPInstanceUID = generate_uid()
    sr.StudyInstanceUID = generate_uid()
    sr.SeriesInstanceUID = generate_uid()
    sr.Modality = "SR"
    (d / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    (d / "sr.dcm").write_bytes(to_bytes(sr))

    d = c.add("many-tiny-files", "quarantine", ["not a dicom", "preamble", "truncated", "could not", "failed"],
              [f"tiny{0:05d}.dcm"], f"{tiny_files} files of 150 bytes (a truncated header each)")
    for i in range(tiny_files):
        (d / f"tiny{i:05d}.dcm").write_bytes(good[:150])

    slices = stack(t, 6, "slow writer")
    d = c.add("slow-writer", "processed", [], ["slow.dcm"],
              "daemon only: a 6-slice series whose last slice (slow.dcm.src) is copied in chunks "
              "further apart than the settle time (make.py slow-write); the study must end up "
              "processed from the complete file, not quarantined half-written", daemon_only=True)
    for i, ds in enumerate(slices[:-1]):
        save(ds, d / f"s{i:03d}.dcm")
    save(slices[-1], d / "slow.dcm.src")


# --------------------------------------------------------------------------


def slow_write(src: Path, dest: Path, seconds: float, chunks: int) -> None:
    data = src.read_bytes()
    step = max(1, -(-len(data) // chunks))
    with open(dest, "wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i: i + step])
            f.flush()
            os.fsync(f.fileno())
            time.sleep(seconds / chunks)


def beside(template: Path, out: Path, outside_target: Path | None) -> dict:
    """The 13 kinds each next to a full copy of the template series; the manifest."""
    t = Template(template)
    out.mkdir(parents=True, exist_ok=True)
    outside = outside_target
    if outside is None:
        outside = out.resolve().parent / "outside-target.dcm"
        uid = generate_uid()
        ds = t.derived(0, uid)
        new_series(ds, uid, 999, "outside target of a symlink (must not be read)")
        save(ds, outside)
    elif not outside.exists():
        raise SystemExit(f"--outside-target {outside} does not exist")
    makers = [
        ("zero-byte", k_zero_byte),
        ("truncated", k_truncated),
        ("non-dicom", k_non_dicom),
        ("no-pixel-data", k_no_pixel_data),
        ("missing-ipp", k_missing_attr("ImagePositionPatient", 903)),
        ("missing-iop", k_missing_attr("ImageOrientationPatient", 904)),
        ("mixed-orientation", k_mixed_orientation),
        ("nonuniform-spacing", k_nonuniform_spacing),
        ("frame-count-mismatch", k_frame_count_mismatch),
        ("unsupported-ts", k_unsupported_ts),
        ("symlink-outside", k_symlink_outside(outside, relative=outside_target is None)),
        ("duplicate-position", k_duplicate_position),
        ("duplicate-sop", k_duplicate_sop),
    ]
    kinds = []
    for kind, make in makers:
        d = out / kind
        if d.exists() or d.is_symlink():
            shutil.rmtree(d)
        t.copy_into(d)
        f = make(t, d)
        if f["scope"] == "series":
            names = [f"series-uid:{f['bad_series_uid']}"]
        else:
            names = f["bad_path"] if isinstance(f["bad_path"], list) else [f["bad_path"]]
        entry = {"kind": kind, "folder": kind, "outcome": f.pop("outcome", "quarantine"),
                 "reason_all": f.pop("expect"), "reason_any": f.pop("expect_any", []), "names": names,
                 "daemon_only": False, "note": f.pop("note", ""), "study_uids": study_uids(d)}
        entry.update({k: v for k, v in f.items() if k not in ("bad_path", "scope")})
        kinds.append(entry)
        log(f"{kind:22} {names}")
    return {"template_series_uid": t.series_uid, "template_files": len(t.files), "beside_template": True,
            "kinds": kinds}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "beside":
        ap = argparse.ArgumentParser(prog="make.py beside")
        ap.add_argument("--template", required=True, type=Path, help="folder of one good single-frame series")
        ap.add_argument("--out", required=True, type=Path)
        ap.add_argument("--outside-target", type=Path, default=None,
                        help="file the symlink-outside link points to "
                             "(default: a valid DICOM file written at DIR/../outside-target.dcm)")
        a = ap.parse_args(argv[1:])
        manifest = beside(a.template, a.out, a.outside_target)
        (a.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        print(f"wrote {len(manifest['kinds'])} kinds to {a.out} (manifest.json)")
        return 0
    if argv and argv[0] == "slow-write":
        ap = argparse.ArgumentParser(prog="make.py slow-write")
        ap.add_argument("src", type=Path)
        ap.add_argument("dest", type=Path)
        ap.add_argument("--seconds", type=float, default=10.0)
        ap.add_argument("--chunks", type=int, default=20)
        a = ap.parse_args(argv[1:])
        slow_write(a.src, a.dest, a.seconds, a.chunks)
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--template", type=Path, default=None, help="folder of one good single-frame series")
    ap.add_argument("--tiny-files", type=int, default=5000)
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        template = a.template
        if template is None:
            import phantom
            phantom.generate(tmp, size="tiny", vendor="siemens", nuclide="ga68", seed=7)
            cts = [p.parent for p in Path(tmp).rglob("*") if p.is_file() and _is_ct(p)]
            if not cts:
                raise SystemExit("phantom wrote no CT")
            template = cts[0]
        t = KindTemplate(template)
        c = Corpus(t, a.out)
        build(c, a.tiny_files)
        for k in c.kinds:
            k["study_uids"] = study_uids(a.out / k["folder"])
    manifest = {"template_series_uid": t.series_uid, "template_files": len(t.files), "beside_template": False,
                "kinds": c.kinds}
    (a.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(c.kinds)} kinds to {a.out} (manifest.json)")
    return 0


def _is_ct(p: Path) -> bool:
    try:
        return pydicom.dcmread(p, stop_before_pixels=True).Modality == "CT"
    except Exception:  # noqa: BLE001 - truth files, NIfTI
        return False


if __name__ == "__main__":
    sys.exit(main())
