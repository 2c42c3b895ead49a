"""edgeseg radiomics against PyRadiomics 3.0.1 (the judge, installed from PyPI):
generated images and masks of many shapes, sizes, spacings and intensity
ranges, written by SimpleITK; default and non-default parameter files; the
same feature names and every feature within 1e-6 relative.

Exceptions to 1e-6 (each asserted with its own tolerance and reason):
- gradient_*: SimpleITK writes the gradient magnitude as float32; edgeseg
  rounds to float32 too, but the two sum the derivatives in a different order,
  so a value can land one float32 ulp apart: 1e-4.
"""
import csv
import io
import json
import math
import zlib

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run_edgeseg

radiomics = pytest.importorskip("radiomics")
from radiomics import featureextractor  # noqa: E402

REL = 1e-6


def _sphere(shape, centre, radius, spacing):
    z, y, x = np.indices(shape)
    d = ((z - centre[0]) * spacing[2]) ** 2 + ((y - centre[1]) * spacing[1]) ** 2 + ((x - centre[2]) * spacing[0]) ** 2
    return d <= radius**2


def _case(rng, kind):
    """(image array int16 z,y,x; mask array; spacing x,y,z)."""
    if kind == "box":
        shape, spacing = (12, 14, 16), (1.0, 1.0, 1.0)
        m = np.zeros(shape, np.uint8)
        m[2:9, 3:11, 4:12] = 1
    elif kind == "sphere_aniso":
        shape, spacing = (20, 30, 28), (0.7, 0.7, 2.5)
        m = _sphere(shape, (10, 15, 14), 8.0, spacing).astype(np.uint8)
    elif kind == "blob":
        shape, spacing = (24, 26, 22), (0.9, 1.1, 1.5)
        noise = rng.normal(size=shape)
        k = np.ones(5) / 5
        for ax in range(3):
            noise = np.apply_along_axis(lambda v: np.convolve(v, k, mode="same"), ax, noise)
        m = (noise > 0.15).astype(np.uint8)
        m[:2] = 0
        m[-2:] = 0
    elif kind == "two_lesions":
        shape, spacing = (18, 32, 32), (0.8, 0.8, 2.0)
        m = (_sphere(shape, (8, 10, 10), 5.0, spacing) | _sphere(shape, (10, 22, 21), 6.0, spacing)).astype(np.uint8)
    elif kind == "thin":
        shape, spacing = (6, 20, 20), (1.0, 1.0, 3.0)
        m = np.zeros(shape, np.uint8)
        m[2:4, 4:15, 5:17] = 1
        m[3, 4:8, 5:9] = 0
    elif kind == "single_slice":
        shape, spacing = (5, 20, 20), (0.6, 0.6, 5.0)
        m = np.zeros(shape, np.uint8)
        m[2, 3:16, 4:14] = 1
    elif kind == "interior":
        # Well inside a larger image: every filter margin (the wavelet's 2 and
        # 3 voxels per side) lies inside the image, so nothing wraps around.
        shape, spacing = (30, 40, 44), (0.8, 0.8, 1.5)
        m = _sphere(shape, (15, 19, 23), 6.0, spacing).astype(np.uint8)
    else:
        raise ValueError(kind)
    lo, hi = {"box": (0, 200), "sphere_aniso": (-1024, 1500), "blob": (-60, 250), "two_lesions": (-200, 400),
              "thin": (20, 90), "single_slice": (0, 3000), "interior": (-100, 300)}[kind]
    img = rng.integers(lo, hi, size=shape).astype(np.int16)
    # Some structure inside the ROI so that texture matrices are not uniform noise.
    img = (img + 40 * np.sin(np.indices(shape)[2] / 3.0)).astype(np.int16)
    return img, m, spacing


def _write(tmp_path, name, arr, spacing, origin=(-12.5, 30.25, 7.0)):
    im = sitk.GetImageFromArray(arr)
    im.SetSpacing(spacing)
    im.SetOrigin(origin)
    p = tmp_path / name
    sitk.WriteImage(im, str(p))
    return p


def _yaml(params):
    return json.dumps(params)


def _pyradiomics(image, mask, params_file, label=None):
    ext = featureextractor.RadiomicsFeatureExtractor(str(params_file))
    res = ext.execute(str(image), str(mask), label=label)
    return {k: v for k, v in res.items() if not k.startswith("diagnostics_")}


