#!/usr/bin/env python3
"""The conformance run: every series of the public DICOM set through edgeseg,
judged by readers nobody here wrote.

Usage:
    python tools/conformance.py [--bin EDGESEG] [--set DIR] [--json OUT.json]
                                [--only SUBSTRING]

DIR is the public set (default: ../shared/conformance beside the repository).
Each folder in it is one dataset; `ibsi-suv-dro.tar.xz` is unpacked to a
temporary folder and each of its `DRO/DRO_*/PT/` series is a dataset.

For every dataset:
  * `edgeseg inspect --json DIR`: each series must assemble (an `error` there
    is a refusal);
  * `edgeseg convert DIR --out TMP`: the NIfTI and its sidecar;
  * pydicom (with pylibjpeg / pyjpegls for compressed files) decodes every
    frame; frames are ordered along the slice normal. Voxel values must equal
    ours exactly for lossless transfer syntaxes (HU and other rescaled
    values; PET in SUV is compared per slice as ours / pydicom, which must be
    one positive factor per slice, equal to the sidecar's factor when it
    gives one), and within the lossy codec's tolerance (2 stored units
    largest, 0.5 mean absolute) for JPEG baseline/extended;
  * SimpleITK (GDCM) and dcm2niix read the same files (dcm2niix gets them
    decompressed by pydicom: Debian's build lacks JPEG-LS). The grid each
    reader places in the patient (the RAS positions of the corners of the
    voxel-centre box, whatever order it stores the axes in) must equal ours
    within 1e-3 mm, and SimpleITK's voxel values (brought to nibabel's
    closest canonical orientation) must equal ours as pydicom's do. For a
    single-slice series the slice axis' length is not in the files (each
    reader picks SliceThickness or 1 mm); the corners do not depend on it.
    A peer that cannot read a file (GDCM fails on JPEG-LS frames spread over
    several fragments without an offset table) is noted on the line, not
    held against edgeseg; at least one peer must place the grid.
  * A Siemens mosaic (ImageType MOSAIC: N slices tiled in one stored image)
    is judged as the N slices it holds: pydicom's pixels cut into
    ceil(sqrt(N)) tiles a side, each slice placed by nibabel's MosaicWrapper
    (its own CSA reader). SimpleITK reads a mosaic as the one 2D image it
    stores, so its values are compared tile by tile; the grid is judged by
    nibabel's MosaicWrapper and dcm2niix, which both take mosaics apart.

Prints one line per series and at the end
    N series, M agree, K refused, J disagree
Exit status: 0 when every series agrees, 1 otherwise, 2 when a peer or the
binary is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parents[1]
AFFINE_TOL_MM = 1e-3
LOSSY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"}
LOSSY_MAX_UNITS = 2.0
LOSSY_MEAN_UNITS = 0.5


@dataclass
class Frame:
    z: float
    ipp: np.ndarray
    iop: np.ndarray
    values: np.ndarray  # rows x cols, rescaled, float64
    slope: float
    tile: tuple[slice, slice] | None = None  # a mosaic slice's place in the stored image


@dataclass
class Verdict:
    dataset: str
    series: str
    modality: str = "?"
    syntax: str = "?"
    dims: str = "?"
    outcome: str = "agree"  # agree | refused | disagree
    notes: list[str] = field(default_factory=list)

    def fail(self, msg: str) -> None:
        self.outcome = "disagree"
        self.notes.append(msg)


# ---------------------------------------------------------------- pydicom


def _first(group, keyword):
    if group is None or keyword not in group or not group[keyword].value:
        return None
    return group[keyword].value[0]


def _rescale(*sources) -> tuple[float, float]:
    for s in sources:
        if s is not None and "RescaleSlope" in s:
            return float(s.RescaleSlope), float(s.get("RescaleIntercept", 0) or 0)
    return 1.0, 0.0


def _normal(iop: np.ndarray) -> np.ndarray:
    n = np.cross(iop[:3], iop[3:6])
    return n / np.linalg.norm(n)


def is_mosaic(ds) -> bool:
    return any(str(v).upper() == "MOSAIC" for v in ds.get("ImageType", []))


def mosaic_frames(ds, arr: np.ndarray) -> list[Frame]:
    """A Siemens mosaic's slices: pydicom's pixels cut into ceil(sqrt(N))
    tiles a side; each slice's position from nibabel's MosaicWrapper (its own
    CSA reader and mosaic position correction)."""
    import warnings

    with warnings.catch_warnings():
        # nibabel calls its DICOM readers experimental at import; the mosaic
        # wrapper is what it has long been used for.
        warnings.simplefilter("ignore")
        from nibabel.nicom import dicomwrappers

        w = dicomwrappers.wrapper_from_data(ds)
        n = int(w.n_mosaic)
        first = np.asarray(w.image_position, dtype=np.float64)
        normal = np.asarray(w.slice_normal, dtype=np.float64)
        dz = float(w.voxel_sizes[2])
    tiles = int(np.ceil(np.sqrt(n)))
    tr, tc = arr.shape[0] // tiles, arr.shape[1] // tiles
    slope, icpt = _rescale(ds)
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    out = []
    for k in range(n):
        r, c = divmod(k, tiles)
        where = (slice(r * tr, (r + 1) * tr), slice(c * tc, (c + 1) * tc))
        out.append(Frame(0.0, first + k * dz * normal, iop, arr[where] * slope + icpt, slope, where))
    return out


def mosaic_affine(files: list[Path]) -> tuple[tuple[int, ...], np.ndarray]:
    """nibabel's MosaicWrapper grid (shape, RAS affine) of a one-file mosaic."""
    import warnings

    from nibabel.nicom import dicomwrappers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = dicomwrappers.wrapper_from_data(pydicom.dcmread(files[0], force=True))
        return tuple(w.image_shape), np.diag([-1, -1, 1, 1]) @ w.affine


