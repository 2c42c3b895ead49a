"""The Debian package, judged by dpkg itself (slow: a release build and a
Debian root; run by scripts/test-package.sh, or with EDGESEG_SLOW=1).

- `dpkg-deb --contents` lists every asset at its path with its mode, and the
  demo model's files byte for byte;
- `dpkg-deb --field` / the control archive: name, version, architecture,
  Depends (libsystemd0, systemd, the shared libraries found by dpkg-shlibdeps),
  the configuration as a conffile, maintainer scripts that never start the
  service;
- installed with `dpkg -i` into a Debian bookworm root made by debootstrap
  (scripts/debian-root.sh, cached outside the clone) where systemd is not
  running: postinst succeeds, creates the user and folders and enables the
  unit; `systemd-analyze verify` accepts the installed unit; `edgeseg
  --version` and `edgeseg check-config /etc/edgeseg/edgeseg.toml` run in the
  chroot; `dpkg --purge` removes the configuration, journal and engine cache
  but keeps the results and the quarantine.

EDGESEG_PACKAGE_ROOT may name another source tree to package (default: this one).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(os.environ.get("EDGESEG_PACKAGE_ROOT", ROOT))

pytestmark = pytest.mark.skipif(
    os.environ.get("EDGESEG_SLOW") != "1",
    reason="slow (release build, debootstrap): scripts/test-package.sh or EDGESEG_SLOW=1",
)

ASSETS = {
    "/usr/bin/edgeseg": "-rwxr-xr-x",
    "/usr/lib/edgeseg/libonnxruntime.so": "-rw-r--r--",
    "/usr/lib/systemd/system/edgeseg.service": "-rw-r--r--",
    "/usr/lib/sysusers.d/edgeseg.conf": "-rw-r--r--",
    "/usr/lib/tmpfiles.d/edgeseg.conf": "-rw-r--r--",
    "/usr/share/dbus-1/system.d/org.edgeseg.Daemon1.conf": "-rw-r--r--",
    "/etc/edgeseg/edgeseg.toml": "-rw-r--r--",
    "/usr/share/edgeseg/grafana-dashboard.json": "-rw-r--r--",
    "/usr/share/edgeseg/edgeseg-alerts.yml": "-rw-r--r--",
    "/usr/share/doc/edgeseg/README.md": "-rw-r--r--",
    "/usr/share/doc/edgeseg/install.md": "-rw-r--r--",
    "/usr/share/doc/edgeseg/RELIABILITY.md": "-rw-r--r--",
    "/usr/share/doc/edgeseg/copyright": "-rw-r--r--",
    "/usr/share/doc/edgeseg/onnxruntime-LICENSE": "-rw-r--r--",
    "/usr/share/doc/edgeseg/onnxruntime-ThirdPartyNotices.txt": "-rw-r--r--",
}


def run(*cmd, check=True, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def deb() -> Path:
    env = dict(os.environ, CARGO_TARGET_DIR=os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target")))
    p = run(SRC / "scripts" / "package.sh", env=env, timeout=3600)
    path = Path(p.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.suffix == ".deb", p.stdout
    return path


def contents(deb: Path) -> dict[str, tuple[str, int]]:
    """path -> (mode string, size) from dpkg-deb --contents."""
    out = {}
    for line in run("dpkg-deb", "--contents", deb).stdout.splitlines():
        parts = line.split(None, 5)
        mode, size, name = parts[0], int(parts[2]), parts[5].split(" -> ")[0]
        out[name.lstrip(".").rstrip("/") or "/"] = (mode, size)
    return out


def test_every_asset_is_at_its_path(deb):
    c = contents(deb)
    missing = [p for p in ASSETS if p not in c]
    assert not missing, f"not in the package: {missing}"
    wrong = {p: (c[p][0], m) for p, m in ASSETS.items() if c[p][0] != m}
    assert not wrong, f"modes (found, wanted): {wrong}"
    model = SRC / "models" / "demo-petct"
    for f in sorted(model.iterdir()):
        p = f"/usr/share/edgeseg/models/demo-petct/{f.name}"
        assert p in c, f"{p} missing"
        assert c[p][1] == f.stat().st_size, f"{p}: {c[p][1]} bytes, {f.stat().st_size} in the tree"
    for f in ("systemd/edgeseg.service", "systemd/edgeseg.toml"):
        assert (SRC / f).exists(), f"{f} is packaged from the tree"


def test_metadata(deb):
    field = lambda name: run("dpkg-deb", "--field", deb, name).stdout.strip()  # noqa: E731
    assert field("Package") == "edgeseg"
    assert field("Version").startswith("0.1.0")
    assert field("Architecture") == run("dpkg", "--print-architecture").stdout.strip()
    assert field("Section") == "science" and field("Priority") == "optional"
    assert "@" in field("Maintainer")
    depends = field("Depends")
    # procps: /bin/kill, the unit's ExecReload= (not in a minbase system).
    for d in ("libsystemd0", "systemd", "libc6", "procps"):
        assert d in depends, f"Depends lacks {d}: {depends}"
    info = run("dpkg-deb", "--info", deb).stdout
    for script in ("postinst", "prerm", "postrm"):
        assert script in info, f"no {script}:\n{info}"


def test_control_scripts(deb, tmp_path):
    run("dpkg-deb", "--control", deb, tmp_path / "DEBIAN")
    ctrl = tmp_path / "DEBIAN"
    assert (ctrl / "conffiles").read_text().split() == ["/etc/edgeseg/edgeseg.toml"]
    for script in ("postinst", "prerm", "postrm"):
        s = ctrl / script
        assert os.access(s, os.X_OK), f"{script} not executable"
        run("sh", "-n", s)
    postinst = (ctrl / "postinst").read_text()
    assert "deb-systemd-helper enable" in postinst
    assert "systemd-sysusers" in postinst and "systemd-tmpfiles --create" in postinst
    # Enabled, never started on a first installation.
    assert "invoke start" not in postinst and "systemctl start" not in postinst


@pytest.fixture(scope="module")
def debian_root(tmp_path_factory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("chroot and debootstrap need root")
    p = run(ROOT / "scripts" / "debian-root.sh", timeout=1800)
    tar = Path(p.stdout.strip().splitlines()[-1])
    root = tmp_path_factory.mktemp("debian") / "root"
    root.mkdir()
    # tar keeps owners and the device-free /dev of a minbase root.
    run("tar", "-C", root, "-xf", tar)
    return root


def wants_links(root: Path) -> list[Path]:
    """The enablement symlinks of edgeseg.service (absolute links into the
    root: dangling seen from the host, so found by name, not by glob)."""
    etc = root / "etc" / "systemd" / "system"
    return [
        etc / d / "edgeseg.service"
        for d in os.listdir(etc)
        if d.endswith(".wants") and (etc / d / "edgeseg.service").is_symlink()
    ]


def chroot(root: Path, *cmd, check=True) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    return run("chroot", root, *cmd, check=check, env=env)


def test_install_check_and_purge_in_a_debian_root(deb, debian_root):
    root = debian_root
    shutil.copy(deb, root / "tmp" / "edgeseg.deb")
    assert not (root / "run" / "systemd" / "system").exists(), "systemd must not look as if it runs"
    p = chroot(root, "dpkg", "-i", "/tmp/edgeseg.deb")
    print(p.stdout, p.stderr)

    # The user, the folders (tmpfiles) and the enabled, unstarted unit.
    assert chroot(root, "getent", "passwd", "edgeseg").stdout.startswith("edgeseg:")
    wants = wants_links(root)
    assert [w.parent.name for w in wants] == ["multi-user.target.wants"], f"enabled as {wants}"
    assert os.readlink(wants[0]).endswith("/systemd/system/edgeseg.service")
    assert (root / "var" / "lib" / "edgeseg").is_dir(), "state folder not created by tmpfiles"
    assert not (root / "run" / "edgeseg" / "edgeseg.pid").exists()
    conf = root / "etc" / "edgeseg" / "edgeseg.toml"
    st = conf.stat()
    assert oct(st.st_mode & 0o777) == "0o640", oct(st.st_mode)
    assert chroot(root, "stat", "-c", "%G", "/etc/edgeseg/edgeseg.toml").stdout.strip() == "edgeseg"

    # The unit as systemd would load it from that root.
    v = run("systemd-analyze", "verify", f"--root={root}", "edgeseg.service", check=False)
    print("systemd-analyze verify:", v.returncode, v.stdout, v.stderr)
    assert v.returncode == 0, v.stderr

    version = chroot(root, "edgeseg", "--version").stdout
    assert "0.1.0" in version, version
    cc = chroot(root, "edgeseg", "check-config", "/etc/edgeseg/edgeseg.toml", check=False)
    assert cc.returncode == 0, f"check-config: {cc.stdout}\n{cc.stderr}"
    # The shipped ONNX Runtime library is the one the config names.
    assert (root / "usr" / "lib" / "edgeseg" / "libonnxruntime.so").stat().st_size > 1_000_000

    # What the service would have made, then purge.
    state = root / "var" / "lib" / "edgeseg"
    results = state / "results" / "1.2.3.4"
    results.mkdir(parents=True, exist_ok=True)
    (results / "report.json").write_text("{}")
    (state / "results" / ".staging-1.2.3.5-99").mkdir()
    (state / "quarantine" / "abc").mkdir(parents=True, exist_ok=True)
    (state / "quarantine" / "abc" / "reason.txt").write_text("reason: test")
    (state / "journal.sqlite").write_text("x")
    (state / "engine-cache" / "0011-fp32").mkdir(parents=True, exist_ok=True)
    chroot(root, "dpkg", "--purge", "edgeseg")
    assert not (root / "usr" / "bin" / "edgeseg").exists()
    assert not (root / "etc" / "edgeseg").exists(), "purge keeps /etc/edgeseg"
    assert not (state / "journal.sqlite").exists(), "purge keeps the journal"
    assert not (state / "engine-cache").exists(), "purge keeps the engine cache"
    assert not (state / "results" / ".staging-1.2.3.5-99").exists(), "purge keeps an unfinished study"
    assert (results / "report.json").read_text() == "{}", "purge removed a result"
    assert (state / "quarantine" / "abc" / "reason.txt").exists(), "purge removed the quarantine"
    assert not wants_links(root), "purge left the unit enabled"
