"""seg.dcm as a Label Map Segmentation (issue 14: `[output] seg_kind =
"labelmap"`, `edgeseg process --seg-kind labelmap`; Label Map Segmentation
Storage 1.2.840.10008.5.1.4.1.1.66.7, DICOM 2024, Sup 243) judged by readers
nobody here wrote.

Studies: phantoms written by tests/fixtures/phantom.py (pydicom), run through
`edgeseg process` twice, once with the default (binary) and once with
`--seg-kind labelmap`: with the point-wise PET/CT test model
(tests/fixtures/onnx_package.py, lesions only) and with the demo model
(lesions and the liver class).

- highdicom 0.26.1 reads the label map: `get_pixels_by_source_instance` over
  every PET slice and `get_volume` give back exactly the study's label map
  (lesions.nii.gz's lesions and labels.nii.gz's classes, as segment numbers)
  and exactly what highdicom decodes from the binary seg.dcm of the same study;
  its segments (labels, codes, colours, algorithm, Tracking ID/UID) are the
  binary SEG's, plus the background segment 0 (the Pixel Padding Value).
- pydicom reads it: one frame per slice from the first to the last slice
  holding a segment, 8-bit pixels, no Segment Identification per frame, no
  Referenced Segment Number dimension.
- After `edgeseg remove-lesion` on a study whose lesion map (rewritten here
  with nibabel) has 300 lesions, the edit's seg.dcm is still a label map (the
  kind the study was written with), now 16-bit, read back exactly by highdicom.
- dciodvfy (dicom3tools) judges it where its version knows the Label Map
  Segmentation IOD; Debian 12's dicom3tools (1.00~20220618) predates DICOM
  2024 and does not ("Error - Information Object Not found"): that one check is
  then skipped, saying so and the version.
"""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import FIXTURES, generate_phantom, run_edgeseg
from test_outputs_dicom import ort_lib, plane, slice_index

LABELMAP = "1.2.840.10008.5.1.4.1.1.66.7"
BINARY = "1.2.840.10008.5.1.4.1.1.66.4"
ROOT = FIXTURES.parents[1]
CASES = {
    "axial": (("--size", "small", "--seed", "11"), "pointwise"),
    "feet-first": (("--size", "small", "--seed", "7", "--feet-first"), "pointwise"),
    "demo-liver": (("--size", "small", "--seed", "11"), "demo"),
}


@pytest.fixture(scope="session")
def model(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("petct-model-labelmap")
    subprocess.run([sys.executable, str(FIXTURES / "onnx_package.py"), "--out", str(d), "--petct", "--patch", "32"],
                   check=True, capture_output=True)
    return d / "model"


def model_dir(model: Path, name: str) -> Path:
    return ROOT / "models" / "demo-petct" if CASES[name][1] == "demo" else model


@pytest.fixture(scope="session")
def studies(tmp_path_factory, model):
    """name -> (binary study folder, labelmap study folder, PET source datasets, dataset.json labels)."""
    cache = {}

    def get(name: str):
        if name not in cache:
            base = tmp_path_factory.mktemp(f"labelmap-{name}")
            truth = generate_phantom(base / "phantom", *CASES[name][0])
            dicom = base / "phantom" / "dicom"
            m = model_dir(model, name)
            folders = {}
            for kind in ("binary", "labelmap"):
                out = base / kind
                args = ["process", dicom, "--model", m, "--out", out, "--onnxruntime", ort_lib()]
                if kind == "labelmap":
                    args += ["--seg-kind", "labelmap"]
                run_edgeseg(*args)
                folders[kind] = out / truth["study_instance_uid"]
            pet = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted((dicom / "PT").rglob("*")) if f.is_file()]
            classes = json.loads((m / "dataset.json").read_text())["labels"]
            cache[name] = (folders["binary"], folders["labelmap"], pet, classes)
        return cache[name]

    return get


def nifti(study: Path, name: str):
    img = nib.load(str(study / name))
    return np.asarray(img.dataobj).astype(np.int64), img.affine


