"""Geometry and value parity of `edgeseg convert` with two independent readers,
dicom2nifti and SimpleITK, and with the generator's own truth.

Done-when of the ingest issue: the same affine within 1e-3 mm and the same
voxel values (HU exactly; SUV within 1e-5 relative of the truth)."""
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import dicom2nifti
import dicom2nifti.settings

from conftest import run_edgeseg

AFFINE_TOL_MM = 1e-3
SUV_RTOL = 1e-5

CASES = [
    ("--vendor", "siemens", "--nuclide", "cu64"),
    ("--vendor", "siemens", "--nuclide", "ga68", "--oblique"),
    ("--vendor", "philips", "--nuclide", "ga68"),
    ("--vendor", "ge", "--nuclide", "cu64", "--feet-first"),
    ("--vendor", "siemens", "--nuclide", "ga68", "--midnight"),
    ("--vendor", "ge", "--size", "small", "--seed", "3"),
]


def ours(out: Path, series_uid: str):
    img = nib.load(str(out / f"{series_uid}.nii.gz"))
    side = json.loads((out / f"{series_uid}.json").read_text())
    return img, side


def sitk_read(series_dir: Path):
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(series_dir))
    reader.SetFileNames(files)
    reader.SetOutputPixelType(sitk.sitkFloat64)
    img = reader.Execute()
    return img


def sitk_affine_ras(img) -> np.ndarray:
    d = np.array(img.GetDirection()).reshape(3, 3)
    a = np.eye(4)
    a[:3, :3] = d * np.array(img.GetSpacing())[None, :]
    a[:3, 3] = img.GetOrigin()
    return np.diag([-1, -1, 1, 1]) @ a


def sitk_array_ijk(img) -> np.ndarray:
    # GetArrayFromImage is [k, j, i]
    return sitk.GetArrayFromImage(img).transpose(2, 1, 0)


def dicom2nifti_read(series_dir: Path, tmp: Path):
    dicom2nifti.settings.disable_validate_slice_increment()
    out = tmp / f"d2n_{series_dir.name}.nii.gz"
    dicom2nifti.dicom_series_to_nifti(str(series_dir), str(out), reorient_nifti=False)
    return nib.load(str(out))


@pytest.mark.parametrize("flags", CASES, ids=[" ".join(c) for c in CASES])
def test_convert_matches_peers_and_truth(phantoms, tmp_path, flags):
    root, truth = phantoms(*flags)
    out = tmp_path / "out"
    run_edgeseg("convert", root / "dicom", "--out", out)
    for modality in ("PT", "CT"):
        t = truth["series"][modality]
        img, side = ours(out, t["series_instance_uid"])
        data = np.asarray(img.dataobj, dtype=np.float64)
        series_dir = root / "dicom" / modality

        # Affine against SimpleITK and dicom2nifti, both sform and qform.
        s_img = sitk_read(series_dir)
        s_aff = sitk_affine_ras(s_img)
        np.testing.assert_allclose(img.affine, s_aff, atol=AFFINE_TOL_MM, err_msg=f"{modality} sform vs SimpleITK")
        np.testing.assert_allclose(img.get_qform(), s_aff, atol=AFFINE_TOL_MM, err_msg=f"{modality} qform vs SimpleITK")
        d_img = dicom2nifti_read(series_dir, tmp_path)
        np.testing.assert_allclose(img.affine, d_img.affine, atol=AFFINE_TOL_MM, err_msg=f"{modality} vs dicom2nifti")
        assert data.shape == d_img.shape == tuple(reversed(sitk.GetArrayFromImage(s_img).shape))

        s_data = sitk_array_ijk(s_img)
        d_data = np.asarray(d_img.dataobj, dtype=np.float64)
        if modality == "CT":
            hu = np.load(root / "truth" / "ct_hu.npy").transpose(2, 1, 0).astype(np.float64)
            np.testing.assert_array_equal(data, hu, err_msg="CT HU vs truth")
            np.testing.assert_array_equal(data, s_data, err_msg="CT HU vs SimpleITK")
            np.testing.assert_array_equal(data, d_data, err_msg="CT HU vs dicom2nifti")
        else:
            suv_truth = np.load(root / "truth" / "pet_suv.npy").transpose(2, 1, 0)
            assert side["series"]["unit"] == "SUVbw"
            suv = side["series"]["suv"]
            assert suv["status"] == "available"
            assert suv["method"] == t["suv_method"]
            assert suv["factor"] == pytest.approx(t["suv_factor"], rel=1e-9)
            scale = suv_truth.max()
            np.testing.assert_allclose(data, suv_truth, rtol=SUV_RTOL, atol=SUV_RTOL * scale * 1e-3,
                                       err_msg="PET SUV vs truth")
            # The peers give the rescaled values; ours divided by the factor must match them.
            rescaled = np.load(root / "truth" / "pet_rescaled.npy").transpose(2, 1, 0)
            np.testing.assert_allclose(s_data, rescaled, rtol=1e-5, atol=1e-6 * rescaled.max(),
                                       err_msg="SimpleITK disagrees with the generator: fixture problem")
            np.testing.assert_allclose(data / suv["factor"], s_data, rtol=SUV_RTOL,
                                       atol=SUV_RTOL * 1e-3 * np.abs(s_data).max(), err_msg="PET vs SimpleITK")
            np.testing.assert_allclose(data / suv["factor"], d_data, rtol=1e-4,
                                       atol=1e-4 * np.abs(d_data).max(), err_msg="PET vs dicom2nifti")
