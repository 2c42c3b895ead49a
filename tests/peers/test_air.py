"""IHE AI Results (AIR) attributes of seg.dcm and rtstruct.dcm, read by
highdicom and pydicom: the Contributing Equipment Sequence (Purpose of
Reference Newcode1/99IHE "Processing Algorithm", device UID from the model's
sha256) and each segment's Tracking ID and UID, the same when the study is
run again (docs/outputs.md)."""

import subprocess
import sys
from pathlib import Path

import highdicom as hd
import pydicom

from conftest import FIXTURES, generate_phantom, run_edgeseg


def ort_lib() -> Path:
    import onnxruntime

    capi = Path(onnxruntime.__file__).parent / "capi"
    return sorted(capi.glob("libonnxruntime.so*"))[0]


def test_air_attributes_read_by_highdicom_and_stable_across_runs(tmp_path):
    model = tmp_path / "model-pkg"
    subprocess.run([sys.executable, str(FIXTURES / "onnx_package.py"), "--out", str(model), "--petct", "--patch", "32"],
                   check=True, capture_output=True)
    truth = generate_phantom(tmp_path / "phantom", "--size", "tiny", "--seed", "23")
    uid = truth["study_instance_uid"]
    runs = []
    for n in (1, 2):
        out = tmp_path / f"out{n}"
        run_edgeseg("process", tmp_path / "phantom" / "dicom", "--model", model / "model", "--out", out,
                    "--onnxruntime", ort_lib())
        runs.append(out / uid)

    devices = set()
    tracking = []
    for study in runs:
        seg = hd.seg.segread(str(study / "seg.dcm"))
        pairs = sorted((seg.get_segment_description(n).tracking_id, seg.get_segment_description(n).tracking_uid)
                       for n in seg.segment_numbers)
        assert pairs and all(t and u for t, u in pairs), pairs
        assert len({u for _, u in pairs}) == len(pairs), "one tracking UID per segment"
        # highdicom finds segments by tracking UID.
        assert seg.get_segment_numbers(tracking_uid=pairs[0][1])
        tracking.append(pairs)
        for name in ("seg.dcm", "rtstruct.dcm"):
            ds = pydicom.dcmread(study / name)
            eq = ds.ContributingEquipmentSequence[0]
            code = eq.PurposeOfReferenceCodeSequence[0]
            assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
                "Newcode1", "99IHE", "Processing Algorithm")
            assert eq.Manufacturer == "edgeseg" and eq.ManufacturerModelName and eq.SoftwareVersions
            devices.add(eq.DeviceUID)
    assert len(devices) == 1, f"one device UID per model package: {devices}"
    assert tracking[0] == tracking[1], "the same lesions keep their tracking IDs and UIDs"