def expected_numbers(seg, lesions: np.ndarray, labels: np.ndarray, classes: dict) -> np.ndarray:
    """The label map the study's NIfTI maps say, in the SEG's segment numbers (by segment label)."""
    number = {d.SegmentLabel: int(d.SegmentNumber) for d in seg.SegmentSequence if int(d.SegmentNumber) != 0}
    out = np.zeros(labels.shape, np.int64)
    for name, value in classes.items():
        if name in number:
            out[labels == int(value)] = number[name]
    for n in np.unique(lesions):
        if n:
            out[lesions == n] = number[f"Lesion {n}"]
    return out


def by_source_instance(seg, pet) -> np.ndarray:
    uids = [d.SOPInstanceUID for d in pet]
    return seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True,
                                             assert_missing_frames_are_empty=True)


@pytest.mark.parametrize("name", list(CASES))
def test_labelmap_read_by_highdicom_is_the_studys_label_map(studies, name):
    binary_dir, study, pet, classes = studies(name)
    report = json.loads((study / "report.json").read_text())
    assert "seg.dcm" in report["dicom_outputs"]
    seg = hd.seg.segread(str(study / "seg.dcm"))
    assert seg.SOPClassUID == LABELMAP and seg.segmentation_type == hd.seg.SegmentationTypeValues.LABELMAP
    lesions, aff = nifti(study, "lesions.nii.gz")
    labels, _ = nifti(study, "labels.nii.gz")
    assert lesions.max() >= 1, "the phantom has lesions"
    expected = expected_numbers(seg, lesions, labels, classes)
    # Every source slice, through its SOP instance: the label map, voxel for voxel.
    px = by_source_instance(seg, pet)
    ks = [slice_index(aff, d) for d in pet]
    for idx, k in enumerate(ks):
        assert np.array_equal(px[idx].astype(np.int64), plane(expected, k)), f"slice k={k} differs"
    # What highdicom decodes from the binary seg.dcm of the same study is the same map.
    binary = hd.seg.segread(str(binary_dir / "seg.dcm"))
    assert binary.SOPClassUID == BINARY
    assert np.array_equal(by_source_instance(binary, pet).astype(np.int64), px.astype(np.int64))
    # get_volume: each slice of the volume, placed by its affine, is the map's slice there.
    vol = seg.get_volume(combine_segments=True)
    arr = np.asarray(vol.array).astype(np.int64)
    assert arr.shape[1:] == plane(expected, 0).shape
    covered = set()
    for i in range(arr.shape[0]):
        lps = vol.map_indices_to_reference(np.array([[i, 0, 0]]))[0]
        k = slice_index(aff, lps)
        covered.add(k)
        assert np.array_equal(arr[i], plane(expected, k)), f"get_volume slice {i} (k={k}) differs"
    holding = {k for k in range(expected.shape[2]) if expected[:, :, k].any()}
    assert holding <= covered and covered == set(range(min(holding), max(holding) + 1)), \
        "the volume spans the first to the last slice holding a segment"


