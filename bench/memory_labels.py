#!/usr/bin/env python3
"""The label map bench/memory.sh's own-spacing cases must give, from the image alone.

    python bench/memory_labels.py INPUT.nii.gz OUTPUT.nii.gz CLASSES

At the input's own spacing nothing is resampled and the networks of
bench/make_large_ct.py are point-wise, so every tile covering a voxel gives it
the same logits and the Gaussian-weighted sum keeps their order: the label is a
function of the voxel's HU alone (CTNormalization with the fixture's
percentiles, then 2 classes: lesion where the normalised value is > 0;
3 classes: the nearest of the folds' air / soft tissue / bone centres, which
the folds' small shifts do not change for the image's four HU values).
Written with numpy + nibabel from the fixture's constants, not by edgeseg.
Prints 'labels as expected' or how many voxels differ; exit 1 if any do.
"""
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "fixtures"))
from onnx_package import MEAN, P005, P995, STD  # noqa: E402


def main() -> None:
    image, labels, classes = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    hu = np.asarray(nib.load(str(image)).dataobj)
    x = (np.clip(hu.astype(np.float32), P005, P995) - MEAN) / STD
    if classes == 2:
        want = (x > 0).astype(np.uint8)
    else:
        # Fold 0's centres; folds 1-4 move them by at most 40 HU.
        centres = np.array([(-1000.0 - MEAN) / STD, 0.0, (700.0 - MEAN) / STD], np.float32)
        want = np.argmin(np.abs(x[..., None] - centres), axis=-1).astype(np.uint8)
        del x
    got = np.asarray(nib.load(str(labels)).dataobj)
    if got.shape != want.shape:
        print(f"labels have shape {got.shape}, the image {want.shape}")
        sys.exit(1)
    bad = int(np.count_nonzero(got != want))
    counts = ", ".join(f"{c}: {int(np.count_nonzero(want == c))}" for c in range(classes))
    print("labels as expected" + f" ({counts})" if bad == 0 else f"labels DIFFER from the expected in {bad} voxels")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