def pydicom_frames(files: list[Path]) -> list[Frame]:
    frames: list[Frame] = []
    for path in files:
        ds = pydicom.dcmread(path, force=True)
        arr = ds.pixel_array.astype(np.float64)
        if is_mosaic(ds):
            frames.extend(mosaic_frames(ds, arr))
        elif "PerFrameFunctionalGroupsSequence" in ds:
            if arr.ndim == 2:
                arr = arr[None]
            shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
            for k, pf in enumerate(ds.PerFrameFunctionalGroupsSequence):
                ori = _first(pf, "PlaneOrientationSequence") or _first(shared, "PlaneOrientationSequence")
                pos = _first(pf, "PlanePositionSequence") or _first(shared, "PlanePositionSequence")
                pvt = _first(pf, "PixelValueTransformationSequence") or _first(shared, "PixelValueTransformationSequence")
                slope, icpt = _rescale(pvt, ds)
                iop = np.array([float(v) for v in ori.ImageOrientationPatient])
                ipp = np.array([float(v) for v in pos.ImagePositionPatient])
                frames.append(Frame(0.0, ipp, iop, arr[k] * slope + icpt, slope))
        else:
            slope, icpt = _rescale(ds)
            iop = np.array([float(v) for v in ds.ImageOrientationPatient])
            ipp = np.array([float(v) for v in ds.ImagePositionPatient])
            frames.append(Frame(0.0, ipp, iop, arr * slope + icpt, slope))
    normal = _normal(frames[0].iop)
    for f in frames:
        f.z = float(np.dot(f.ipp, normal))
    frames.sort(key=lambda f: f.z)
    return frames


def series_files(folder: Path) -> dict[str, list[Path]]:
    """Image files of each series in folder (recursively), by SeriesInstanceUID."""
    out: dict[str, list[Path]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:
            continue
        if "SeriesInstanceUID" not in ds or "Rows" not in ds:
            continue
        out.setdefault(str(ds.SeriesInstanceUID), []).append(path)
    return out


# ---------------------------------------------------------------- geometry


def canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data, dtype=np.float64), affine))
    return np.asarray(img.dataobj), img.affine


def corners(data_shape, affine: np.ndarray) -> np.ndarray:
    """World (RAS) positions of the voxel-centre box's corners, sorted: the
    grid's place in the patient whatever order a reader stores the axes in."""
    idx = [(0, n - 1) for n in data_shape[:3]]
    pts = np.array([[i, j, k, 1.0] for i in idx[0] for j in idx[1] for k in idx[2]])
    world = (affine @ pts.T).T[:, :3]
    world = np.unique(np.round(world, 6), axis=0)
    return world[np.lexsort(world.T[::-1])]


