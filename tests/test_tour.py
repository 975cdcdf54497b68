"""The README's five-minute tour, command by command, against a fresh state folder and config folder.

The commands are read from the README's tour block itself, so the README cannot drift from what works.
Each runs as a user would type it (through bash, with the virtual environment on PATH and nothing else
set up): ``eval "$(...)"`` lines export into the following commands, lines ending in ``&`` start
background processes (the test waits until each is up, as a user would look), ``kill`` ends them. Only
the simulation (``edgefleet sim --live``, its own test in test_sim_live.py) is left out.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgefleet.zoo.paths import data_dir, local_catalog_path

pytestmark = [pytest.mark.broker]

REPO = Path(__file__).resolve().parents[1]
SKIPPED = ("edgefleet sim ",)


def tour_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    block = readme.split("## A five-minute tour", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    out = []
    for line in block.splitlines():
        command = re.sub(r"\s+#.*$", "", line).strip()  # no '#' inside the tour's commands
        if command and not command.startswith(SKIPPED):
            out.append(command)
    return out


@dataclass
class Shell:
    env: dict[str, str]
    work: Path
    background: list[subprocess.Popen[bytes]] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)

    def run(self, command: str, timeout_s: float = 120.0) -> str:
        done = subprocess.run(["bash", "-c", command], cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=timeout_s)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        self.outputs[command] = done.stdout
        return done.stdout

    def start(self, command: str) -> None:
        log = (self.work / f"bg-{len(self.background)}.log").open("wb")
        self.background.append(subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=REPO, env=self.env,
                                                stdout=log, stderr=subprocess.STDOUT))

    def status(self) -> dict[str, object] | None:
        done = subprocess.run(["bash", "-c", "edgefleet status --json --timeout 3"], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=30)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def wait_online(self, devices: int, timeout_s: float = 60.0) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            status = self.status()
            if status is not None and sum(bool(d["online"]) for d in status["devices"]) >= devices:  # type: ignore[index, union-attr]
                return
            time.sleep(0.5)
        logs = "\n".join(p.read_text()[-2000:] for p in sorted(self.work.glob("bg-*.log")))
        raise AssertionError(f"{devices} device(s) not online within {timeout_s} s\n{logs}")

    def stop(self) -> None:
        for proc in self.background:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.background:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture()
def shell(tmp_path: Path) -> Iterator[Shell]:
    zoo = data_dir()
    if not local_catalog_path(zoo).is_file():
        pytest.skip(f"the model zoo is not fetched into {zoo} (make zoo)")
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),  # a fresh user: no state, no client config, no broker address
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "PYTHONUNBUFFERED": "1",
    }
    if os.environ.get("EDGEFLEET_DATA_DIR"):  # a worktree without its own .data shares one
        env["EDGEFLEET_DATA_DIR"] = os.environ["EDGEFLEET_DATA_DIR"]
    sh = Shell(env, tmp_path)
    yield sh
    sh.stop()
    broker_pid = sh.env.get("EDGEFLEET_BROKER_PID")
    if broker_pid:
        subprocess.run(["kill", broker_pid], capture_output=True)


def test_the_readme_tour_runs_as_written(shell: Shell) -> None:
    commands = tour_commands()
    assert any(c.startswith("eval") for c in commands) and any(c.endswith("&") for c in commands)
    agents = 0
    for command in commands:
        if command.startswith(". ") and command.endswith("activate"):
            continue  # the environment already has the virtual environment on PATH
        if command.startswith("eval "):
            inner = shlex.split(command)[1]
            assert inner.startswith("$(") and inner.endswith(")")
            out = shell.run(inner[2:-1])
            for key, value in re.findall(r"^export (\w+)=(\S+)$", out, re.MULTILINE):
                shell.env[key] = shlex.split(value)[0]
            continue
        if command.startswith("kill "):
            shell.stop()
            if "$EDGEFLEET_BROKER_PID" in command:
                shell.run(f"kill {shell.env['EDGEFLEET_BROKER_PID']}")
                shell.env.pop("EDGEFLEET_BROKER_PID")
            continue
        if command.endswith("&"):
            shell.start(command[:-1].strip())
            if command.startswith("edgefleet-agent"):
                agents += 1
                shell.wait_online(agents)
            continue
        shell.run(command)

    out = shell.outputs
    assert "ocr-cls" in out["edgefleet models list"] and "x:float32[N, 3, 48, 192]" in out["edgefleet models list"]
    assert "sizes: [N, 3, 48, 192]" in out["edgefleet models show ocr-cls"]
    deploy = next(v for k, v in out.items() if k.startswith("edgefleet deploy doc-angle"))
    migrate = next(v for k, v in out.items() if k.startswith("edgefleet migrate doc-angle"))
    assert "edge-0" in deploy and "edge-02" in migrate
    assert "doc-angle" in out["edgefleet status"] and "edge-01" in out["edgefleet status"]
    # what went right was said at INFO, once: deploys and undeploys on both sides
    coordinator, edge1, edge2 = ((shell.work / f"bg-{i}.log").read_text() for i in range(3))
    assert coordinator.count("INFO") and "tenant doc-angle -> edge-01" in coordinator
    assert coordinator.count("tenant doc-angle undeployed from edge-02") == 1
    assert edge1.count("deployed doc-angle (ocr-cls:fp32") == 1 and edge1.count("undeployed doc-angle") == 1
    assert edge2.count("deployed doc-angle (ocr-cls:fp32") == 1 and edge2.count("undeployed doc-angle") == 1
    # a fresh state folder: everything the coordinator and the agents kept is under it
    state = Path(shell.env["XDG_STATE_HOME"])
    kept = {p.name for p in state.rglob("*.db")}
    assert {"coordinator.db", "agent.db"} <= kept, kept
