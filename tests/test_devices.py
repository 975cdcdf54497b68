"""Accelerators and device telemetry: ONNX Runtime provider probing, the Edge TPU runtime, accelerator and
board detection, and the choice of telemetry collector.

The vendor packages (onnxruntime-gpu, ai_edge_litert's delegate, pycoral, nvidia-ml-py, jetson-stats)
are replaced by small modules with the same names, signatures and exception behaviour, installed in
``sys.modules``; where the real package is here (onnxruntime on the CPU, the missing libedgetpu) the real
one is exercised too.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefleet.agent.collectors import select_collector
from edgefleet.agent.collectors.jtop import JtopCollector, parse_stats
from edgefleet.agent.collectors.nvml import NvmlCollector
from edgefleet.agent.collectors.psutil_collector import PsutilCollector
from edgefleet.runtime import (
    ModelLoadError,
    RuntimeMissing,
    SessionOptions,
    edgetpu,
    providers,
    registry,
    runtime_for_file,
)
from edgefleet.runtime.base import CPU_PROVIDER
from edgefleet.runtime.detect import detect_accelerators, device_kind

TRT, CUDA = providers.TENSORRT_PROVIDER, providers.CUDA_PROVIDER


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    def clear() -> None:
        providers.forget_probes()
        edgetpu.check_available.cache_clear()
        registry._importable.cache_clear()

    clear()
    yield
    clear()


def _install(monkeypatch: pytest.MonkeyPatch, name: str, module: types.ModuleType | None) -> None:
    """Put ``module`` in sys.modules under ``name`` (None: importing ``name`` raises ImportError)."""
    monkeypatch.setitem(sys.modules, name, module)


def _no_vendor(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    for name in names:
        _install(monkeypatch, name, None)


# -- onnxruntime double ------------------------------------------------------------------------------------
class _NodeArg:
    def __init__(self, name: str) -> None:
        self.name, self.type, self.shape = name, "tensor(float)", [1, 8]


def fake_onnxruntime(*, compiled: list[str], broken: dict[str, str]) -> types.ModuleType:
    """onnxruntime as a Jetson wheel behaves: ``get_available_providers`` lists what was compiled in; a
    provider in ``broken`` either falls back at session creation ("fallback") or fails when run ("run")."""
    ort = types.ModuleType("onnxruntime")
    vars(ort)["sessions"] = []

    class SessionOptions:
        def __init__(self) -> None:
            self.log_severity_level = 2
            self.intra_op_num_threads = 0
            self.inter_op_num_threads = 0
            self.entries: dict[str, str] = {}

        def add_session_config_entry(self, key: str, value: str) -> None:
            self.entries[key] = value

    class InferenceSession:
        def __init__(
            self,
            path_or_bytes: str | bytes,
            sess_options: SessionOptions | None = None,
            providers: list[Any] | None = None,
            provider_options: list[dict[Any, Any]] | None = None,
            **kwargs: Any,
        ) -> None:
            self.requested = list(providers or [CPU_PROVIDER])
            names = [p[0] if isinstance(p, tuple) else p for p in self.requested]
            self.in_use = [p for p in names if broken.get(p) != "fallback" and p in compiled]
            if CPU_PROVIDER not in self.in_use:
                self.in_use.append(CPU_PROVIDER)  # onnxruntime always keeps the CPU as the last resort
            self.fallback = True
            ort.sessions.append(self)

        def get_providers(self) -> list[str]:
            return list(self.in_use)

        def disable_fallback(self) -> None:
            self.fallback = False

        def get_inputs(self) -> list[_NodeArg]:
            return [_NodeArg("x")]

        def get_outputs(self) -> list[_NodeArg]:
            return [_NodeArg("y")]

        def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            if broken.get(self.in_use[0]) == "run":
                raise RuntimeError(
                    "CUDA failure 209: no kernel image is available for execution on the device"
                )
            return [feeds["x"] + feeds["x"]]

    vars(ort)["SessionOptions"] = SessionOptions
    vars(ort)["InferenceSession"] = InferenceSession
    vars(ort)["get_available_providers"] = lambda: list(compiled)
    vars(ort)["ExecutionMode"] = types.SimpleNamespace(ORT_SEQUENTIAL=0)
    vars(ort)["GraphOptimizationLevel"] = types.SimpleNamespace(ORT_ENABLE_ALL=99)
    return ort


def test_probe_model_is_valid_onnx_and_runs_on_the_real_cpu_provider() -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(providers.probe_model())
    onnx.checker.check_model(model)
    probe = providers.prove_provider(CPU_PROVIDER)  # the real onnxruntime
    assert probe.ok, probe.reason


def test_real_onnxruntime_without_gpu_keeps_only_the_cpu(tmp_path: Path) -> None:
    import onnxruntime

    if {TRT, CUDA} & set(onnxruntime.get_available_providers()):
        pytest.skip("this onnxruntime build has GPU providers")
    assert providers.probe_providers(providers.GPU_ORDER) == [CPU_PROVIDER]
    reasons = {p.provider: p.reason for p in providers.proven()}
    assert reasons == {TRT: providers.NOT_COMPILED, CUDA: providers.NOT_COMPILED}
    pytest.importorskip("onnx")
    from edgefleet.bench.mlp import build_mlp
    from edgefleet.runtime import get_runtime

    session = get_runtime("onnxruntime").open(
        build_mlp(tmp_path / "mlp.onnx"), SessionOptions(providers=providers.GPU_ORDER)
    )
    assert getattr(session, "providers", None) == (CPU_PROVIDER,)
    session.close()


def test_listed_providers_are_kept_only_when_a_real_run_proves_them(tmp_path: Path) -> None:
    ort = fake_onnxruntime(compiled=[TRT, CUDA, CPU_PROVIDER], broken={TRT: "fallback"})
    chosen = providers.probe_providers([TRT, CUDA, CPU_PROVIDER], ort=ort, cache_dir=tmp_path / "engines")
    assert chosen == [CUDA, CPU_PROVIDER]
    trt_session = ort.sessions[0]
    name, options = trt_session.requested[0]
    assert name == TRT
    assert options == {
        "trt_fp16_enable": "True",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(tmp_path / "engines"),
    }
    assert (tmp_path / "engines").is_dir()
    assert all(s.fallback is False for s in ort.sessions[1:])
    # proven once per process: asking again opens no session
    before = len(ort.sessions)
    assert providers.probe_providers([TRT, CUDA], ort=ort, cache_dir=tmp_path / "engines") == chosen
    assert len(ort.sessions) == before


def test_a_provider_whose_run_fails_is_dropped_and_the_reason_kept(tmp_path: Path) -> None:
    ort = fake_onnxruntime(compiled=[CUDA, CPU_PROVIDER], broken={CUDA: "run"})
    assert providers.probe_providers([CUDA], ort=ort) == [CPU_PROVIDER]
    (probe,) = providers.proven()
    assert not probe.ok and "no kernel image" in probe.reason


def test_cpu_only_request_proves_nothing() -> None:
    ort = fake_onnxruntime(compiled=[CPU_PROVIDER], broken={})
    assert providers.probe_providers([CPU_PROVIDER], ort=ort) == [CPU_PROVIDER]
    assert ort.sessions == []


def test_onnx_sessions_use_the_proven_providers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ort = fake_onnxruntime(compiled=[TRT, CUDA, CPU_PROVIDER], broken={TRT: "fallback"})
    _install(monkeypatch, "onnxruntime", ort)
    monkeypatch.setenv(providers.ENGINE_CACHE_ENV, str(tmp_path / "engines"))
    from edgefleet.runtime.onnx import OnnxRuntime

    model = tmp_path / "m.onnx"
    model.write_bytes(providers.probe_model())
    session = OnnxRuntime().open(model, SessionOptions(providers=providers.GPU_ORDER))
    assert session.providers == (CUDA, CPU_PROVIDER)
    assert ort.sessions[-1].requested == [CUDA, CPU_PROVIDER]
    x = np.ones((1, 8), dtype=np.float32)
    np.testing.assert_array_equal(session.run({"x": x})["y"], 2 * x)


# -- Edge TPU doubles -----------------------------------------------------------------------------------------
class FakeTpu:
    """What is attached: whether libedgetpu is installed and which TPUs answer."""

    def __init__(self, *, library: bool = True, devices: tuple[str, ...] = ("usb:0",)) -> None:
        self.library = library
        self.devices = devices
        self.delegate_calls: list[tuple[str, dict[str, str] | None]] = []
        self.invokes: list[str] = []

    def answers(self, device: str | None) -> bool:
        return bool(self.devices) and (device is None or device in self.devices or device in {"usb", ":0"})


def _interpreter_class(tpu: FakeTpu) -> type:
    class Interpreter:
        def __init__(
            self,
            model_path: str | None = None,
            model_content: bytes | None = None,
            experimental_delegates: list[Any] | None = None,
            num_threads: int | None = None,
            **kwargs: Any,
        ) -> None:
            if not experimental_delegates:
                raise RuntimeError(
                    "Encountered unresolved custom op: edgetpu-custom-op.Node number 0 (edgetpu-custom-op) "
                    "failed to prepare."
                )
            self.model = Path(model_path or "").name
            self.tensors: dict[int, np.ndarray] = {}

        def allocate_tensors(self) -> None:
            pass

        def get_input_details(self) -> list[dict[str, Any]]:
            shape = np.array([1, 4], dtype=np.int32)
            return [
                {"name": "input", "index": 0, "shape": shape, "shape_signature": shape, "dtype": np.uint8}
            ]

        def get_output_details(self) -> list[dict[str, Any]]:
            shape = np.array([1, 4], dtype=np.int32)
            return [
                {"name": "output", "index": 1, "shape": shape, "shape_signature": shape, "dtype": np.uint8}
            ]

        def set_tensor(self, index: int, value: np.ndarray) -> None:
            self.tensors[index] = value

        def invoke(self) -> None:
            if tpu.invokes[-1:] != [self.model]:
                time.sleep(0.005)  # the parameters are loaded into the TPU's SRAM again
            tpu.invokes.append(self.model)
            self.tensors[1] = self.tensors[0] + 1

        def get_tensor(self, index: int) -> np.ndarray:
            return self.tensors[index].copy()  # as the real one: a copy (tensor() is the view)

    return Interpreter


def fake_litert(tpu: FakeTpu) -> dict[str, types.ModuleType]:
    """``ai_edge_litert.interpreter`` with ``Interpreter`` and ``load_delegate(library, options=None)``; a
    missing libedgetpu raises OSError, as the real one does (its docstring promises ValueError)."""
    package = types.ModuleType("ai_edge_litert")
    module = types.ModuleType("ai_edge_litert.interpreter")

    class Delegate:
        def __init__(self, library: str, options: dict[str, str] | None) -> None:
            self.library, self.options = library, options

    def load_delegate(library: str, options: dict[str, str] | None = None) -> Delegate:
        tpu.delegate_calls.append((library, options))
        if not tpu.library:
            raise OSError(f"{library}: cannot open shared object file: No such file or directory")
        if not tpu.answers((options or {}).get("device")):
            raise ValueError(f"Failed to load delegate from {library}\n")
        return Delegate(library, options)

    vars(module)["Interpreter"] = _interpreter_class(tpu)
    vars(module)["load_delegate"] = load_delegate
    vars(package)["interpreter"] = module
    return {"ai_edge_litert": package, "ai_edge_litert.interpreter": module}


def fake_pycoral(tpu: FakeTpu) -> dict[str, types.ModuleType]:
    """``pycoral.utils.edgetpu`` with ``make_interpreter(model_path_or_content, device=None, delegate=None)``
    and ``list_edge_tpus()`` (dicts with 'type' and 'path')."""
    mods = {name: types.ModuleType(name) for name in ("pycoral", "pycoral.utils", "pycoral.utils.edgetpu")}
    interpreter = _interpreter_class(tpu)

    def make_interpreter(
        model_path_or_content: str | bytes, device: str | None = None, delegate: Any = None
    ) -> Any:
        if not tpu.library or not tpu.answers(device):
            raise ValueError("Failed to load delegate from libedgetpu.so.1\n")
        return interpreter(model_path=model_path_or_content, experimental_delegates=[object()])

    def list_edge_tpus() -> list[dict[str, str]]:
        return [
            {"type": d.split(":")[0], "path": f"/sys/bus/usb/devices/2-{i}"}
            for i, d in enumerate(tpu.devices)
        ]

    edgetpu_module = mods["pycoral.utils.edgetpu"]
    vars(edgetpu_module)["make_interpreter"] = make_interpreter
    vars(edgetpu_module)["list_edge_tpus"] = list_edge_tpus
    return mods


@pytest.fixture
def tpu(monkeypatch: pytest.MonkeyPatch) -> FakeTpu:
    """A USB Edge TPU behind LiteRT's delegate (pycoral absent, as on Python >= 3.10)."""
    fake = FakeTpu()
    for name, module in fake_litert(fake).items():
        _install(monkeypatch, name, module)
    _no_vendor(monkeypatch, "pycoral", "pycoral.utils", "pycoral.utils.edgetpu")
    monkeypatch.setattr(edgetpu, "library_loads", lambda: fake.library)
    monkeypatch.delenv(edgetpu.DEVICE_ENV, raising=False)
    return fake