def compare_geometry(v: Verdict, peer: str, ours_shape, ours_aff, theirs_shape, theirs_aff) -> None:
    if sorted(ours_shape[:3]) != sorted(theirs_shape[:3]):
        v.fail(f"{peer} has dims {'x'.join(map(str, theirs_shape[:3]))}")
        return
    a = corners(ours_shape, ours_aff)
    b = corners(theirs_shape, theirs_aff)
    if a.shape != b.shape:
        v.fail(f"grid corners differ from {peer}'s")
        return
    diff = float(np.abs(a - b).max())
    if diff > AFFINE_TOL_MM:
        v.fail(f"grid differs from {peer}'s by {diff:.2e} mm")
    else:
        v.notes.append(f"{peer} grid {diff:.0e} mm")


def compare_values(v: Verdict, peer: str, ours, ours_aff, theirs, theirs_aff, lossy: bool, slope: float) -> None:
    a, _ = canonical(ours, ours_aff)
    b, _ = canonical(theirs, theirs_aff)
    if a.shape != b.shape:
        v.fail(f"{peer} values: shape {b.shape} vs ours {a.shape}")
        return
    d = np.abs(a - b)
    if lossy:
        bad = d.max() / max(abs(slope), 1e-12) > LOSSY_MAX_UNITS
    else:
        bad = not np.array_equal(a.astype(np.float32), b.astype(np.float32))
    if bad:
        v.fail(f"{peer} values differ (max {d.max():.3g})")
    else:
        v.notes.append(f"{peer} values")


def sitk_volume(files: list[Path]):
    import SimpleITK as sitk

    if len(files) == 1:
        img = sitk.ReadImage(str(files[0]), sitk.sitkFloat64)
    else:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(f) for f in files])
        reader.SetOutputPixelType(sitk.sitkFloat64)
        img = reader.Execute()
    d = np.array(img.GetDirection()).reshape(3, 3)
    a = np.eye(4)
    a[:3, :3] = d * np.array(img.GetSpacing())[None, :]
    a[:3, 3] = img.GetOrigin()
    a = np.diag([-1, -1, 1, 1]) @ a
    return sitk.GetArrayFromImage(img).transpose(2, 1, 0), a


def dcm2niix_volume(files: list[Path], series_uid: str, work: Path):
    src = work / "d2n_in"
    out = work / "d2n_out"
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    src.mkdir(parents=True)
    out.mkdir(parents=True)
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f, force=True)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            # dcm2niix as Debian builds it lacks some codecs (JPEG-LS) and
            # crashed on multi-frame RLE: it judges geometry, so it gets the
            # pixels decompressed by pydicom.
            ds.decompress()
            ds.save_as(src / f"{i:05d}.dcm", enforce_file_format=True)
        else:
            os.symlink(f, src / f"{i:05d}.dcm")
    p = subprocess.run(["dcm2niix", "-z", "n", "-b", "n", "-f", "%j", "-o", str(out), str(src)],
                       capture_output=True, text=True)
    cands = sorted(out.glob("*.nii"))
    if not cands:
        raise RuntimeError(f"dcm2niix wrote nothing (exit {p.returncode}): {p.stdout.strip()[-300:]}")
    exact = [c for c in cands if c.name == f"{series_uid}.nii"]
    img = nib.load(str((exact or cands)[0]))
    return np.asarray(img.dataobj, dtype=np.float64), img.affine


# ---------------------------------------------------------------- one dataset


def run(binary: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True)


def judge_dataset(binary: Path, name: str, folder: Path, work: Path) -> list[Verdict]:
    verdicts: list[Verdict] = []
    p = run(binary, "inspect", "--json", folder)
    try:
        summary = json.loads(p.stdout)
    except json.JSONDecodeError:
        return [Verdict(name, "-", outcome="refused", notes=[f"inspect exit {p.returncode}: {p.stderr.strip()[:300]}"])]
    out = work / "ours"
    shutil.rmtree(out, ignore_errors=True)
    conv = run(binary, "convert", folder, "--out", out)
    files_by_series = series_files(folder)
    for study in summary.get("studies", []):
        for s in study["series"]:
            uid = s["series_uid"]
            v = Verdict(name, uid, s.get("modality", "?"))
            v.syntax = ",".join(t["uid"].removeprefix("1.2.840.10008.") for t in s.get("transfer_syntaxes", []))
            verdicts.append(v)
            if s.get("error"):
                v.outcome = "refused"
                v.notes.append(s["error"])
                continue
            nii = out / f"{uid}.nii.gz"
            side_path = out / f"{uid}.json"
            if not nii.exists():
                v.outcome = "refused"
                v.notes.append(f"convert wrote no volume (exit {conv.returncode}): {conv.stderr.strip()[:300]}")
                continue
            try:
                judge_series(v, nii, side_path, files_by_series.get(uid, []), work)
            except Exception as e:  # a peer failing on a file is a finding, not a crash
                v.fail(f"{type(e).__name__}: {e}")
    problems = summary.get("errors", [])
    if problems:
        first = problems[0].get("error", "?")
        first = first.replace(str(folder) + "/", "")
        verdicts.append(Verdict(name, "-", outcome="refused",
                                notes=[f"{len(problems)} unreadable file(s), first: {first}"]))
    return verdicts


