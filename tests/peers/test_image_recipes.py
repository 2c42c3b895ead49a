"""The image recipes under image-recipes/.

- mkosi: Debian's mkosi (14, bookworm) reads the configuration (`mkosi
  summary`) and reports the distribution, release, format, packages, extra
  tree and post-install script the README promises; the preset enables the
  unit the package ships, and the post-install script installs the package
  from where build.sh puts it.
- Yocto: no BitBake here (see its README). The layer's files are checked as
  BitBake assignment syntax line by line, their key variables against what the
  layer promises, and every file the recipe installs against the source tree
  and the Debian package's asset list (the same files at the same places).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MKOSI = ROOT / "image-recipes" / "mkosi"
LAYER = ROOT / "image-recipes" / "yocto" / "meta-edgeseg"


# ---------------------------------------------------------------- mkosi


@pytest.fixture(scope="module")
def summary() -> dict[str, list[str]]:
    if shutil.which("mkosi") is None:
        pytest.fail("mkosi missing: scripts/deps.sh installs Debian's mkosi")
    # mkosi 14 prints the summary on stderr.
    p = subprocess.run(["mkosi", "summary"], cwd=MKOSI, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stdout
    # "   Key: value" lines, continuation lines indented under the value.
    out: dict[str, list[str]] = {}
    key = None
    for line in p.stdout.splitlines():
        m = re.match(r"^\s*([A-Za-z][A-Za-z0-9 ()/.-]*?):\s(.*)$", line)
        if m and not line.startswith(" " * 28):
            key = m.group(1).strip()
            out[key] = [m.group(2).strip()] if m.group(2).strip() else []
        elif key and line.strip():
            out[key].append(line.strip())
    return out


def test_mkosi_reads_the_configuration(summary):
    assert summary["Distribution"] == ["debian"]
    assert summary["Release"] == ["bookworm"]
    assert summary["Output Format"] == ["gpt_ext4"]
    assert summary["Bootable"] == ["yes"]
    for pkg in ("systemd", "dbus", "linux-image-amd64", "libsystemd0", "init-system-helpers", "curl"):
        assert pkg in summary["Packages"], f"{pkg} not in {summary['Packages']}"
    assert summary["Extra Trees"] == [str(MKOSI / "mkosi.extra")]
    assert summary["Postinstall Script"] == [str(MKOSI / "mkosi.postinst")]


def test_mkosi_enables_the_packaged_unit():
    preset = (MKOSI / "mkosi.extra/usr/lib/systemd/system-preset/50-edgeseg.preset").read_text()
    assert "enable edgeseg.service" in preset.splitlines()
    postinst = (MKOSI / "mkosi.postinst").read_text()
    build = (MKOSI / "build.sh").read_text()
    # build.sh puts the .deb where mkosi.postinst installs it from.
    assert "mkosi.extra/var/cache/edgeseg/edgeseg.deb" in build
    assert "dpkg -i /var/cache/edgeseg/edgeseg.deb" in postinst
    assert "systemctl preset edgeseg.service" in postinst
    assert subprocess.run(["sh", "-n", MKOSI / "mkosi.postinst"]).returncode == 0
    assert subprocess.run(["bash", "-n", MKOSI / "build.sh"]).returncode == 0
    # The unit the preset names is the one the package installs.
    deb = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["metadata"]["deb"]
    assert ["systemd/edgeseg.service", "usr/lib/systemd/system/edgeseg.service", "644"] in deb["assets"]


# ---------------------------------------------------------------- Yocto

ASSIGN = re.compile(
    r"""^(export\s+)?[A-Za-z_][A-Za-z0-9_\-]*(\[[a-z_-]+\])?(:[A-Za-z0-9_${}\-]+)*"""
    r"""\s*(=|\?=|\?\?=|:=|\+=|=\+|\.=|=\.)\s*"(.*)$"""
)
FUNC = re.compile(r"^([a-z_][a-z0-9_]*)(:(append|prepend))?\s*\(\)\s*\{\s*$")


def parse_bitbake(path: Path) -> dict[str, str]:
    """Assignments of a .conf/.bb (values joined over continuations); fails on
    any line that is none of: assignment, continuation, comment, blank,
    inherit/include/require, shell function."""
    values: dict[str, str] = {}
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        if not s or s.startswith("#"):
            i += 1
            continue
        if re.match(r"^(inherit|include|require)\s+\S", s):
            values.setdefault("__" + s.split()[0], "")
            values["__" + s.split()[0]] += " " + " ".join(s.split()[1:])
            i += 1
            continue
        if FUNC.match(line):
            i += 1
            while i < len(lines) and lines[i] != "}":
                i += 1
            assert i < len(lines), f"{path.name}: function not closed"
            i += 1
            continue
        m = ASSIGN.match(line)
        assert m, f"{path.name}:{i + 1}: not a BitBake assignment: {line!r}"
        name = line.split("=")[0].split("?")[0].split("+")[0].split(".")[0].strip().removeprefix("export").strip()
        value = m.group(5)
        while value.endswith("\\"):
            i += 1
            value = value[:-1] + " " + lines[i].strip()
        assert value.endswith('"'), f"{path.name}:{i + 1}: value not closed: {value!r}"
        values[name] = (values.get(name, "") + " " + value[:-1]).strip()
        i += 1
    return values


def test_layer_conf():
    v = parse_bitbake(LAYER / "conf/layer.conf")
    assert v["BBFILE_COLLECTIONS"] == "edgeseg"
    assert v["LAYERSERIES_COMPAT_edgeseg"] == "scarthgap"
    assert set(v["LAYERDEPENDS_edgeseg"].split()) == {"core", "tegra", "tegra-community"}
    assert v["BBFILE_PATTERN_edgeseg"] == "^${LAYERDIR}/"


def test_recipe():
    bb = LAYER / "recipes-edgeseg/edgeseg/edgeseg_0.1.0.bb"
    v = parse_bitbake(bb)
    assert set(v["__inherit"].split()) >= {"cargo", "cargo-update-recipe-crates", "systemd", "useradd"}
    assert v["SYSTEMD_SERVICE:${PN}"] == "edgeseg.service"
    assert "--features ${EDGESEG_CARGO_FEATURES}" in v["CARGO_BUILD_FLAGS:append"]
    assert v["EDGESEG_CARGO_FEATURES"] == "tensorrt"
    rdeps = set(v["RDEPENDS:${PN}"].split())
    assert {"onnxruntime", "tensorrt-core", "cudnn", "cuda-cudart"} <= rdeps
    assert v["LICENSE"] == tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["license"]
    # Every ${S}/... file it installs exists in the tree, at the place the .deb puts it.
    text = bb.read_text()
    sources = sorted(set(re.findall(r"\$\{S\}/([A-Za-z0-9_./*-]+)", text)))
    assert sources, "the recipe installs nothing from the tree"
    for src in sources:
        if "*" in src:
            assert list(ROOT.glob(src)), f"{src}: nothing in the tree"
        else:
            assert (ROOT / src).exists(), f"{src} missing from the tree"
    deb = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["metadata"]["deb"]["assets"]
    packaged = {a[0] for a in deb}
    for src in sources:
        assert src in packaged, f"{src} is installed by Yocto but not by the .deb"


def test_packagegroup():
    v = parse_bitbake(LAYER / "recipes-edgeseg/packagegroups/packagegroup-edgeseg.bb")
    assert "packagegroup" in v["__inherit"]
    assert "edgeseg" in v["RDEPENDS:${PN}"].split()