def _model(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(b"TFL3" + bytes(64))
    return path


def test_edgetpu_refuses_models_not_compiled_for_it(tpu: FakeTpu, tmp_path: Path) -> None:
    runtime = edgetpu.EdgeTpuRuntime()
    with pytest.raises(ModelLoadError, match=r"not compiled for the Edge TPU.*_edgetpu\.tflite"):
        runtime.open(_model(tmp_path, "mobilenet.tflite"))
    assert runtime_for_file("mobilenet_edgetpu.tflite") == "edgetpu"
    assert runtime_for_file("mobilenet.tflite") == "litert"


def test_edgetpu_runs_through_the_litert_delegate_and_counts_model_switches(
    tpu: FakeTpu, tmp_path: Path
) -> None:
    runtime = edgetpu.EdgeTpuRuntime("usb:0")
    assert runtime.backend.kind == "litert"
    a = runtime.open(_model(tmp_path, "a_edgetpu.tflite"))
    b = runtime.open(_model(tmp_path, "b_edgetpu.tflite"))
    assert tpu.delegate_calls[-1] == ("libedgetpu.so.1", {"device": "usb:0"})
    x = np.array([[1, 2, 3, 4]], dtype=np.uint8)
    for _ in range(3):
        np.testing.assert_array_equal(a.run({"input": x})["output"], x + 1)
    b.run({"input": x})
    out = a.run({"input": np.repeat(x, 2, axis=0)})  # a batch of two runs row by row
    assert out["output"].shape == (2, 4)
    assert (a.invokes, a.switches, b.switches) == (5, 2, 1)
    assert a.last_switch_s is not None and a.last_switch_s >= 0.004
    assert a.swap_stats()["switch_s_total"] >= 2 * 0.004
    a.close()
    b.close()


def test_missing_libedgetpu_is_an_oserror_translated_into_a_clear_error(tpu: FakeTpu, tmp_path: Path) -> None:
    runtime = edgetpu.EdgeTpuRuntime()
    tpu.library = False  # removed after the runtime was made: load_delegate raises OSError
    with pytest.raises(ModelLoadError, match="libedgetpu1-std") as info:
        runtime.open(_model(tmp_path, "a_edgetpu.tflite"))
    assert isinstance(info.value.__cause__, OSError)


def test_edgetpu_is_listed_only_where_a_tpu_answers(tpu: FakeTpu, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "edgetpu" in registry.available_runtimes()
    registry._importable.cache_clear()
    edgetpu.check_available.cache_clear()
    tpu.devices = ()
    assert "edgetpu" not in registry.available_runtimes()
    edgetpu.check_available.cache_clear()
    tpu.library = False
    with pytest.raises(RuntimeMissing, match="libedgetpu1-std"):
        edgetpu.EdgeTpuRuntime()
    assert tpu.delegate_calls == [
        ("libedgetpu.so.1", None),
        ("libedgetpu.so.1", None),
    ]  # never without the lib


def test_real_machine_without_libedgetpu_lists_no_edgetpu() -> None:
    if edgetpu.library_loads():
        pytest.skip("libedgetpu is installed here")
    with pytest.raises(RuntimeMissing):
        edgetpu.EdgeTpuRuntime()
    assert "edgetpu" not in registry.available_runtimes()


def test_edgetpu_prefers_pycoral_where_it_imports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = FakeTpu(devices=("pci:0",))
    for name, module in fake_pycoral(fake).items():
        _install(monkeypatch, name, module)
    runtime = edgetpu.EdgeTpuRuntime("pci:0")
    assert runtime.backend.kind == "pycoral"
    session = runtime.open(_model(tmp_path, "a_edgetpu.tflite"))
    assert session.backend == "pycoral"
    x = np.zeros((1, 4), dtype=np.uint8)
    np.testing.assert_array_equal(session.run({"input": x})["output"], x + 1)
    edgetpu.check_available.cache_clear()
    with pytest.raises(RuntimeMissing, match="no Edge TPU usb"):
        edgetpu.EdgeTpuRuntime("usb")


# -- detection ---------------------------------------------------------------------------------------------
def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def fake_pynvml(*, gpus: int = 1, init_error: bool = False) -> types.ModuleType:
    """nvidia-ml-py's ``pynvml``: ``NVMLError`` subclasses per error code, ``nvmlInit`` raising
    ``NVMLError_LibraryNotFound`` where the driver is absent, power unsupported on GPU 1."""
    nv = types.ModuleType("pynvml")

    class NVMLError(Exception):
        def __init__(self, value: int) -> None:
            super().__init__(value)
            self.value = value

        def __str__(self) -> str:
            return {12: "NVML Shared Library Not Found", 3: "Not Supported"}.get(self.value, "Unknown Error")

    class NVMLError_LibraryNotFound(NVMLError):
        pass

    class NVMLError_NotSupported(NVMLError):
        pass

    state = {"init": 0}

    def nvmlInit() -> None:
        if init_error:
            raise NVMLError_LibraryNotFound(12)
        state["init"] += 1

    def nvmlShutdown() -> None:
        state["init"] -= 1

    def power(handle: int) -> int:
        if handle == 1:
            raise NVMLError_NotSupported(3)
        return 41_500  # milliwatts

    vars(nv)["NVMLError"] = NVMLError
    vars(nv)["NVMLError_LibraryNotFound"] = NVMLError_LibraryNotFound
    vars(nv)["NVMLError_NotSupported"] = NVMLError_NotSupported
    vars(nv)["NVML_TEMPERATURE_GPU"] = 0
    vars(nv)["state"] = state
    vars(nv)["nvmlInit"] = nvmlInit
    vars(nv)["nvmlShutdown"] = nvmlShutdown
    vars(nv)["nvmlDeviceGetCount"] = lambda: gpus
    vars(nv)["nvmlDeviceGetHandleByIndex"] = lambda index: index
    vars(nv)["nvmlDeviceGetUtilizationRates"] = lambda h: types.SimpleNamespace(gpu=30 + 20 * h, memory=5)
    vars(nv)["nvmlDeviceGetMemoryInfo"] = lambda h: types.SimpleNamespace(
        total=8 << 30, free=6 << 30, used=2 << 30
    )
    vars(nv)["nvmlDeviceGetTemperature"] = lambda h, sensor: 55 + h
    vars(nv)["nvmlDeviceGetPowerUsage"] = power
    return nv


@pytest.fixture
def no_vendors(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    _no_vendor(monkeypatch, "pynvml", "jtop", "pycoral", "pycoral.utils", "pycoral.utils.edgetpu")
    return monkeypatch


def test_jetson_orin_nano_is_recognised(no_vendors: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "proc/device-tree/model": "NVIDIA Jetson Orin Nano Developer Kit\0",
            "etc/nv_tegra_release": "# R36 (release), REVISION: 4.3\n",
        },
    )
    assert device_kind(root) == "jetson-orin-nano"
    assert detect_accelerators(root) == ["cpu", "cuda:0"]
    only_release = _tree(tmp_path / "b", {"etc/nv_tegra_release": "# R36\n"})
    assert device_kind(only_release) == "jetson"


def test_coral_boards_and_usb_accelerators(no_vendors: pytest.MonkeyPatch, tmp_path: Path) -> None:
    board = _tree(
        tmp_path / "board", {"proc/device-tree/model": "Freescale i.MX8MQ Phanbell\0", "dev/apex_0": ""}
    )
    assert device_kind(board) == "coral-dev-board"
    assert detect_accelerators(board) == ["cpu", "edgetpu:pci:0"]
    usb = _tree(
        tmp_path / "usb",
        {
            "sys/bus/usb/devices/2-1/idVendor": "18d1\n",
            "sys/bus/usb/devices/2-1/idProduct": "9302\n",
            "sys/bus/usb/devices/2-2/idVendor": "1a6e\n",
            "sys/bus/usb/devices/2-2/idProduct": "089a\n",
            "sys/bus/usb/devices/3-1/idVendor": "046d\n",
            "sys/bus/usb/devices/3-1/idProduct": "c52b\n",
        },
    )
    assert detect_accelerators(usb) == ["cpu", "edgetpu:usb:0", "edgetpu:usb:1"]
    assert device_kind(usb).endswith("-coral")
    assert device_kind(tmp_path / "empty").endswith("-cpu")


def test_nvml_gpus_and_pycoral_listing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    nv = fake_pynvml(gpus=2)
    _install(monkeypatch, "pynvml", nv)
    for name, module in fake_pycoral(FakeTpu(devices=("usb:0", "pci:0", "usb:1"))).items():
        _install(monkeypatch, name, module)
    found = detect_accelerators(tmp_path)
    assert found == ["cpu", "cuda:0", "cuda:1", "edgetpu:usb:0", "edgetpu:pci:0", "edgetpu:usb:1"]
    assert nv.state["init"] == 0  # NVML shut down again
    assert device_kind(tmp_path, accelerators=found).endswith("-cuda")


def test_nvml_init_failure_means_no_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_vendor(monkeypatch, "jtop", "pycoral", "pycoral.utils", "pycoral.utils.edgetpu")
    _install(monkeypatch, "pynvml", fake_pynvml(init_error=True))
    assert detect_accelerators(tmp_path) == ["cpu"]


# -- telemetry collectors --------------------------------------------------------------------------------------
JTOP_STATS = {  # jetson-stats 4.x ``jtop.stats`` on an Orin Nano
    "time": "2025-01-01 00:00:00",
    "uptime": 1000.0,
    "CPU1": 12,
    "CPU2": 9,
    "CPU3": "OFF",
    "RAM": 0.41,
    "SWAP": 0.0,
    "EMC": 3,
    "GPU": 37.5,
    "APE": "OFF",
    "Fan pwmfan0": 25.0,
    "Temp cpu": 48.2,
    "Temp gpu": 47.1,
    "Temp soc0": 46.0,
    "Temp cv0": -256.0,
    "Temp tj": 49.0,
    "Power VDD_IN": 5125,
    "Power VDD_CPU_GPU_CV": 1020,
    "Power TOT": 6145,
    "jetson_clocks": "OFF",
    "nvp model": "15W",
}
JTOP_MEMORY = {"RAM": {"tot": 7_800_000, "used": 3_200_000, "free": 3_000_000, "shared": 250_000}}


def fake_jtop(*, service: bool, fail_after: int | None = None) -> types.ModuleType:
    """jetson-stats' ``jtop``: ``jtop(interval=...)`` is a context manager whose ``__enter__`` raises
    ``JtopException`` when jtop.service (/run/jtop.sock) is not there; ``ok()`` blocks for one interval."""
    module = types.ModuleType("jtop")

    class JtopException(Exception):
        pass

    class jtop:
        def __init__(self, interval: float = 0.5) -> None:
            self.interval = interval
            self.calls = 0

        def __enter__(self) -> jtop:
            if not service:
                raise JtopException(
                    "The jtop.service is not active. Please run:\nsudo systemctl restart jtop.service"
                )
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def ok(self) -> bool:
            time.sleep(self.interval)
            self.calls += 1
            if fail_after is not None and self.calls > fail_after:
                raise JtopException("Lost connection with jtop server")
            return True

        @property
        def stats(self) -> dict[str, Any]:
            return dict(JTOP_STATS)

        @property
        def memory(self) -> dict[str, Any]:
            return dict(JTOP_MEMORY)

    vars(module)["jtop"] = jtop
    vars(module)["JtopException"] = JtopException
    return module


def _no_thread(name: str) -> bool:
    return all(t.name != name or not t.is_alive() for t in threading.enumerate())


def test_jtop_stats_parse() -> None:
    reading = parse_stats(JTOP_STATS, JTOP_MEMORY)
    assert reading.gpu_percent == 37.5
    assert reading.power_w == pytest.approx(6.145)
    assert reading.temperature_c == 49.0  # the -256 of an offline zone is ignored
    assert reading.gpu_memory_used_bytes == 250_000 * 1024
    assert reading.gpu_memory_total_bytes == 7_800_000 * 1024
    assert parse_stats({}) == type(reading)()


def test_jtop_missing_service_falls_back_without_crashing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _install(monkeypatch, "jtop", fake_jtop(service=False))
    _install(monkeypatch, "pynvml", fake_pynvml(init_error=True))
    with caplog.at_level(logging.INFO, logger="edgefleet.agent.collectors.select"):
        collector = select_collector(jtop_timeout_s=2.0)
    assert collector.name == "psutil"
    assert "jtop.service did not answer" in caplog.text and "NVML did not initialise" in caplog.text
    assert collector.sample().cpu_percent >= 0.0
    time.sleep(0.05)
    assert _no_thread("ef-jtop")


def test_jtop_is_chosen_on_a_jetson_with_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    _install(monkeypatch, "jtop", fake_jtop(service=True))
    _install(monkeypatch, "pynvml", fake_pynvml())
    collector = select_collector(jtop_timeout_s=3.0)
    try:
        assert collector.name == "jtop"
        sample = collector.sample()
        assert sample.gpu_percent == 37.5 and sample.power_w == pytest.approx(6.145)
        assert sample.temperature_c is not None and sample.temperature_c >= 49.0
        assert sample.memory_used_bytes is not None and sample.memory_used_bytes > 0
    finally:
        collector.close()
    assert _no_thread("ef-jtop")


def test_jtop_losing_its_service_later_reports_psutil_figures_only(monkeypatch: pytest.MonkeyPatch) -> None:
    _install(monkeypatch, "jtop", fake_jtop(service=True, fail_after=2))
    collector = JtopCollector(interval_s=0.02, stale_s=0.1, retry_s=30.0)
    assert collector.start(2.0)
    time.sleep(0.3)  # the connection is lost after two updates; the reading goes stale
    sample = collector.sample()
    assert sample.gpu_percent is None and sample.power_w is None
    assert "Lost connection" in collector.error
    collector.close()
    assert _no_thread("ef-jtop")


def test_nvml_collector_reads_gpus_and_tolerates_unsupported_readings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _install(monkeypatch, "jtop", None)
    nv = fake_pynvml(gpus=2)
    _install(monkeypatch, "pynvml", nv)
    collector = select_collector()
    assert isinstance(collector, NvmlCollector)
    sample = collector.sample()
    assert sample.gpu_percent == 40.0  # the mean of 30 and 50
    assert sample.gpu_memory_used_bytes == 2 * (2 << 30)
    assert sample.power_w == pytest.approx(41.5)  # GPU 1 does not report power
    assert sample.temperature_c is not None and sample.temperature_c >= 56
    collector.close()
    assert nv.state["init"] == 0


def test_nvml_init_failure_and_no_jtop_selects_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    _install(monkeypatch, "jtop", None)
    _install(monkeypatch, "pynvml", fake_pynvml(init_error=True))
    collector = select_collector()
    assert isinstance(collector, PsutilCollector)
    sample = collector.sample()
    assert sample.gpu_percent is None and sample.memory_used_bytes is not None