def judge_series(v: Verdict, nii: Path, side_path: Path, files: list[Path], work: Path) -> None:
    img = nib.load(str(nii))
    ours = np.asarray(img.dataobj, dtype=np.float64)
    side = json.loads(side_path.read_text())
    v.dims = "x".join(str(d) for d in ours.shape)
    if not files:
        v.fail("pydicom found no image files for this series")
        return
    frames = pydicom_frames(files)
    if len(frames) != ours.shape[2]:
        v.fail(f"{ours.shape[2]} slices, pydicom has {len(frames)} frames")
        return
    lossy = any(t in LOSSY for t in side["series"].get("transfer_syntaxes", []))
    unit = side["series"].get("unit")
    suv = side["series"].get("suv") or {}
    # Values against pydicom, slice by slice (ours is i fastest: [i, j, k]).
    for k, f in enumerate(frames):
        mine = ours[:, :, k].T  # rows x cols
        ref = f.values
        if mine.shape != ref.shape:
            v.fail(f"slice {k}: shape {mine.shape} vs pydicom {ref.shape}")
            return
        if unit and unit.startswith("SUV"):
            nz = np.abs(ref) > 0
            if not nz.any():
                if np.abs(mine).max() != 0:
                    v.fail(f"slice {k}: pydicom all zero, ours not")
                continue
            ratio = mine[nz] / ref[nz]
            spread = float(np.abs(ratio / ratio.mean() - 1).max())
            if ratio.mean() <= 0 or spread > 1e-6:
                v.fail(f"slice {k}: ours/pydicom not one factor (spread {spread:.1e})")
                return
            if suv.get("status") == "available" and "factor" in suv and not side["series"].get("suv_per_slice"):
                fac = float(suv["factor"])
                if abs(ratio.mean() / fac - 1) > 1e-6 and k == 0:
                    v.fail(f"slice 0: ours/pydicom {ratio.mean():.9g} but sidecar factor {fac:.9g}")
                    return
        elif lossy:
            d = np.abs(mine - ref) / max(abs(f.slope), 1e-12)
            if d.max() > LOSSY_MAX_UNITS or d.mean() > LOSSY_MEAN_UNITS:
                v.fail(f"slice {k}: lossy decode differs by {d.max():.1f} units max, {d.mean():.3f} mean")
                return
        else:
            # Ours is float32; pydicom's rescale is float64: equal after rounding to f32.
            if not np.array_equal(mine.astype(np.float32), ref.astype(np.float32)):
                d = np.abs(mine - ref)
                v.fail(f"slice {k}: {int((d > 0).sum())} voxels differ from pydicom (max {d.max():.3g})")
                return
    v.notes.append("values = pydicom" + (" (lossy tolerance)" if lossy else ""))
    # Geometry against SimpleITK and dcm2niix, canonical orientation.
    scaled = bool(unit and unit.startswith("SUV"))
    slope = frames[0].slope
    if frames[0].tile is not None:
        judge_mosaic(v, ours, img.affine, frames, files, work)
        return
    # A peer that cannot read a file (GDCM and JPEG-LS frames over several
    # fragments without an offset table) is noted, not held against edgeseg;
    # at least one peer must place the grid.
    placed = 0
    try:
        s_data, s_aff = sitk_volume(files)
        compare_geometry(v, "SimpleITK", ours.shape, img.affine, s_data.shape, s_aff)
        placed += 1
        if not scaled:
            compare_values(v, "SimpleITK", ours, img.affine, s_data, s_aff, lossy, slope)
    except RuntimeError as e:
        v.notes.append(f"SimpleITK cannot read it ({str(e).splitlines()[0][:60]})")
    try:
        d_data, d_aff = dcm2niix_volume(files, v.series, work)
        compare_geometry(v, "dcm2niix", ours.shape, img.affine, d_data.shape, d_aff)
        placed += 1
    except RuntimeError as e:
        v.notes.append(f"dcm2niix cannot read it ({str(e)[:100]})")
    if placed == 0:
        v.fail("no peer could place the grid")