@pytest.mark.parametrize("name", list(CASES))
def test_labelmap_segments_are_the_binary_segs(studies, name):
    binary_dir, study, _, classes = studies(name)
    seg = hd.seg.segread(str(study / "seg.dcm"))
    binary = hd.seg.segread(str(binary_dir / "seg.dcm"))
    items = {int(d.SegmentNumber): d for d in seg.SegmentSequence}
    assert 0 in items, "the background segment (the Pixel Padding Value) is described"
    bg = items.pop(0)
    assert int(seg.PixelPaddingValue) == 0
    assert bg.SegmentLabel == "Background"
    assert bg.SegmentedPropertyTypeCodeSequence[0].CodeValue == "125040"
    assert bg.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "125040"
    assert "TrackingUID" not in bg
    assert seg.segment_numbers == [int(d.SegmentNumber) for d in binary.SegmentSequence]
    report = json.loads((study / "report.json").read_text())
    assert [items[n].SegmentLabel for n in sorted(items)][:len(report["lesions"])] == [
        f"Lesion {les['number']}" for les in report["lesions"]]
    for b in binary.SegmentSequence:
        d = items[int(b.SegmentNumber)]
        for kw in ("SegmentLabel", "SegmentDescription", "SegmentAlgorithmType", "SegmentAlgorithmName",
                   "RecommendedDisplayCIELabValue", "TrackingID", "TrackingUID"):
            assert d.get(kw) == b.get(kw), f"{b.SegmentLabel}: {kw}"
        for kw in ("SegmentedPropertyCategoryCodeSequence", "SegmentedPropertyTypeCodeSequence"):
            assert (d[kw].value[0].CodeValue, d[kw].value[0].CodingSchemeDesignator) == \
                (b[kw].value[0].CodeValue, b[kw].value[0].CodingSchemeDesignator), f"{b.SegmentLabel}: {kw}"
        a_algo = d.SegmentationAlgorithmIdentificationSequence[0]
        b_algo = b.SegmentationAlgorithmIdentificationSequence[0]
        assert (a_algo.AlgorithmName, a_algo.AlgorithmParameters) == (b_algo.AlgorithmName, b_algo.AlgorithmParameters)
    # highdicom's own lookups work on it: by tracking UID, by property type.
    for b in binary.SegmentSequence:
        assert seg.get_segment_numbers(tracking_uid=b.TrackingUID) == [int(b.SegmentNumber)]
    if name == "demo-liver":
        assert seg.get_segment_numbers(segment_label="liver") != []
    # The same study, equipment and references.
    for kw in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "SeriesNumber", "SeriesDescription"):
        assert str(seg.get(kw)) == str(binary.get(kw)), kw
    assert seg.SeriesInstanceUID != binary.SeriesInstanceUID
    assert seg.ContributingEquipmentSequence[0].DeviceUID == binary.ContributingEquipmentSequence[0].DeviceUID
    refs = lambda s: {i.ReferencedSOPInstanceUID for i in s.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert refs(seg) == refs(binary)


@pytest.mark.parametrize("name", ["axial", "feet-first"])
def test_labelmap_attributes_read_by_pydicom(studies, name):
    _, study, pet, _ = studies(name)
    ds = pydicom.dcmread(study / "seg.dcm")
    assert ds.file_meta.MediaStorageSOPClassUID == LABELMAP == ds.SOPClassUID
    assert (ds.Modality, ds.SegmentationType, ds.SegmentsOverlap) == ("SEG", "LABELMAP", "NO")
    assert (ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PixelRepresentation) == ("MONOCHROME2", 1, 0)
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (8, 8, 7)
    frames = ds.PerFrameFunctionalGroupsSequence
    assert int(ds.NumberOfFrames) == len(frames)
    # No per-frame Segment Identification; the one dimension is the position.
    for f in frames:
        assert "SegmentIdentificationSequence" not in f
    assert "SegmentIdentificationSequence" not in ds.SharedFunctionalGroupsSequence[0]
    pointers = [int(d.DimensionIndexPointer) for d in ds.DimensionIndexSequence]
    assert pointers == [pydicom.tag.Tag("ImagePositionPatient")]
    assert ds.DimensionOrganizationType == "3D"
    # One frame per slice: consecutive source slices, each once, in order along the normal.
    pos = {d.SOPInstanceUID: np.array(d.ImagePositionPatient, float) for d in pet}
    iop = np.array(pet[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    along = np.sort([float(p @ normal) for p in pos.values()])
    got = []
    for n, f in enumerate(frames, 1):
        uid = f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        ipp = np.array(f.PlanePositionSequence[0].ImagePositionPatient, float)
        assert np.abs(ipp - pos[uid]).max() < 1e-4
        dv = f.FrameContentSequence[0].DimensionIndexValues
        assert (dv if isinstance(dv, int) else list(dv)) in (n, [n])
        got.append(float(ipp @ normal))
    got = np.array(got)
    assert np.all(np.diff(got) > 0) or np.all(np.diff(got) < 0), "frames in slice order"
    run = np.sort(got)
    first = int(np.argmin(np.abs(along - run[0])))
    assert np.allclose(run, along[first:first + len(run)], atol=1e-3), "consecutive slices, none left out"
    px = ds.pixel_array
    assert px.dtype == np.uint8 and px.shape == (len(frames), ds.Rows, ds.Columns)
    described = {int(d.SegmentNumber) for d in ds.SegmentSequence}
    assert set(np.unique(px)) <= described, "every stored value is a described segment"
    assert px.any()


def dciodvfy_version() -> str:
    p = subprocess.run(["dciodvfy", "-version"], capture_output=True, text=True)
    m = re.search(r"Version:\s*(\S+)", p.stdout + p.stderr)
    return m.group(1) if m else "unknown"


def test_labelmap_dciodvfy(studies):
    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy (dicom3tools) not installed: scripts/deps.sh installs it")
    _, study, _, _ = studies("axial")
    p = subprocess.run(["dciodvfy", str(study / "seg.dcm")], capture_output=True, text=True)
    out = (p.stdout + p.stderr).splitlines()
    errors = [l for l in out if l.startswith("Error")]
    # dicom3tools 1.00~20220618 (Debian 12) says "Error - Information Object Not found" for the
    # SOP class and then applies the BINARY rule that segment numbers start at 1 (the label
    # map's background is segment 0).
    unknown = [l for l in errors if re.search(r"(?i)Information Object Not found|(unrecogni[sz]ed|unknown|"
                                                r"not recogni|cannot determine|can't determine).*(SOP Class|IOD)", l)]
    if unknown:
        # The one documented skip: this dciodvfy predates the IOD (docs/outputs.md).
        pytest.skip(f"dciodvfy {dciodvfy_version()} does not know the Label Map Segmentation IOD "
                    f"({LABELMAP}, DICOM 2024): {unknown[0]}")
    assert not errors, "dciodvfy errors:\n" + "\n".join(errors)


def test_an_edit_keeps_the_label_map_and_goes_16_bit_past_255_segments(studies, tmp_path):
    _, processed, pet, classes = studies("demo-liver")
    study = tmp_path / processed.name
    shutil.copytree(processed, study)
    les_img = nib.load(str(study / "lesions.nii.gz"))
    lab_img = nib.load(str(study / "labels.nii.gz"))
    labels = np.asarray(lab_img.dataobj).astype(np.int16)
    shape = labels.shape
    # 300 one-voxel lesions on a lattice over the middle slices (lesion class 1),
    # the old lesions back to background; the liver stays.
    lesions = np.zeros(shape, np.int16)
    labels[labels == 1] = 0
    n = 0
    for k in range(shape[2] // 2 - 2, shape[2]):
        for j in range(2, shape[1] - 2, 3):
            for i in range(2, shape[0] - 2, 3):
                if n < 300:
                    n += 1
                    lesions[i, j, k] = n
                    labels[i, j, k] = 1
    assert n == 300
    nib.save(nib.Nifti1Image(lesions, les_img.affine), str(study / "lesions.nii.gz"))
    nib.save(nib.Nifti1Image(labels, lab_img.affine), str(study / "labels.nii.gz"))
    run_edgeseg("remove-lesion", study, 7)
    seg = hd.seg.segread(str(study / "seg.dcm"))
    assert seg.SOPClassUID == LABELMAP, "the edit keeps the kind the study was written with"
    assert (int(seg.BitsAllocated), int(seg.BitsStored), int(seg.HighBit)) == (16, 16, 15)
    lesion_labels = [d.SegmentLabel for d in seg.SegmentSequence if d.SegmentLabel.startswith("Lesion ")]
    assert lesion_labels == [f"Lesion {v}" for v in range(1, 301) if v != 7]
    assert max(seg.segment_numbers) > 255
    lesions[lesions == 7] = 0
    labels[(lesions == 0) & (labels == 1)] = 0
    got_lesions, aff = nifti(study, "lesions.nii.gz")
    assert np.array_equal(got_lesions, lesions.astype(np.int64)), "the edit removed lesion 7 only"
    expected = expected_numbers(seg, lesions.astype(np.int64), labels.astype(np.int64), classes)
    px = by_source_instance(seg, pet)
    for idx, k in enumerate(slice_index(aff, d) for d in pet):
        assert np.array_equal(px[idx].astype(np.int64), plane(expected, k)), f"slice k={k} differs"
    ds = pydicom.dcmread(study / "seg.dcm")
    assert ds.pixel_array.dtype == np.uint16 and int(ds.pixel_array.max()) == max(seg.segment_numbers)
