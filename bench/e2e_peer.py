#!/usr/bin/env python3
"""The pipeline a researcher assembles today for a PET/CT study, one stage per
call so that bench/e2e.sh can time each stage (wall time, peak RSS) on its own:

    e2e_peer.py convert DICOM_DIR WORK     SimpleITK: PET series -> SUVbw NIfTI, CT series
                                            resampled onto the PET grid (linear, -1000 HU
                                            outside): WORK/in/study_0000.nii.gz, _0001
    (nnUNetv2_predict -i WORK/in -o WORK/pred ... -device cpu, run by bench/e2e.sh in the
     nnU-Net venv)
    e2e_peer.py post WORK                  cc3d: lesions outside the PET body mask removed,
                                            26-connected lesion components under 0.1 mL
                                            removed -> WORK/labels.nii.gz, WORK/lesions.nii.gz
    e2e_peer.py rtstruct DICOM_DIR WORK    rt-utils: one ROI per lesion (and the liver) on the
                                            PET series -> WORK/rtstruct.dcm
    e2e_peer.py dice A.nii.gz B.nii.gz     Dice per class between two label maps (same grid)

The rules are those of seed 003 (Carlsen et al. 2022) as edgeseg's PET/CT
profile documents them: body = PET SUV > 0.1, its largest 6-connected
component, holes filled slice by slice; lesion label 1, liver label 2.
Nothing here imports edgeseg. Runs in the repository's .venv (SimpleITK,
pydicom, numpy, scipy, connected-components-3d, rt-utils).
"""
from __future__ import annotations

import datetime as dt
import json
import math
import sys
from pathlib import Path

import numpy as np

LESION, LIVER = 1, 2
BODY_SUV = 0.1
MIN_LESION_ML = 0.1


def series_dirs(dicom: Path) -> dict[str, Path]:
    """Modality -> folder, from the first file of each sub-folder."""
    import pydicom

    out = {}
    for d in sorted(p for p in dicom.rglob("*") if p.is_dir()):
        files = sorted(d.glob("*.dcm"))
        if files:
            m = pydicom.dcmread(files[0], stop_before_pixels=True).Modality
            out.setdefault(m, d)
    return out


def read_series(folder: Path):
    import SimpleITK as sitk

    r = sitk.ImageSeriesReader()
    r.SetFileNames(r.GetGDCMSeriesFileNames(str(folder)))
    r.SetOutputPixelType(sitk.sitkFloat32)
    return r.Execute()


def parse_dt(date: str, time: str) -> dt.datetime:
    t = time.split(".")
    base = dt.datetime.strptime(date + t[0].ljust(6, "0"), "%Y%m%d%H%M%S")
    return base + dt.timedelta(microseconds=int(t[1].ljust(6, "0")[:6]) if len(t) > 1 else 0)


def suv_factor(pet_file: Path) -> float:
    """Bq/mL -> SUVbw for a decay-corrected (START) BQML series: the usual
    recipe, weight / (dose decayed from injection to the series time)."""
    import pydicom

    ds = pydicom.dcmread(pet_file, stop_before_pixels=True)
    if str(ds.Units).upper() != "BQML" or str(ds.DecayCorrection).upper() != "START":
        raise SystemExit(f"{pet_file}: units {ds.Units}, decay correction {ds.DecayCorrection}: this recipe "
                         "handles BQML decay-corrected to the series start only")
    rp = ds.RadiopharmaceuticalInformationSequence[0]
    if "RadiopharmaceuticalStartDateTime" in rp:
        inj = dt.datetime.strptime(str(rp.RadiopharmaceuticalStartDateTime)[:14], "%Y%m%d%H%M%S")
    else:
        inj = parse_dt(ds.SeriesDate, rp.RadiopharmaceuticalStartTime)
    scan = parse_dt(ds.SeriesDate, ds.SeriesTime)
    if inj > scan:
        inj -= dt.timedelta(days=1)
    decayed = float(rp.RadionuclideTotalDose) * 2.0 ** (-(scan - inj).total_seconds()
                                                         / float(rp.RadionuclideHalfLife))
    return float(ds.PatientWeight) * 1000.0 / decayed


