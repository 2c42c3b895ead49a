"""Shared helpers for the peer tests: where the edgeseg binary and the fixture
generators are, and a session-wide cache of generated phantoms."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def edgeseg_bin() -> Path:
    b = Path(os.environ.get("EDGESEG_BIN", ROOT / "target" / "debug" / "edgeseg"))
    if not b.exists():
        pytest.fail(f"edgeseg binary {b} not built (run cargo build first or set EDGESEG_BIN)")
    return b


def run_edgeseg(*args, check=True):
    p = subprocess.run([str(edgeseg_bin()), *map(str, args)], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"edgeseg {' '.join(map(str, args))} exited {p.returncode}\n{p.stderr}")
    return p


def generate_phantom(out: Path, *flags: str) -> dict:
    """Writes a phantom with the independent generator (pydicom) and returns its truth."""
    if not (out / "truth" / "truth.json").exists():
        subprocess.run([sys.executable, str(FIXTURES / "phantom.py"), "--out", str(out), "-q", *flags], check=True)
    return json.loads((out / "truth" / "truth.json").read_text())


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory):
    cache = {}
    base = tmp_path_factory.mktemp("phantoms")

    def get(*flags: str):
        key = " ".join(flags)
        if key not in cache:
            d = base / (key.replace(" ", "_").replace("-", "") or "default")
            cache[key] = (d, generate_phantom(d, *flags))
        return cache[key]

    return get