def judge_mosaic(v: Verdict, ours, ours_aff, frames: list[Frame], files: list[Path], work: Path) -> None:
    """A Siemens mosaic: SimpleITK (GDCM) reads it as the one 2D image it
    stores, so its values are compared tile by tile; the grid is judged by
    nibabel's MosaicWrapper and dcm2niix, which both take mosaics apart."""
    try:
        s_data, _ = sitk_volume(files)
        stored = s_data[:, :, 0].T  # rows x cols
        for k, f in enumerate(frames):
            if not np.array_equal(ours[:, :, k].T.astype(np.float32), stored[f.tile].astype(np.float32)):
                v.fail(f"SimpleITK values differ in mosaic slice {k}")
                break
        else:
            v.notes.append("SimpleITK values (tile by tile)")
    except RuntimeError as e:
        v.fail(f"SimpleITK could not read it ({str(e).splitlines()[0][:80]})")
    shape, aff = mosaic_affine(files)
    compare_geometry(v, "nibabel", ours.shape, ours_aff, shape, aff)
    try:
        d_data, d_aff = dcm2niix_volume(files, v.series, work)
        compare_geometry(v, "dcm2niix", ours.shape, ours_aff, d_data.shape, d_aff)
    except RuntimeError as e:
        v.fail(f"dcm2niix: {str(e)[:160]}")


# ---------------------------------------------------------------- the set


def datasets(set_dir: Path, tmp: Path, only: str | None):
    for entry in sorted(set_dir.iterdir()):
        if only and only not in entry.name:
            continue
        if entry.is_dir():
            yield entry.name, entry
        elif entry.name.endswith(".tar.xz"):
            dest = tmp / entry.name.removesuffix(".tar.xz")
            with tarfile.open(entry) as t:
                t.extractall(dest, filter="data")
            for pt in sorted(dest.glob("DRO/DRO_*/PT")):
                yield f"{entry.name.removesuffix('.tar.xz')}/{pt.parent.name}", pt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", type=Path, default=Path(os.environ.get("EDGESEG_BIN", ROOT / "target/debug/edgeseg")))
    ap.add_argument("--set", type=Path, default=ROOT.parent / "shared" / "conformance")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--only")
    args = ap.parse_args(argv)
    if not args.bin.exists():
        print(f"conformance: {args.bin}: no edgeseg binary (build it first or give --bin)", file=sys.stderr)
        return 2
    if not args.set.is_dir():
        print(f"conformance: {args.set}: no conformance set", file=sys.stderr)
        return 2
    if not shutil.which("dcm2niix"):
        print("conformance: dcm2niix not found (scripts/deps.sh installs it)", file=sys.stderr)
        return 2
    verdicts: list[Verdict] = []
    with tempfile.TemporaryDirectory(prefix="edgeseg-conformance-") as t:
        tmp = Path(t)
        for name, folder in datasets(args.set, tmp, args.only):
            work = tmp / "work" / name.replace("/", "_")
            work.mkdir(parents=True, exist_ok=True)
            for v in judge_dataset(args.bin, name, folder, work):
                verdicts.append(v)
                print(f"{v.outcome:9} {v.dataset:58} {v.modality:3} {v.syntax:14} {v.dims:12} "
                      f"{'; '.join(v.notes)}", flush=True)
    agree = sum(v.outcome == "agree" for v in verdicts)
    refused = sum(v.outcome == "refused" for v in verdicts)
    disagree = sum(v.outcome == "disagree" for v in verdicts)
    print(f"{len(verdicts)} series, {agree} agree, {refused} refused, {disagree} disagree")
    if args.json:
        args.json.write_text(json.dumps([v.__dict__ for v in verdicts], indent=1))
    return 0 if agree == len(verdicts) and verdicts else 1


if __name__ == "__main__":
    sys.exit(main())