def convert(dicom: Path, work: Path) -> None:
    import SimpleITK as sitk

    dirs = series_dirs(dicom)
    if "PT" not in dirs or "CT" not in dirs:
        raise SystemExit(f"{dicom}: need a PT and a CT series, found {sorted(dirs)}")
    pet = read_series(dirs["PT"])
    pet = pet * suv_factor(next(iter(sorted(dirs["PT"].glob("*.dcm")))))
    ct = read_series(dirs["CT"])
    rs = sitk.ResampleImageFilter()
    rs.SetReferenceImage(pet)
    rs.SetInterpolator(sitk.sitkLinear)
    rs.SetDefaultPixelValue(-1000.0)
    rs.SetOutputPixelType(sitk.sitkFloat32)
    ct_pet = rs.Execute(ct)
    inp = work / "in"
    inp.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.Cast(pet, sitk.sitkFloat32), str(inp / "study_0000.nii.gz"), useCompression=True)
    sitk.WriteImage(ct_pet, str(inp / "study_0001.nii.gz"), useCompression=True)


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """mask [z, y, x]: background regions of each axial slice that do not touch its edge."""
    from scipy import ndimage

    out = mask.copy()
    for k in range(mask.shape[0]):
        out[k] = ndimage.binary_fill_holes(mask[k])
    return out


def post(work: Path) -> None:
    import SimpleITK as sitk
    import cc3d

    pred = sitk.ReadImage(str(work / "pred" / "study.nii.gz"))
    labels = sitk.GetArrayFromImage(pred).astype(np.uint8)  # [z, y, x]
    suv = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "in" / "study_0000.nii.gz")))
    above = suv > BODY_SUV
    comps = cc3d.connected_components(above, connectivity=6)
    if comps.max() > 0:
        counts = np.bincount(comps.ravel())
        counts[0] = 0
        body = fill_holes_per_slice(comps == counts.argmax())
    else:
        body = above
    labels[(labels == LESION) & ~body] = 0
    voxel_ml = float(np.prod(pred.GetSpacing())) / 1000.0
    min_voxels = max(0, math.ceil(MIN_LESION_ML / voxel_ml - 1e-9))
    lesions = cc3d.dust(labels == LESION, threshold=min_voxels, connectivity=26, in_place=False)
    labels[(labels == LESION) & ~lesions] = 0
    instances = cc3d.connected_components(lesions, connectivity=26).astype(np.uint16)
    for name, arr in (("labels", labels), ("lesions", instances)):
        img = sitk.GetImageFromArray(arr)
        img.CopyInformation(pred)
        sitk.WriteImage(img, str(work / f"{name}.nii.gz"), useCompression=True)
    print(json.dumps({"lesions": int(instances.max()), "lesion_voxels": int(lesions.sum()),
                      "body_voxels": int(body.sum())}))


def rtstruct(dicom: Path, work: Path) -> None:
    import SimpleITK as sitk
    from rt_utils import RTStructBuilder

    pet_dir = series_dirs(dicom)["PT"]
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "labels.nii.gz")))
    lesions = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "lesions.nii.gz")))
    rt = RTStructBuilder.create_new(dicom_series_path=str(pet_dir))
    # rt-utils wants [rows, cols, slices] in its own slice order (ascending along the normal),
    # which is SimpleITK's series order too.
    for n in range(1, int(lesions.max()) + 1):
        rt.add_roi(mask=np.transpose(lesions == n, (1, 2, 0)), name=f"lesion {n}")
    if (labels == LIVER).any():
        rt.add_roi(mask=np.transpose(labels == LIVER, (1, 2, 0)), name="liver")
    rt.save(str(work / "rtstruct.dcm"))


def dice(a_path: Path, b_path: Path) -> None:
    import SimpleITK as sitk

    a_img, b_img = sitk.ReadImage(str(a_path)), sitk.ReadImage(str(b_path))
    a, b = sitk.GetArrayFromImage(a_img), sitk.GetArrayFromImage(b_img)
    if a.shape != b.shape or not np.allclose(a_img.GetOrigin(), b_img.GetOrigin(), atol=1e-3) \
            or not np.allclose(a_img.GetSpacing(), b_img.GetSpacing(), atol=1e-4):
        raise SystemExit(f"{a_path} and {b_path} are on different grids")
    out = {}
    for k, name in ((LESION, "lesion"), (LIVER, "liver")):
        x, y = a == k, b == k
        n = int(x.sum() + y.sum())
        out[name] = 1.0 if n == 0 else 2.0 * int((x & y).sum()) / n
        out[f"{name}_voxels"] = [int(x.sum()), int(y.sum())]
    out["identical_voxels"] = float((a == b).mean())
    print(json.dumps(out))


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        raise SystemExit(__doc__)
    cmd, args = argv[1], [Path(a) for a in argv[2:]]
    {"convert": convert, "post": post, "rtstruct": rtstruct, "dice": dice}[cmd](*args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
