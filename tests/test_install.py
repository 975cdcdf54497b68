"""The device install path of docs/devices.md, tested: build the wheel, ``pip install`` it with a runtime's
extra into a fresh virtual environment, run the systemd unit's own ExecStart from it with
``--check-config``.

The fast variant (in ``make test``) installs with ``--no-index``: the fresh environment sees the
dependencies already installed in this checkout's environment through a folder of links (everything but
edgefleet itself, which comes only from the wheel), so pip resolves the extra's requirements without a
download and the run stays a few seconds. The slow variant installs from the package index, as a device
does (``pytest -m slow``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT_VENV = "/opt/edgefleet/venv"  # where the units expect the install


def build_wheel(out: Path) -> Path:
    """The project's wheel; without build isolation when this environment can build it (offline)."""
    base = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check", "-w", str(out)]
    try:
        import setuptools
        import wheel  # noqa: F401 - its presence is the point

        offline = int(setuptools.__version__.split(".")[0]) >= 68
    except ImportError:
        offline = False
    cmd = [*base, *(["--no-build-isolation"] if offline else []), str(REPO)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    [whl] = out.glob("edgefleet-*.whl")
    return whl


def wheel_contents(whl: Path) -> tuple[set[str], list[str]]:
    """The wheel's top-level import names (from its files, and as its metadata declares them)."""
    with zipfile.ZipFile(whl) as zf:
        names = zf.namelist()
        [top_level] = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        declared = zf.read(top_level).decode().split()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    return tops, declared


def fresh_venv(path: Path, *, see_installed_deps: bool) -> Path:
    """A new environment without pip (this environment's pip installs into it with --python)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    if see_installed_deps:
        links = path / "deps"
        links.mkdir()
        site = Path(sysconfig.get_paths()["purelib"])
        mine = re.compile(r"^(edgefleet|__editable__|agent$|coordinator$|bench$)")
        for entry in site.iterdir():
            if not mine.match(entry.name):
                (links / entry.name).symlink_to(entry)
        purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        Path(purelib, "edgefleet-test-deps.pth").write_text(f"{links}\n")
    return python


def pip_install(python: Path, requirement: str, *, no_index: bool) -> None:
    cmd = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--disable-pip-version-check",
           *(["--no-index"] if no_index else []), requirement]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


def unit_command(unit: str, venv: Path, config: Path) -> list[str]:
    """The unit's ExecStart with its venv and credential path pointed at this test's."""
    text = (REPO / "systemd" / unit).read_text()
    [exec_start] = re.findall(r"^ExecStart=(.+)$", text, re.MULTILINE)
    assert exec_start.startswith(UNIT_VENV + "/bin/"), exec_start
    line = exec_start.replace(UNIT_VENV, str(venv)).replace("${CREDENTIALS_DIRECTORY}", str(config.parent))
    return line.split()


def check_install(tmp_path: Path, *, no_index: bool) -> None:
    wheel = build_wheel(tmp_path / "dist")
    # one top-level package: the roles install as edgefleet.agent, edgefleet.coordinator, edgefleet.bench
    tops, declared = wheel_contents(wheel)
    assert tops == {"edgefleet"} and declared == ["edgefleet"], (tops, declared)
    with zipfile.ZipFile(wheel) as zf:
        files = set(zf.namelist())
    assert {"edgefleet/agent/main.py", "edgefleet/coordinator/main.py", "edgefleet/bench/serving.py",
            "edgefleet/coordinator/perf/calibration.json"} <= files
    venv = tmp_path / "venv"
    python = fresh_venv(venv, see_installed_deps=no_index)
    pip_install(python, f"{wheel}[onnx]", no_index=no_index)
    # edgefleet comes from the wheel, not from this checkout
    where = subprocess.run([str(python), "-c", "import edgefleet.agent, edgefleet.coordinator, edgefleet.bench; "
                            "print(edgefleet.__file__, edgefleet.agent.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert str(REPO) not in where and str(venv) in where
    for generic in ("agent", "coordinator", "bench"):  # nothing of a generic name at the top level
        done = subprocess.run([str(python), "-c", f"import {generic}"], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 1 and "ModuleNotFoundError" in done.stderr, (generic, done.stderr)
    # the catalog and samples come with the wheel: a device can list and fetch the zoo
    listed = subprocess.run([str(venv / "bin" / "edgefleet"), "models", "show", "ocr-cls"], capture_output=True,
                            text=True, cwd=tmp_path, env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
                            timeout=60)
    assert listed.returncode == 0 and "sizes: [N, 3, 48, 192]" in listed.stdout, listed.stdout + listed.stderr
    samples = venv / "share" / "edgefleet" / "models" / "samples"
    assert {p.name for p in samples.iterdir()} >= {"grace_hopper_256.jpg", "printed_text.png", "speech_en_16k.wav"}

    credentials = tmp_path / "credentials"
    credentials.mkdir()
    example = (REPO / "config" / "agent.example.toml").read_text()
    (credentials / "agent.toml").write_text(example.replace("[agent]\n", '[agent]\nruntimes = ["onnxruntime"]\n', 1))
    state = tmp_path / "var-lib" / "edgefleet-agent"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "STATE_DIRECTORY": str(state),
           "EDGEFLEET_DATA_DIR": str(tmp_path / "cache")}
    cmd = unit_command("edgefleet-agent.service", venv, credentials / "agent.toml")
    done = subprocess.run([*cmd, "--check-config"], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "runtime onnxruntime: ok" in done.stdout
    assert f"state_dir: ok ({state})" in done.stdout  # the unit's StateDirectory=, not a path to edit

    # a config naming a runtime the install lacks is refused, before anything starts
    (credentials / "agent.toml").write_text(example.replace("[agent]\n", '[agent]\nruntimes = ["edgetpu"]\n', 1))
    done = subprocess.run([*cmd, "--check-config"], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and "runtime edgetpu:" in done.stdout

    coordinator = unit_command("edgefleet-coordinator.service", venv, credentials / "coordinator.toml")
    assert subprocess.run([coordinator[0], "--help"], capture_output=True, timeout=60, cwd=tmp_path).returncode == 0


@pytest.mark.skipif(shutil.which("pip") is None and not (Path(sys.executable).parent / "pip").exists(),
                    reason="pip is not available")
def test_wheel_with_the_onnx_extra_installs_and_the_unit_checks_its_config(tmp_path: Path) -> None:
    check_install(tmp_path, no_index=True)


@pytest.mark.slow
def test_wheel_installs_from_the_package_index_into_a_bare_venv(tmp_path: Path) -> None:
    check_install(tmp_path, no_index=False)
