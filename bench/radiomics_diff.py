"""PyRadiomics' features against edgeseg's, for bench/radiomics.sh: the
largest relative difference and whether the feature names are the same.
Either two JSON objects (one case: PyRadiomics' features, edgeseg's --json)
or two batch CSVs (pyradiomics' and edgeseg's --csv, row by row).

    python bench/radiomics_diff.py PYRADIOMICS_OUT EDGESEG_OUT
"""
import csv
import json
import math
import sys

SKIP = ("Image", "Mask")


def rows(path):
    if path.endswith(".json"):
        return [json.load(open(path))]
    return list(csv.DictReader(open(path)))


def features(row):
    return sorted(k for k in row if k not in SKIP and not k.startswith("diagnostics_"))


ref, got = rows(sys.argv[1]), rows(sys.argv[2])
assert len(ref) == len(got), f"{len(ref)} rows against {len(got)}"
worst, name, n, same = 0.0, "", 0, True
for r, g in zip(ref, got):
    same &= features(r) == features(g)
    for k in features(r):
        a, b = float(r[k]), float(g.get(k, "nan"))
        n += 1
        if math.isnan(a) and math.isnan(b):
            continue
        d = abs(a - b) / max(abs(a), abs(b), 1e-300)
        if not d <= worst:
            worst, name = d, k
print(f"  {len(ref)} row(s), {n} values compared; largest relative difference {worst:.2e} ({name}); names equal: {same}")
