"""Tests of the runtime seam on real zoo models: ONNX Runtime, LiteRT and the fake."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefleet.runtime import (
    EdgeRuntimeError,
    FakeModel,
    FakeRuntime,
    InferenceFailed,
    InputError,
    ModelLoadError,
    RuntimeMissing,
    Session,
    SessionClosed,
    SessionOptions,
    TensorSpec,
    UnknownRuntime,
    available_runtimes,
    get_runtime,
    runtime_for_file,
)
from edgefleet.runtime import fake as fake_runtime
from edgefleet.runtime.fake import FakeSession
from edgefleet.runtime.onnx import choose_providers
from edgefleet.zoo import Catalog, data_dir, fetch, load_catalog, model_path, sample_inputs

ONNX_MODELS = ["ocr-det", "ocr-rec", "ocr-cls", "vad"]
TFLITE_MODELS = ["face-detect", "selfie-seg", "hand-landmark", "pose-landmark"]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return fetch(data_dir(), log=lambda _msg: None)


@pytest.fixture
def open_session(catalog: Catalog) -> Iterator[Any]:
    opened: list[Session] = []

    def open_(name: str, variant: str = "fp32", threads: int = 1) -> Session:
        entry = catalog.get(name)
        session = get_runtime(entry.runtime).open(model_path(name, variant), SessionOptions(threads=threads))
        opened.append(session)
        return session

    yield open_
    for session in opened:
        session.close()


def _available_variants(catalog: Catalog, names: list[str]) -> list[tuple[str, str]]:
    return [(n, v) for n in names for v, rec in catalog.get(n).variants.items() if rec.available]


@pytest.mark.parametrize("name", ONNX_MODELS + TFLITE_MODELS)
def test_real_models_run_on_sample_inputs(catalog: Catalog, open_session: Any, name: str) -> None:
    entry = catalog.get(name)
    session = open_session(name)
    assert session.runtime == entry.runtime
    assert [s.name for s in session.inputs] == [t.name for t in entry.inputs]
    assert session.memory_bytes >= model_path(name).stat().st_size
    out = session.run(sample_inputs(name))
    assert set(out) == {s.name for s in session.outputs}
    for spec in session.outputs:
        value = out[spec.name]
        assert value.dtype.name == spec.dtype
        assert all(d is None or d == g for d, g in zip(spec.shape, value.shape, strict=True))
        assert np.isfinite(value).all()


def test_every_available_variant_runs(catalog: Catalog, open_session: Any) -> None:
    pairs = _available_variants(catalog, ONNX_MODELS)
    assert ("ocr-cls", "int8") in pairs and ("ocr-rec", "fp16") in pairs
    for name, variant in pairs:
        out = open_session(name, variant).run(sample_inputs(name))
        assert all(np.isfinite(v).all() for v in out.values()), (name, variant)


def test_onnx_dynamic_dims_are_none(open_session: Any) -> None:
    det = open_session("ocr-det")
    assert det.inputs == (TensorSpec("x", "float32", (None, 3, None, None)),)
    vad = open_session("vad")
    assert {s.name: s for s in vad.inputs}["sr"] == TensorSpec("sr", "int64", ())
    assert {s.name: s for s in vad.inputs}["state"].shape == (2, None, 128)


def test_silero_vad_hears_speech(open_session: Any) -> None:
    prob = open_session("vad").run(sample_inputs("vad"))["output"]
    assert prob.shape == (1, 1) and float(prob[0, 0]) > 0.5


def _bad_feeds(name: str) -> list[tuple[str, dict[str, Any], str]]:
    good = sample_inputs(name)
    first = next(iter(good))
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("missing", {}, "bad_input"),
        ("extra", {**good, "bogus": np.zeros(1, np.float32)}, "bad_input"),
        ("not an array", {**good, first: good[first].tolist()}, "bad_input"),
        ("float64", {**good, first: good[first].astype(np.float64)}, "bad_dtype"),
        ("rank", {**good, first: good[first][0]}, "bad_shape"),
    ]
    fixed = [i for i, d in enumerate(_spec_shape(name, first)) if d is not None and d > 1]
    if fixed:
        shape = list(good[first].shape)
        shape[fixed[0]] += 1
        cases.append(("fixed dim", {**good, first: np.zeros(shape, np.float32)}, "bad_shape"))
    return cases


def _spec_shape(name: str, tensor: str) -> tuple[int | None, ...]:
    entry = load_catalog().get(name)
    return next(t.shape for t in entry.inputs if t.name == tensor)


@pytest.mark.parametrize("name", ["ocr-cls", "vad", "face-detect"])
def test_bad_feeds_rejected_before_vendor(open_session: Any, name: str) -> None:
    session = open_session(name)
    for label, feeds, code in _bad_feeds(name):
        with pytest.raises(InputError) as info:
            session.run(feeds)
        assert info.value.code == code, label
        assert isinstance(info.value, EdgeRuntimeError)


def test_input_error_message_names_input_expected_and_got(open_session: Any) -> None:
    with pytest.raises(InputError, match=r"'x'.*float32.*float64"):
        open_session("ocr-cls").run({"x": np.zeros((1, 3, 48, 192), np.float64)})
    with pytest.raises(InputError, match=r"'input_1'.*\[1, 224, 224, 3\].*\[1, 225, 224, 3\]"):
        open_session("hand-landmark").run({"input_1": np.zeros((1, 225, 224, 3), np.float32)})


def test_onnx_vendor_error_translated(open_session: Any) -> None:
    feeds = sample_inputs("vad")
    feeds["state"] = np.zeros((2, 2, 128), np.float32)  # batch 2 state for a batch 1 chunk
    with pytest.raises(InferenceFailed) as info:
        open_session("vad").run(feeds)
    assert info.value.code == "model_failed" and "vad/fp32.onnx" in str(info.value)


@pytest.mark.parametrize("suffix, runtime", [(".onnx", "onnxruntime"), (".tflite", "litert")])
def test_corrupt_model_is_load_error(tmp_path: Path, suffix: str, runtime: str) -> None:
    bad = tmp_path / f"broken{suffix}"
    bad.write_bytes(b"not a model at all" * 64)
    with pytest.raises(ModelLoadError) as info:
        get_runtime(runtime).open(bad)
    assert info.value.code == "model_load_failed"
    with pytest.raises(ModelLoadError):
        get_runtime(runtime).open(tmp_path / f"absent{suffix}")


def test_litert_batch_larger_than_one_loops_rows(open_session: Any) -> None:
    session = open_session("face-detect")
    one = sample_inputs("face-detect")["input"]
    rows = np.concatenate([one, one[:, :, ::-1], -one])
    batched = session.run({"input": rows})
    for i in range(3):
        single = session.run({"input": rows[i : i + 1]})
        for key, value in single.items():
            np.testing.assert_allclose(batched[key][i : i + 1], value, rtol=1e-5, atol=1e-5)
    assert batched["regressors"].shape == (3, 896, 16)


def test_onnx_batches_natively(open_session: Any) -> None:
    out = open_session("ocr-cls").run(sample_inputs("ocr-cls", batch=4))
    assert next(iter(out.values())).shape == (4, 2)


def test_closed_session_refuses(open_session: Any) -> None:
    for name in ("ocr-cls", "face-detect"):
        session = open_session(name)
        session.close()
        with pytest.raises(SessionClosed):
            session.run(sample_inputs(name))


def test_threads_option_is_accepted(open_session: Any) -> None:
    a = open_session("ocr-cls", threads=1).run(sample_inputs("ocr-cls"))
    b = open_session("ocr-cls", threads=2).run(sample_inputs("ocr-cls"))
    np.testing.assert_allclose(
        a["save_infer_model/scale_0.tmp_1"], b["save_infer_model/scale_0.tmp_1"], atol=1e-5
    )
    with pytest.raises(ValueError):
        SessionOptions(threads=0)


@pytest.mark.parametrize(
    "requested, available, expected",
    [
        (("CPUExecutionProvider",), ["CPUExecutionProvider"], ["CPUExecutionProvider"]),
        (
            ("CUDAExecutionProvider", "CPUExecutionProvider"),
            ["CPUExecutionProvider"],
            ["CPUExecutionProvider"],
        ),
        (
            ("CPUExecutionProvider", "CUDAExecutionProvider"),
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
        ),
        ((), ["CPUExecutionProvider"], ["CPUExecutionProvider"]),
    ],
)
def test_choose_providers(requested: tuple[str, ...], available: list[str], expected: list[str]) -> None:
    assert choose_providers(requested, available) == expected


def test_registry() -> None:
    assert available_runtimes() == ["onnxruntime", "litert", "fake"]
    assert get_runtime("fake").name == "fake"
    with pytest.raises(UnknownRuntime, match="known runtimes"):
        get_runtime("tensorrt")
    assert runtime_for_file("a/b.onnx") == "onnxruntime"
    assert runtime_for_file(Path("m.TFLITE")) == "litert"
    with pytest.raises(UnknownRuntime):
        runtime_for_file("model.pt")


def test_runtime_missing_names_extra() -> None:
    exc = RuntimeMissing("litert", "litert")
    assert isinstance(exc, ImportError) and isinstance(exc, EdgeRuntimeError)
    assert "pip install 'edgefleet[litert]'" in str(exc)


SPEC_IN = (TensorSpec("x", "float32", (None, 4)),)
SPEC_OUT = (TensorSpec("y", "float32", (None, 1)),)


def test_fake_runtime_from_constructor() -> None:
    model = FakeModel(SPEC_IN, SPEC_OUT, service_time_s=0.02, per_row_s=0.01, memory_bytes=1234)
    runtime = FakeRuntime({"m/fp32.onnx": model})
    session = runtime.open(Path("m/fp32.onnx"))
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    start = time.perf_counter()
    out = session.run({"x": x})
    assert time.perf_counter() - start >= 0.04
    np.testing.assert_array_equal(out["y"], [[6.0], [22.0]])
    assert session.memory_bytes == 1234 and session.calls == 1
    with pytest.raises(InputError) as info:
        session.run({"x": x.astype(np.int64)})
    assert info.value.code == "bad_dtype"


def test_fake_runtime_from_json(tmp_path: Path) -> None:
    desc = {
        "inputs": [{"name": "a", "dtype": "int64", "shape": [None, 3]}],
        "outputs": [{"name": "b", "dtype": "int64", "shape": [None, 3]}],
        "function": "identity",
    }
    path = tmp_path / "echo.json"
    path.write_text(json.dumps(desc))
    session = get_runtime("fake").open(path)
    a = np.array([[1, 2, 3]], dtype=np.int64)
    np.testing.assert_array_equal(session.run({"a": a})["b"], a)
    (tmp_path / "bad.json").write_text(json.dumps({**desc, "function": "nope"}))
    with pytest.raises(ModelLoadError):
        get_runtime("fake").open(tmp_path / "bad.json")


def _on_processor(path: str, name: str, servers: int = 1, switch_s: float = 0.0) -> FakeSession:
    model = FakeModel(SPEC_IN, SPEC_OUT, service_time_s=0.001, per_row_s=0.0, processor=name, servers=servers,
                      switch_s=switch_s)
    return FakeRuntime({path: model}).open(Path(path))


@pytest.mark.parametrize(("order", "slept_ms"), [
    # every run sleeps its 1 ms; a run after another model's on the same processor also reloads (3 ms)
    ("aab", [1, 1, 4]),
    ("abab", [1, 4, 4, 4]),
    ("abba", [1, 4, 1, 4]),
])
def test_fakes_on_one_processor_pay_a_switch_between_models(monkeypatch: pytest.MonkeyPatch, order: str,
                                                             slept_ms: list[int]) -> None:
    slept: list[float] = []
    monkeypatch.setattr(fake_runtime, "_sleep", slept.append)
    proc = f"tpu-{order}"  # processors are process-wide: one per case
    sessions = {m: _on_processor(f"{m}/fp32.json", proc, switch_s=0.003) for m in "ab"}
    for m in order:
        sessions[m].run({"x": np.zeros((1, 4), np.float32)})
    assert [round(s * 1e3) for s in slept] == slept_ms


@pytest.mark.parametrize("servers", [1, 2])
def test_fakes_on_one_processor_run_at_most_its_servers_at_once(monkeypatch: pytest.MonkeyPatch,
                                                                servers: int) -> None:
    import threading

    busy, most = [0], [0]
    lock = threading.Lock()

    def sleep(seconds: float) -> None:
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
        time.sleep(0.02)  # long enough for the other callers to arrive
        with lock:
            busy[0] -= 1

    monkeypatch.setattr(fake_runtime, "_sleep", sleep)
    sessions = [_on_processor(f"m{i}/fp32.json", f"shared-{servers}", servers=servers) for i in range(4)]
    callers = [threading.Thread(target=s.run, args=({"x": np.zeros((1, 4), np.float32)},)) for s in sessions]
    for c in callers:
        c.start()
    for c in callers:
        c.join(5)
    assert most[0] <= servers


def test_fake_models_refuse_negative_times(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="times must be >= 0"):
        FakeModel(SPEC_IN, SPEC_OUT, service_time_s=-0.001)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"inputs": [], "outputs": [], "servers": 0}))
    with pytest.raises(ModelLoadError):
        get_runtime("fake").open(path)