def _edgeseg(image, mask, params_file, label=None):
    args = ["radiomics", image, mask, "--params", params_file, "--json"]
    if label is not None:
        args += ["--label", str(label)]
    out = json.loads(run_edgeseg(*args).stdout)
    return out, {k: v for k, v in out.items() if not k.startswith("diagnostics_")}


def _tolerance(name):
    return 1e-4 if name.startswith("gradient_") else REL


def _compare(ref, got):
    assert sorted(ref) == sorted(got), (sorted(set(ref) ^ set(got)))[:20]
    bad = []
    for k, rv in ref.items():
        rv = float(rv)
        gv = got[k]
        gv = float("nan") if isinstance(gv, str) else float(gv)
        if math.isnan(rv) and math.isnan(gv):
            continue
        tol = _tolerance(k)
        if not abs(rv - gv) <= tol * max(abs(rv), abs(gv)) + 1e-12:
            bad.append((k, rv, gv))
    assert not bad, f"{len(bad)} features differ: {bad[:15]}"


KINDS = ["box", "sphere_aniso", "blob", "two_lesions", "thin", "single_slice", "interior"]

PARAMS = {
    "default": {},
    "bincount_weighted": {
        "setting": {"binCount": 16, "weightingNorm": "euclidean", "symmetricalGLCM": False, "gldm_a": 1,
                    "voxelArrayShift": 1000},
    },
    "binwidth20_dist12": {
        "setting": {"binWidth": 20, "distances": [1, 2]},
        "featureClass": {"shape": None, "firstorder": [], "glcm": ["Contrast", "Correlation", "MCC", "Imc2"],
                         "glrlm": None, "glszm": None, "gldm": None, "ngtdm": None},
    },
    "filters": {
        "imageType": {"Original": {}, "Square": {}, "SquareRoot": {}, "Logarithm": {}, "Exponential": {},
                      "Gradient": {}, "Wavelet": {}},
        "setting": {"binWidth": 25},
    },
    "normalize_reseg": {
        "setting": {"normalize": True, "normalizeScale": 100, "removeOutliers": 3, "resegmentRange": [-150, 200],
                    "binWidth": 5, "preCrop": True},
    },
    # LoG at three sigmas (3 an integer: PyRadiomics names it log-sigma-3-mm-3D) and one too large for
    # most of the images (skipped with a warning by both).
    "log": {
        "imageType": {"Original": {}, "LoG": {"sigma": [1.0, 2.5, 3, 20.0]}},
        "setting": {"binWidth": 10},
    },
    # featureClass listed: without it PyRadiomics adds shape2D under force2D and refuses the ROIs more
    # than one slice thick (tests/peers/test_radiomics_lbp.py covers shape2D).
    "force2d_manhattan": {
        "setting": {"force2D": True, "force2Ddimension": 0, "weightingNorm": "manhattan", "minimumROIDimensions": 2},
        "featureClass": {"shape": None, "firstorder": None, "glcm": None, "glrlm": None, "glszm": None,
                         "gldm": None, "ngtdm": None},
    },
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pname", list(PARAMS))
def test_features_match_pyradiomics(tmp_path, kind, pname):
    rng = np.random.default_rng(zlib.crc32(f"{kind}/{pname}".encode()))
    img, m, spacing = _case(rng, kind)
    params = PARAMS[pname]
    image = _write(tmp_path, "image.nii.gz", img, spacing)
    mask = _write(tmp_path, "mask.nii.gz", m, spacing)
    pf = tmp_path / "params.yaml"
    pf.write_text(_yaml(params))
    ref = _pyradiomics(image, mask, pf)
    full, got = _edgeseg(image, mask, pf)
    _compare(ref, got)


def test_label_and_diagnostics(tmp_path):
    rng = np.random.default_rng(7)
    img, m, spacing = _case(rng, "two_lesions")
    lab = m.copy()
    lab[:, :, 16:] *= 3
    image = _write(tmp_path, "image.nii.gz", img, spacing)
    mask = _write(tmp_path, "mask.nii.gz", lab, spacing)
    pf = tmp_path / "params.yaml"
    pf.write_text("setting:\n  binWidth: 20\n")
    ext = featureextractor.RadiomicsFeatureExtractor(str(pf))
    ref_all = ext.execute(str(image), str(mask), label=3)
    full, got = _edgeseg(image, mask, pf, label=3)
    _compare({k: v for k, v in ref_all.items() if not k.startswith("diagnostics_")}, got)
    for key in ["diagnostics_Mask-original_BoundingBox", "diagnostics_Mask-original_VoxelNum",
                "diagnostics_Mask-original_VolumeNum", "diagnostics_Image-original_Size",
                "diagnostics_Image-original_Spacing"]:
        assert list(np.atleast_1d(ref_all[key])) == list(np.atleast_1d(full[key])), key
    for key in ["diagnostics_Mask-original_CenterOfMassIndex", "diagnostics_Mask-original_CenterOfMass",
                "diagnostics_Image-original_Mean"]:
        np.testing.assert_allclose(np.atleast_1d(np.asarray(ref_all[key], float)), np.atleast_1d(full[key]), rtol=1e-9)


def test_batch_csv_layout(tmp_path):
    rng = np.random.default_rng(3)
    rows = ["Image,Mask,Label"]
    for i, kind in enumerate(["box", "blob"]):
        img, m, spacing = _case(rng, kind)
        _write(tmp_path, f"im{i}.nii.gz", img, spacing)
        _write(tmp_path, f"ma{i}.nii.gz", m, spacing)
        rows.append(f"im{i}.nii.gz,ma{i}.nii.gz,1")
    batch = tmp_path / "batch.csv"
    batch.write_text("\n".join(rows) + "\n")
    out = list(csv.reader(io.StringIO(run_edgeseg("radiomics", batch).stdout)))
    header = out[0]
    assert header[:3] == ["Image", "Mask", "Label"]
    assert "original_glcm_Idmn" in header and "original_shape_Sphericity" in header
    assert len(out) == 3
    ext = featureextractor.RadiomicsFeatureExtractor()
    ref = ext.execute(str(tmp_path / "im1.nii.gz"), str(tmp_path / "ma1.nii.gz"))
    row = dict(zip(header, out[2]))
    for k in ["original_firstorder_Mean", "original_glszm_ZoneEntropy", "original_shape_SurfaceArea"]:
        assert math.isclose(float(row[k]), float(ref[k]), rel_tol=REL)


def test_batch_rows_of_one_image_match_pyradiomics(tmp_path):
    """Consecutive rows naming one image (edgeseg reads it once for them) with
    other masks and labels, another image between, the first again: every
    row as PyRadiomics extracts it."""
    rng = np.random.default_rng(11)
    img, m, spacing = _case(rng, "two_lesions")
    img2, _, _ = _case(rng, "two_lesions")
    a = _write(tmp_path, "a.nii.gz", img, spacing)
    b = _write(tmp_path, "b.nii", img2, spacing)
    lab = m.copy()
    lab[:, 16:, :][m[:, 16:, :] == 1] = 2
    m1 = _write(tmp_path, "m1.nii.gz", m, spacing)
    m2 = _write(tmp_path, "m2.nii.gz", lab, spacing)
    rows = [(a, m1, 1), (a, m2, 2), (a, m2, 1), (b, m1, 1), (a, m2, 2)]
    batch = tmp_path / "batch.csv"
    batch.write_text("Image,Mask,Label\n" + "".join(f"{i},{k},{l}\n" for i, k, l in rows))
    pf = tmp_path / "params.yaml"
    pf.write_text(_yaml({}))
    out = json.loads(run_edgeseg("radiomics", batch, "--params", pf, "--json").stdout)
    assert len(out) == len(rows)
    for (image, mask, label), row in zip(rows, out):
        assert (row["Image"], row["Mask"], row["Label"]) == (str(image), str(mask), str(label))
        got = {k: v for k, v in row.items() if not k.startswith("diagnostics_") and k not in ("Image", "Mask", "Label")}
        _compare(_pyradiomics(image, mask, pf, label), got)


def test_unknown_parameter_key_is_refused_with_its_position(tmp_path):
    rng = np.random.default_rng(1)
    img, m, spacing = _case(rng, "box")
    image = _write(tmp_path, "image.nii.gz", img, spacing)
    mask = _write(tmp_path, "mask.nii.gz", m, spacing)
    pf = tmp_path / "params.yaml"
    pf.write_text("setting:\n  binWidth: 25\n  binwidth: 10\n")
    p = run_edgeseg("radiomics", image, mask, "--params", pf, check=False)
    assert p.returncode == 1
    assert "line 3 column 3: unknown setting binwidth" in p.stderr


# resampledPixelSpacing: each interpolator, zero spacings (axis kept), padDistance, normalize before
# resampling (a float64 image), the same-spacing shortcut (mask onto the image grid and cropped), LoG
# and the wavelet on the resampled image, int16 and float32 images.
RESAMPLE = {
    "bspline": {"setting": {"resampledPixelSpacing": [1.2, 1.3, 1.5], "binWidth": 20}},
    "bspline_log": {
        "imageType": {"Original": {}, "LoG": {"sigma": [1.5, 3.0]}, "Wavelet": {}},
        "setting": {"resampledPixelSpacing": [1.0, 1.0, 1.0], "interpolator": "sitkBSpline", "padDistance": 3},
    },
    # For float32 images: the wavelet is left out (PyWavelets filters a float32 image in float32, edgeseg in
    # float64; see docs/radiomics.md).
    "bspline_log_float": {
        "imageType": {"Original": {}, "LoG": {"sigma": [1.5, 3.0]}, "Square": {}},
        "setting": {"resampledPixelSpacing": [1.0, 1.0, 1.0], "interpolator": "sitkBSpline", "padDistance": 3},
    },
    "linear_zero_axis": {
        "setting": {"resampledPixelSpacing": [0.8, 0, 2.0], "interpolator": "sitkLinear", "binCount": 24},
    },
    "nearest": {"setting": {"resampledPixelSpacing": [2, 2, 2], "interpolator": "sitkNearestNeighbor",
                            "minimumROIDimensions": 1}},
    "normalize_bspline": {
        "setting": {"normalize": True, "normalizeScale": 100, "resampledPixelSpacing": [0.9, 0.9, 0.9],
                    "binWidth": 10, "padDistance": 0},
    },
}


def _resample_cases():
    cases = []
    for kind in ["box", "sphere_aniso", "blob", "thin", "two_lesions"]:
        for pname in RESAMPLE:
            if pname != "bspline_log_float":
                cases.append((kind, pname, "int16"))
    for pname in ["bspline", "linear_zero_axis", "bspline_log_float"]:
        cases.append(("sphere_aniso", pname, "float32"))
        cases.append(("blob", pname, "float32"))
    return cases


@pytest.mark.parametrize("kind,pname,dtype", _resample_cases())
def test_resampling_matches_pyradiomics(tmp_path, kind, pname, dtype):
    rng = np.random.default_rng(zlib.crc32(f"{kind}/{pname}/{dtype}".encode()))
    img, m, spacing = _case(rng, kind)
    if dtype == "float32":
        img = (img.astype(np.float32) * np.float32(0.37) + rng.normal(size=img.shape).astype(np.float32))
    image = _write(tmp_path, "image.nii.gz", img, spacing)
    mask = _write(tmp_path, "mask.nii.gz", m, spacing)
    pf = tmp_path / "params.yaml"
    pf.write_text(_yaml(RESAMPLE[pname]))
    ext = featureextractor.RadiomicsFeatureExtractor(str(pf))
    ref_all = ext.execute(str(image), str(mask))
    full, got = _edgeseg(image, mask, pf)
    _compare({k: v for k, v in ref_all.items() if not k.startswith("diagnostics_")}, got)
    for key in ["diagnostics_Image-interpolated_Size", "diagnostics_Mask-interpolated_BoundingBox",
                "diagnostics_Mask-interpolated_VoxelNum", "diagnostics_Mask-interpolated_VolumeNum"]:
        assert list(np.atleast_1d(ref_all[key])) == list(np.atleast_1d(full[key])), key
    for key in ["diagnostics_Image-interpolated_Spacing", "diagnostics_Image-interpolated_Mean",
                "diagnostics_Mask-interpolated_Mean", "diagnostics_Mask-interpolated_CenterOfMass"]:
        np.testing.assert_allclose(np.atleast_1d(np.asarray(ref_all[key], float)), np.atleast_1d(full[key]),
                                   rtol=1e-9, err_msg=key)


def test_resampling_on_the_image_spacing_only_moves_the_mask(tmp_path):
    """resampledPixelSpacing equal to the image's: PyRadiomics puts the mask on the image grid and crops both
    to the ROI plus padDistance, without interpolating the image."""
    rng = np.random.default_rng(11)
    img, m, spacing = _case(rng, "blob")
    image = _write(tmp_path, "image.nii.gz", img, spacing)
    mask = _write(tmp_path, "mask.nii.gz", m, spacing)
    pf = tmp_path / "params.yaml"
    pf.write_text(_yaml({"imageType": {"Original": {}, "LoG": {"sigma": [2.0]}},
                         "setting": {"resampledPixelSpacing": list(spacing), "padDistance": 2}}))
    ext = featureextractor.RadiomicsFeatureExtractor(str(pf))
    ref_all = ext.execute(str(image), str(mask))
    full, got = _edgeseg(image, mask, pf)
    _compare({k: v for k, v in ref_all.items() if not k.startswith("diagnostics_")}, got)
    assert list(ref_all["diagnostics_Image-interpolated_Size"]) == list(full["diagnostics_Image-interpolated_Size"])


def test_log_on_a_small_image_is_skipped_as_pyradiomics_does(tmp_path):
    """An image under 4 voxels along an axis gets no LoG image (PyRadiomics warns and yields none)."""
    rng = np.random.default_rng(5)
    img = rng.integers(0, 300, size=(3, 12, 12)).astype(np.int16)
    m = np.zeros(img.shape, np.uint8)
    m[1, 3:9, 2:10] = 1
    image = _write(tmp_path, "image.nii.gz", img, (1.0, 1.0, 2.0))
    mask = _write(tmp_path, "mask.nii.gz", m, (1.0, 1.0, 2.0))
    pf = tmp_path / "params.yaml"
    pf.write_text(_yaml({"imageType": {"Original": {}, "LoG": {"sigma": [1.0]}}}))
    ref = _pyradiomics(image, mask, pf)
    full, got = _edgeseg(image, mask, pf)
    assert not any(k.startswith("log-") for k in ref)
    _compare(ref, got)


def test_unsupported_interpolator_is_refused_with_its_position(tmp_path):
    rng = np.random.default_rng(1)
    img, m, spacing = _case(rng, "box")
    image = _write(tmp_path, "image.nii.gz", img, spacing)
    mask = _write(tmp_path, "mask.nii.gz", m, spacing)
    pf = tmp_path / "params.yaml"
    pf.write_text("setting:\n  resampledPixelSpacing: [2, 2, 2]\n  interpolator: sitkLanczosWindowedSinc\n")
    p = run_edgeseg("radiomics", image, mask, "--params", pf, check=False)
    assert p.returncode == 1
    assert "line 3 column 17: interpolator sitkLanczosWindowedSinc is not supported by edgeseg" in p.stderr


# A float64 image whose values float32 would round (1e5 plus fractions: float32's step there is 1/128):
# SimpleITK keeps it float64 and so does PyRadiomics; edgeseg must too (read as float32, the extremes
# alone move by up to 1/256 and first-order Range misses 1e-6). Box flow, filters that read neighbours,
# normalisation, LoG, and resampling writing the interpolated image back as float64.
FLOAT64 = {
    "default": PARAMS["default"],
    "filters": PARAMS["filters"],
    "normalize_reseg": {"setting": {"normalize": True, "normalizeScale": 100, "removeOutliers": 3,
                                    "resegmentRange": [-150, 200], "binWidth": 5, "preCrop": True}},
    "log": PARAMS["log"],
    "bspline_log": RESAMPLE["bspline_log"],
    "linear_zero_axis": RESAMPLE["linear_zero_axis"],
}


@pytest.mark.parametrize("kind", ["blob", "interior"])
@pytest.mark.parametrize("pname", list(FLOAT64))
def test_float64_image_matches_pyradiomics(tmp_path, kind, pname):
    rng = np.random.default_rng(zlib.crc32(f"{kind}/{pname}/float64".encode()))
    img, m, spacing = _case(rng, kind)
    img = 1e5 + img.astype(np.float64) * 0.37 + rng.normal(size=img.shape)
    assert np.any(img.astype(np.float32).astype(np.float64) != img)
    image = _write(tmp_path, "image.nii.gz", img, spacing)
    assert sitk.ReadImage(str(image)).GetPixelID() == sitk.sitkFloat64
    mask = _write(tmp_path, "mask.nii.gz", m, spacing)
    pf = tmp_path / "params.yaml"
    pf.write_text(_yaml(FLOAT64[pname]))
    ref = _pyradiomics(image, mask, pf)
    full, got = _edgeseg(image, mask, pf)
    _compare(ref, got)
