"""The coordinator's model-driven placement as it runs: device kinds mapped onto the calibrated book,
demand and service curves learnt from telemetry windows, decisions as values with reasons."""

from __future__ import annotations

import pytest

from edgefleet.coordinator.config import ConfigError, config_from_dict
from edgefleet.coordinator.fleet import DeviceSnapshot, FleetSnapshot, ModelFacts, TenantLoad
from edgefleet.coordinator.perf.calibration import build_book
from edgefleet.coordinator.placement import NoFit, Placed
from edgefleet.coordinator.placement.live import LearnedModel, ModelPlacement, NullModel, book_kind, demand_at
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
    live, placement = LearnedModel(build_book()), ModelPlacement()
    spec = TenantSpec(name="new", model="ocr-rec", slo_ms=200.0)
    fleet = _fleet(TenantLoad("busy", "ocr-rec", "fp32", 11 * MB))
    assert isinstance(placement.place(spec, REC, fleet, live.predictor()), Placed)  # the neighbour: 1 req/s
    live.observe("x86_64-cpu", _window(rate=200.0))  # it is really taking 200 req/s of 24 ms work
    assert live.demand["busy"].rate_rps == pytest.approx(200.0)
    decision = placement.place(spec, REC, fleet, live.predictor())
    assert isinstance(decision, NoFit) and "a" in decision.reason
    live.forget("busy")
    assert isinstance(placement.place(spec, REC, fleet, live.predictor()), Placed)


def test_a_question_at_a_rate_changes_nothing_in_the_model() -> None:
    """``plan --add`` asks about a tenant that does not exist at a given rate: the rate goes with the
    question (the predictor), never into the model's demand; the same tenant at 1 req/s fits, at 500
    req/s of 24 ms work on two cores it cannot."""
    live, placement = LearnedModel(build_book()), ModelPlacement()
    spec = TenantSpec(name="asked", model="ocr-rec", slo_ms=200.0)
    fleet = _fleet()
    assert isinstance(placement.place(spec, REC, fleet, live.predictor({"asked": demand_at(spec, 1.0)})), Placed)
    heavy = placement.place(spec, REC, fleet, live.predictor({"asked": demand_at(spec, 500.0)}))
    assert isinstance(heavy, NoFit)
    assert "asked" not in live.demand and "asked" not in live.expected


def test_the_null_model_learns_and_predicts_nothing_and_model_placement_says_so() -> None:
    null = NullModel()
    null.observe("x86_64-cpu", _window(rate=5.0))
    assert null.predictor() is None and null.report(0.0) is None and len(null.errors.stats) == 0
    decision = ModelPlacement().place(TenantSpec(name="n", model="ocr-rec", slo_ms=200.0), REC, _fleet(), None)
    assert isinstance(decision, NoFit) and "performance model" in decision.reason


def test_the_prediction_error_is_recorded_per_tenant() -> None:
    live = LearnedModel(build_book())
    live.observe("x86_64-cpu", _window(rate=5.0))
    stat = live.errors.stats["busy"]
    assert stat.windows == 1 and stat.ape >= 0.0


def test_placement_is_chosen_in_the_config() -> None:
    assert config_from_dict({"coordinator": {"placement": "predicted-latency"}}).placement == "predicted-latency"
    assert config_from_dict({}).placement == "most-free-memory"
    with pytest.raises(ConfigError, match="placement must be one of"):
        config_from_dict({"coordinator": {"placement": "random"}})
