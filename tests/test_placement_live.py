"""The coordinator's model-driven placement as it runs: device kinds mapped onto the calibrated book,
demand and service curves learnt from telemetry windows, decisions as values with reasons."""

from __future__ import annotations

import pytest

from coordinator.config import ConfigError, config_from_dict
from coordinator.fleet import DeviceSnapshot, FleetSnapshot, ModelFacts, TenantLoad
from coordinator.perf.calibration import build_book
from coordinator.placement import NoFit, Placed
from coordinator.placement.live import LivePredictedLatency, book_kind
from edgefleet.wire import DeviceWindow, Telemetry, TenantSpec, TenantWindow

MB = 1_000_000
REC = ModelFacts("ocr-rec", "fp32", "onnxruntime", 11 * MB)


@pytest.mark.parametrize(("reported", "kind"), [
    ("x86_64-cpu", "x86-cpu"), ("x86_64-cuda", "x86-cpu"), ("aarch64-cpu", "arm-cpu"),
    ("jetson-orin-nano", "jetson-gpu"), ("coral-usb", "coral-tpu"), ("x86_64-coral", "coral-tpu"), ("fake", ""),
])
def test_reported_kinds_map_onto_calibrated_ones(reported: str, kind: str) -> None:
    assert book_kind(reported) == kind


def _fleet(*tenants: TenantLoad) -> FleetSnapshot:
    return FleetSnapshot((DeviceSnapshot("a", True, "x86_64-cpu", frozenset({"onnxruntime"}), 512 * MB,
                                         tenants=tuple(tenants)),), 0.0)


def _window(rate: float, slo_ms: float = 200.0) -> Telemetry:
    w = TenantWindow(tenant="busy", model="ocr-rec", variant="fp32", slo_ms=slo_ms, arrivals=int(rate * 5),
                     completions=int(rate * 5), arrival_rps=rate, latency_p50_ms=30.0, latency_p95_ms=60.0)
    device = DeviceWindow(cpu_percent=50.0, memory_used_bytes=1, memory_budget_bytes=1,
                          model_memory_bytes=11 * MB)
    return Telemetry(device_id="a", boot_id="b", seq=0, window_start=0.0, window_end=5.0, device=device,
                     tenants=[w])


def test_a_tenant_fits_until_the_measured_load_of_its_neighbour_leaves_no_room() -> None:
    live = LivePredictedLatency(build_book())
    spec = TenantSpec(name="new", model="ocr-rec", slo_ms=200.0)
    fleet = _fleet(TenantLoad("busy", "ocr-rec", "fp32", 11 * MB))
    assert isinstance(live.place(spec, REC, fleet), Placed)  # the neighbour is expected at 1 req/s
    live.observe("x86_64-cpu", _window(rate=200.0))  # it is really taking 200 req/s of 24 ms work
    assert live.demand["busy"].rate_rps == pytest.approx(200.0)
    decision = live.place(spec, REC, fleet)
    assert isinstance(decision, NoFit) and "a" in decision.reason
    live.forget("busy")
    assert isinstance(live.place(spec, REC, fleet), Placed)


def test_the_prediction_error_is_recorded_per_tenant() -> None:
    live = LivePredictedLatency(build_book())
    live.observe("x86_64-cpu", _window(rate=5.0))
    stat = live.errors.stats["busy"]
    assert stat.windows == 1 and stat.ape >= 0.0


def test_placement_is_chosen_in_the_config() -> None:
    assert config_from_dict({"coordinator": {"placement": "predicted-latency"}}).placement == "predicted-latency"
    assert config_from_dict({}).placement == "most-free-memory"
    with pytest.raises(ConfigError, match="placement must be one of"):
        config_from_dict({"coordinator": {"placement": "random"}})
