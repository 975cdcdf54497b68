"""NVIDIA Triton as the serving benchmark's peer (``edgefleet bench serving --peer triton``).

Set-up, in a side virtual environment under ``.bench/triton`` (never the project's): ``nvidia-pytriton
0.7.0`` from PyPI (it bundles tritonserver 2.51 and its Python backend) and ``tritonclient[http]``, plus
onnxruntime and numpy for the model. The model is the same ONNX file the agent serves, run by the
Python backend with ONNX Runtime on one intra-op thread, as many instances as the box has cores,
dynamic batching with no queue delay (what a competent operator configures for latency at low load and
throughput at high load). Known traps of that binary, handled here: it needs the interpreter's LIBDIR
on LD_LIBRARY_PATH, the Python backend stub copied next to the backend, and the venv's site-packages on
the model's ``sys.path``.

The load is driven by ``tritonclient.http.aio`` in the side venv (a closed loop of N callers, the same
shape as the agent's load), and every process's CPU time is read around the run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

VENV = Path(".bench") / "triton"
PACKAGES = ["nvidia-pytriton==0.7.0", "tritonclient[http]", "onnxruntime", "numpy"]

MODEL_PY = '''
import json, sys
sys.path.insert(0, {site!r})
import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession({model!r}, sess_options=opts, providers=["CPUExecutionProvider"])
        self.out = self.session.get_outputs()[0].name

    def execute(self, requests):
        xs = [pb_utils.get_input_tensor_by_name(r, "x").as_numpy() for r in requests]
        y = self.session.run([self.out], {{"x": np.concatenate(xs)}})[0]
        replies, at = [], 0
        for x in xs:
            part = y[at : at + len(x)]
            at += len(x)
            replies.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", part)]))
        return replies
'''

CONFIG = '''
name: "mlp"
backend: "python"
max_batch_size: 32
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 784 ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 10 ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: 0 }}
instance_group [ {{ count: {instances} kind: KIND_CPU }} ]
'''

DRIVER = '''
import asyncio, json, sys, time
import numpy as np
import psutil
import tritonclient.http.aio as httpclient
from tritonclient.http import InferInput, InferRequestedOutput

port, concurrency, seconds, server_pid = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
x = np.random.default_rng(0).random((1, 784), dtype=np.float32)


async def main():
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", conn_limit=max(concurrency, 1))
    lat, done = [], [0]

    async def caller(stop, keep):
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            inp = InferInput("x", [1, 784], "FP32")
            inp.set_data_from_numpy(x, binary_data=True)
            await client.infer("mlp", [inp], outputs=[InferRequestedOutput("y", binary_data=True)])
            if keep:
                lat.append(time.perf_counter() - t0)
                done[0] += 1

    await asyncio.gather(*(caller(time.perf_counter() + 0.5, False) for _ in range(concurrency)))
    procs = {"triton": psutil.Process(server_pid), "client": psutil.Process()}
    cpu0 = {k: sum(p.cpu_times()[:2]) for k, p in procs.items()}
    t0 = time.perf_counter()
    await asyncio.gather(*(caller(t0 + seconds, True) for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    cpu = {k: sum(p.cpu_times()[:2]) - cpu0[k] for k, p in procs.items()}
    await client.close()
    lat.sort()
    n = done[0]
    print(json.dumps({
        "rps": n / wall,
        "p50_ms": 1e3 * lat[n // 2] if n else None,
        "p99_ms": 1e3 * lat[min(n - 1, int(0.99 * n))] if n else None,
        "cpu_ms_per_request": {k: 1e3 * v / n if n else None for k, v in cpu.items()},
    }))


asyncio.run(main())
'''


class TritonUnavailable(RuntimeError):
    """Triton could not be installed or started here; the message says exactly why."""


def _python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> Path:
    """Create the side venv with the packages (once); returns its site-packages."""
    py = _python()
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    probe = [str(py), "-c", "import pytriton, tritonclient.http.aio, onnxruntime, psutil"]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        res = subprocess.run([str(py), "-m", "pip", "install", "-q", *PACKAGES, "psutil"],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise TritonUnavailable(f"pip could not install {PACKAGES} into {VENV}: {res.stderr.strip()[-800:]}")
    out = subprocess.run([str(py), "-c", "import sysconfig, json; print(json.dumps([sysconfig.get_paths()['purelib'], "
                          "sysconfig.get_config_var('LIBDIR'), '%d.%d' % __import__('sys').version_info[:2]]))"],
                         capture_output=True, text=True, check=True)
    site, _, _ = json.loads(out.stdout)
    return Path(site)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Triton:
    """A running tritonserver serving ``model`` (an ONNX file) as ``mlp``; use as a context manager."""

    def __init__(self, model: Path, workdir: Path) -> None:
        self.model = model.resolve()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def __enter__(self) -> Triton:
        site = ensure_venv()
        out = subprocess.run([str(_python()), "-c", "import sysconfig, sys; print(sysconfig.get_config_var('LIBDIR')); "
                              "print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True, check=True)
        libdir, version = out.stdout.split()
        server = site / "pytriton" / "tritonserver"
        backends = self.workdir / "backends"
        if not backends.exists():
            shutil.copytree(server / "backends", backends)
        stub = server / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.exists():
            raise TritonUnavailable(f"pytriton has no Python backend stub for Python {version}")
        shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
        repo = self.workdir / "models" / "mlp"
        (repo / "1").mkdir(parents=True, exist_ok=True)
        (repo / "1" / "model.py").write_text(MODEL_PY.format(site=str(site), model=str(self.model)))
        (repo / "config.pbtxt").write_text(CONFIG.format(instances=os.cpu_count() or 1))
        self.port = _free_port()
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = ":".join(p for p in (libdir, str(site / "nvidia_pytriton.libs"),
                                                      env.get("LD_LIBRARY_PATH", "")) if p)
        env["PYTHONPATH"] = str(site)
        log = (self.workdir / "tritonserver.log").open("wb")
        self.proc = subprocess.Popen(
            [str(server / "bin" / "tritonserver"), f"--model-repository={self.workdir / 'models'}",
             f"--backend-directory={backends}", f"--http-port={self.port}", f"--grpc-port={_free_port()}",
             f"--metrics-port={_free_port()}", "--allow-metrics=false", "--log-verbose=0"],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        end = time.monotonic() + 120
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                tail = (self.workdir / "tritonserver.log").read_text(errors="replace")[-1500:]
                raise TritonUnavailable(f"tritonserver exited with {self.proc.returncode}: {tail}")
            ready = subprocess.run(
                [str(_python()), "-c", f"import urllib.request,sys; sys.exit(0 if urllib.request.urlopen("
                 f"'http://127.0.0.1:{self.port}/v2/models/mlp/ready', timeout=1).status == 200 else 1)"],
                capture_output=True)
            if ready.returncode == 0:
                return self
            time.sleep(1.0)
        raise TritonUnavailable("tritonserver did not report the model ready within 120 s")

    def drive(self, concurrency: int, seconds: float) -> dict[str, Any]:
        """A closed loop of ``concurrency`` tritonclient callers for ``seconds``: rps, p50, p99, CPU."""
        assert self.proc is not None
        script = self.workdir / "driver.py"
        script.write_text(textwrap.dedent(DRIVER))
        out = subprocess.run([str(_python()), str(script), str(self.port), str(concurrency), str(seconds),
                              str(self.proc.pid)], capture_output=True, text=True, timeout=seconds + 120)
        if out.returncode != 0:
            raise TritonUnavailable(f"the tritonclient driver failed: {out.stderr.strip()[-800:]}")
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
