"""Deploy-time profiling on the agent: which larger batch is worth timing, and what the warm-up measures.

The batch choice is arithmetic on the batch-1 time (``probe_batch``: (runs + 1) x b x s(1) must fit the
budget); the warm-up itself runs a real ONNX model and a double of a session, and only the shape of what
it reports is asserted (which batch sizes, positive times), never how long anything took.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgefleet.agent.host import Hosted, LocalModels, ModelHost, warm_up
from edgefleet.agent.profiling import probe_batch, service_profile
from edgefleet.bench.mlp import build_mlp
from edgefleet.runtime import TensorSpec, capabilities_of
from edgefleet.wire import ServiceProfile, TenantSpec

PROBES = [
    # (batch-1 seconds, max_batch, expected); runs 3 and a 0.25 s budget: 4 runs of b rows at b x s(1)
    (0.001, 8, 8),  # 4 x 8 x 1 ms = 32 ms
    (0.005, 8, 8),  # 4 x 8 x 5 ms = 160 ms
    (0.010, 8, 4),  # 4 x 8 x 10 = 320 ms > 250; 4 x 4 x 10 = 160 ms
    (0.025, 8, 2),  # 800, 400, then 4 x 2 x 25 = 200 ms
    (0.040, 8, None),  # 4 x 2 x 40 = 320 ms: even batch 2 is too dear
    (0.001, 1, None),  # the tenant never batches
    (0.001, 3, 3),  # 4 x 3 x 1 ms: the tenant's own limit
    (0.001, 64, 8),  # never above 8
]


@pytest.mark.parametrize(("batch1_s", "max_batch", "expected"), PROBES)
def test_probe_batch(batch1_s: float, max_batch: int, expected: int | None) -> None:
    assert probe_batch(batch1_s, max_batch, runs=3, budget_s=0.25) == expected


def test_a_measurement_the_contract_refuses_is_no_profile() -> None:
    assert service_profile("mlp", "fp32", {1: 0.0}) is None  # a clock that did not move
    assert service_profile("mlp", "fp32", {4: 1.0}) is None  # nothing at batch 1
    assert service_profile("mlp", "fp32", {1: 1.5, 8: 4.0}) == ServiceProfile(
        model="mlp", variant="fp32", ms_by_batch={1: 1.5, 8: 4.0})


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_mlp(tmp_path_factory.mktemp("mlp") / "mlp.onnx")


@pytest.mark.parametrize(("max_batch", "sizes"), [(8, {1, 8}), (4, {1, 4}), (1, {1})])
def test_warm_up_profiles_batch_one_and_one_larger_batch(mlp: Path, max_batch: int, sizes: set[int]) -> None:
    host = ModelHost([LocalModels({"mlp": mlp})], budget_bytes=64 << 20, threads=1)
    hosted = host.load(TenantSpec(name="m", model="mlp", slo_ms=50.0, max_batch=max_batch))
    slot = host.slots.get("m")
    service = warm_up(hosted, slot)
    assert set(hosted.profile) == sizes and all(ms > 0 for ms in hosted.profile.values())
    assert set(service.ewma) == sizes  # the scheduler starts from the same measurements
    assert slot is not None and slot.out_axes == {next(iter(hosted.session.run({"x": np.zeros((1, 784), np.float32)}))): 0}
    host.close()


class _Fixed:
    """A session with fixed shapes (like the LiteRT models here): never batched."""

    inputs = (TensorSpec("x", "float32", (1, 4)),)
    outputs = (TensorSpec("y", "float32", (1, 4)),)
    memory_bytes = 0

    def __init__(self, runtime: str, fail: bool = False) -> None:
        self.fail = fail
        self.capabilities = capabilities_of(runtime)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.fail:
            raise RuntimeError("boom")
        return {"y": feeds["x"] * 2}

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("runtime", "fail", "sizes"), [("litert", False, {1}), ("onnxruntime", True, set())])
def test_unbatchable_or_failing_models(runtime: str, fail: bool, sizes: set[int]) -> None:
    spec = TenantSpec(name="f", model="fixed-model", slo_ms=50.0, max_batch=8)
    hosted = Hosted(spec=spec, variant="fp32", session=_Fixed(runtime, fail), runtime=runtime,  # type: ignore[arg-type]
                    memory_bytes=1, measured_bytes=0, fidelity=1.0, loaded_at=0.0)
    warm_up(hosted)
    assert set(hosted.profile) == sizes


def test_a_load_and_a_warm_up_forget_the_request_layouts_the_slot_had_checked(mlp: Path) -> None:
    """The request path remembers, per header signature, what a request was checked to carry against
    the model (agent/serving.py); a model that loads again (another variant, other inputs) or learns its
    batch axes again must be checked against afresh."""
    host = ModelHost([LocalModels({"mlp": mlp})], budget_bytes=64 << 20, threads=1)
    spec = TenantSpec(name="m", model="mlp", slo_ms=50.0, max_batch=4)
    hosted = host.load(spec)
    slot = host.slots.get("m")
    assert slot is not None
    slot.layouts[b"a header"] = (1, ("x",))
    warm_up(hosted, slot)
    assert slot.layouts == {}
    slot.layouts[b"a header"] = (1, ("x",))
    host.load(spec)
    assert slot.layouts == {}
    host.close()
