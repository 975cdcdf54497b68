"""The live fleet simulator: what it writes for each simulated device (pure), what agents make of it,
and one short live run through a real broker, real coordinator and real agent processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgefleet.agent.config import config_from_dict, load_config
from edgefleet.agent.fakes import FakeModels
from edgefleet.agent.host import DeployError
from edgefleet.cli.main import main
from edgefleet.cli.sim import live_summary
from edgefleet.config import ConfigError
from edgefleet.coordinator.perf import KindSpec, PerfBook, Processor, Profile, ServiceCurve
from edgefleet.coordinator.perf.calibration import VARIANT, build_book
from edgefleet.coordinator.placement.live import book_kind
from edgefleet.coordinator.sim.agents import KINDS, MIB, DeviceKind
from edgefleet.coordinator.sim.devices import (
    ModelShape,
    agent_plan,
    fake_description,
    fake_models,
    fake_path,
    live_devices,
)
from edgefleet.coordinator.sim.live import LiveScenario, run_live, tenant_plan
from edgefleet.coordinator.sim.livereport import Call, served_again, summarise
from edgefleet.coordinator.sim.scenario import SLO_MS
from edgefleet.localfleet import agent_toml
from edgefleet.runtime.fake import FakeModel
from edgefleet.wire import DeviceView, FleetStatus, TenantSpec, TenantView

POSE = ModelShape("pose-landmark", "litert", (("input_1", "float32", (1, 256, 256, 3)),),
                  (("Identity", "float32", (1, 195)),), 6_440_512)
CLS = ModelShape("ocr-cls", "onnxruntime", (("x", "float32", (None, 3, None, None)),),
                 (("y", "float32", (None, 2)),), 585_532)
VAD = ModelShape("vad", "onnxruntime", (("input", "float32", (None, None)),), (("output", "float32", (None, 1)),),
                 2_327_524)

# A hand-made book: one CPU kind (4 workers) and one with an Edge TPU (1 server) beside 4 Arm cores.
BOOK = PerfBook(
    {"x86-cpu": KindSpec("x86-cpu", {"cpu": Processor("cpu", 4)}, {"onnxruntime": "cpu", "litert": "cpu"}),
     "coral-tpu": KindSpec("coral-tpu", {"cpu": Processor("cpu", 4), "tpu": Processor("tpu", 1)},
                           {"onnxruntime": "cpu", "litert": "tpu"})},
    {("pose-landmark", VARIANT, "x86-cpu"): Profile(ServiceCurve(0.0, 17.0), "litert"),
     ("pose-landmark", VARIANT, "coral-tpu"): Profile(ServiceCurve(0.2, 0.9), "litert", switch_ms=3.2),
     ("ocr-cls", VARIANT, "x86-cpu"): Profile(ServiceCurve(0.25, 1.0), "onnxruntime")},
)
X86, ARM, JETSON, CORAL = KINDS


# -- devices ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("count", "per_kind", "ids"), [
    (None, 1, ["x86_64-cpu-1", "aarch64-cpu-1", "jetson-orin-nano-1", "coral-usb-1"]),
    (None, 2, ["x86_64-cpu-1", "x86_64-cpu-2", "aarch64-cpu-1", "aarch64-cpu-2", "jetson-orin-nano-1",
               "jetson-orin-nano-2", "coral-usb-1", "coral-usb-2"]),
    # a count takes the kinds in turn: the 5th device is the second x86 box, the 6th the second Arm one
    (6, 1, ["x86_64-cpu-1", "aarch64-cpu-1", "jetson-orin-nano-1", "coral-usb-1", "x86_64-cpu-2",
            "aarch64-cpu-2"]),
    (2, 9, ["x86_64-cpu-1", "aarch64-cpu-1"]),  # a count wins over per_kind
])
def test_devices_take_the_kinds_in_turn(count: int | None, per_kind: int, ids: list[str]) -> None:
    devices = live_devices(count=count, per_kind=per_kind)
    assert [d.device_id for d in devices] == ids
    assert all(d.device_id.startswith(d.kind.reported + "-") for d in devices)


@pytest.mark.parametrize(("count", "per_kind"), [(0, 1), (None, 0), (-1, 1)])
def test_a_fleet_without_devices_is_refused(count: int | None, per_kind: int) -> None:
    with pytest.raises(ValueError, match="at least"):
        live_devices(count=count, per_kind=per_kind)


CORAL_TPU = DeviceKind("coral-usb", "coral-tpu", 128 * MIB)
X86_CPU = DeviceKind("x86_64-cpu", "x86-cpu", 512 * MIB)


@pytest.mark.parametrize(("shape", "kind", "expected"), [
    # pose on the TPU: a = 0.2 ms -> 0.0002 s, c = 0.9 ms -> 0.0009 s per row, one server, 3.2 ms reload
    (POSE, CORAL_TPU, {"runtime": "litert", "service_time_s": 0.0002, "per_row_s": 0.0009, "processor": "tpu",
                       "servers": 1, "switch_s": 0.0032}),
    # pose on x86: 17 ms per row on the 4-worker CPU, no reload
    (POSE, X86_CPU, {"runtime": "litert", "service_time_s": 0.0, "per_row_s": 0.017, "processor": "cpu",
                     "servers": 4, "switch_s": 0.0}),
    # the OCR classifier batches: a = 0.25 ms, c = 1.0 ms, so a batch of 8 sleeps 0.25 + 8 = 8.25 ms
    (CLS, X86_CPU, {"runtime": "onnxruntime", "service_time_s": 0.00025, "per_row_s": 0.001, "processor": "cpu",
                    "servers": 4, "switch_s": 0.0}),
])
def test_fake_descriptions_sleep_the_books_service_time(shape: ModelShape, kind: DeviceKind,
                                                        expected: dict[str, object]) -> None:
    desc = fake_description(shape, BOOK, kind)
    assert desc is not None
    assert {k: desc[k] for k in expected} == pytest.approx(expected)
    assert desc["memory_bytes"] == shape.size_bytes and desc["function"] == "zeros"
    model = FakeModel.from_json(desc)  # what the fake runtime will open
    assert [(s.name, s.dtype, s.shape) for s in model.inputs] == list(shape.inputs)
    assert [(s.name, s.dtype, s.shape) for s in model.outputs] == list(shape.outputs)


def test_only_models_the_book_profiles_on_a_kind_get_a_fake() -> None:
    assert fake_description(CLS, BOOK, CORAL_TPU) is None  # no ocr-cls profile on coral-tpu in BOOK
    assert sorted(fake_models([POSE, CLS, VAD], BOOK, X86_CPU)) == ["ocr-cls", "pose-landmark"]
    assert sorted(fake_models([POSE, CLS, VAD], BOOK, CORAL_TPU)) == ["pose-landmark"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [POSE, CLS, VAD])
def test_the_calibrated_book_gives_every_kind_a_fake_of_every_model(kind: DeviceKind, shape: ModelShape) -> None:
    book = build_book()
    desc = fake_description(shape, book, kind)
    profile = book.profile(shape.name, VARIANT, kind.book)
    assert desc is not None and profile is not None
    for rows in (1, 4):  # what the fake sleeps for a batch is the book's s(b) = a + c·b
        slept_ms = 1e3 * (desc["service_time_s"] + desc["per_row_s"] * rows)
        assert slept_ms == pytest.approx(profile.curve.at(rows))


@pytest.mark.parametrize("kind", KINDS)
def test_an_agent_plan_makes_the_agent_play_its_kind(kind: DeviceKind, tmp_path: Path) -> None:
    device = live_devices(count=4)[KINDS.index(kind)]
    path = tmp_path / "agent.toml"
    path.write_text(agent_toml(agent_plan(device, tmp_path, telemetry_period_s=0.5), 1883, tmp_path / "state",
                               prefix="sim", data_dir=None))
    cfg = load_config(path)
    assert cfg.kind == kind.reported and book_kind(cfg.kind) == kind.book
    assert cfg.memory_budget_bytes == kind.budget_bytes  # MiB both sides
    assert cfg.fake_models_dir == tmp_path and cfg.worker_count == kind.cpu_count
    assert cfg.telemetry_period_s == 0.5


def test_a_missing_fake_folder_is_a_config_error(tmp_path: Path) -> None:
    data = {"agent": {"device_id": "d", "state_dir": str(tmp_path), "fake_models_dir": str(tmp_path / "nope")}}
    with pytest.raises(ConfigError, match=r"fake_models_dir .* is not a folder"):
        config_from_dict(data)


# -- what the agent makes of the fakes ------------------------------------------------------------------
def _write(folder: Path, shape: ModelShape, kind: DeviceKind, **override: object) -> Path:
    desc = fake_description(shape, BOOK, kind)
    assert desc is not None
    path = fake_path(folder, shape.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**desc, **override}))
    return path


def test_agents_resolve_fakes_as_the_runtime_they_play(tmp_path: Path) -> None:
    pose = _write(tmp_path, POSE, CORAL_TPU)
    _write(tmp_path, CLS, X86_CPU)
    fakes = FakeModels(tmp_path)
    got = fakes.resolve("pose-landmark", "fp32")
    assert got is not None
    assert (got.path, got.runtime, got.size_bytes, got.fidelity) == (pose, "litert", 6_440_512, 1.0)
    assert fakes.resolve("ocr-det", "fp32") is None  # not simulated here: unknown to this device
    with pytest.raises(DeployError) as info:
        fakes.resolve("pose-landmark", "int8")
    assert info.value.code == "variant_unavailable"
    assert fakes.runtimes() == ["onnxruntime", "litert"]
    assert fakes.cached() == ["ocr-cls:fp32", "pose-landmark:fp32"]


@pytest.mark.parametrize("override", [{"runtime": "tensorflow"}, {"memory_bytes": 0}, {"memory_bytes": "big"},
                                      {"fidelity": 2.0}])
def test_a_bad_fake_description_fails_the_load_with_its_path(tmp_path: Path, override: dict[str, object]) -> None:
    path = _write(tmp_path, POSE, CORAL_TPU, **override)
    with pytest.raises(DeployError) as info:
        FakeModels(tmp_path).resolve("pose-landmark", "fp32")
    assert info.value.code == "load_failed" and str(path) in info.value.message
    assert FakeModels(tmp_path).runtimes() == []


# -- tenants and the report -------------------------------------------------------------------------------
def test_tenants_cover_every_model_before_repeating_one() -> None:
    sc = LiveScenario(tenants=10, rate_rps=(1.0, 3.0), seed=3)
    plan = tenant_plan(sc)
    assert plan == tenant_plan(sc)  # seeded
    models = [spec.model for spec, _ in plan]
    assert sorted(models[:8]) == sorted(SLO_MS) and models[8:] == models[:2]
    assert all(spec.slo_ms == SLO_MS[spec.model] and 1.0 <= rate <= 3.0 for spec, rate in plan)
    assert len({spec.name for spec, _ in plan}) == 10


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"devices": 0}, "at least one device"), ({"kill": 4}, "can kill 0 to 3"), ({"devices": 2, "kill": 2}, "of 2"),
    ({"tenants": 0}, "tenants >= 1"), ({"rate_rps": (2.0, 1.0)}, "rate range"), ({"kill_at": 40.0}, "inside"),
])
def test_bad_live_scenarios_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LiveScenario(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("argv", [["--placement", "most-free-memory"], ["--kill", "4"], ["--devices", "0"],
                                  ["--per-kind", "0"], ["--tenants", "0"]])
def test_the_cli_refuses_bad_live_runs_before_starting_anything(argv: list[str],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--live", *argv]) == 2
    assert capsys.readouterr().out.startswith("edgefleet sim: ")


def test_the_report_compares_each_answer_with_the_book_of_the_kind_that_gave_it() -> None:
    spec = TenantSpec(name="pose", model="pose-landmark", slo_ms=20.0)
    status = FleetStatus(
        devices=[DeviceView("tpu-1", False, "coral-usb", ["litert"], 128 * MIB, 0, [], 0.0),
                 DeviceView("cpu-1", True, "x86_64-cpu", ["litert"], 512 * MIB, 0, ["pose"], 0.0)],
        tenants=[TenantView("pose", "pose-landmark", "fp32", 20.0, "running", "cpu-1", latency_p95_ms=18.0)],
        ts=0.0)
    calls = [Call("pose", 1.0, True, "tpu-1", 5.0, 4.2), Call("pose", 2.0, True, "tpu-1", 5.0, 1.1),
             Call("pose", 3.0, False, "no_reply"),
             Call("pose", 4.0, True, "cpu-1", 19.0, 17.5), Call("pose", 5.0, True, "cpu-1", 30.0, 18.7)]
    report = summarise(tenants=[(spec, 2.0)], runtimes={"pose-landmark": "litert"}, deployed={"pose": "tpu-1"},
                       calls=calls, status=status, book=BOOK, seconds=5.0, failover={})
    t = report["tenants"]["pose"]  # type: ignore[index]
    assert (t["deployed_kind"], t["kind"], t["requests"], t["ok"], t["failed"]) == ("coral-usb", "x86_64-cpu", 5, 4, 1)
    assert t["errors"] == {"no_reply": 1} and t["answered_by"] == {"tpu-1": 2, "cpu-1": 2}
    # TPU: book s(1) = 0.2 + 0.9 = 1.1 ms; measured 4.2 and 1.1, median 2.65, ratios 3.82 and 1.0 -> 2.41
    # CPU: book 17 ms; measured 17.5 and 18.7 -> median 18.1; ratios 1.029 and 1.1 -> 1.065
    assert t["service"] == {
        "coral-usb": {"calls": 2, "measured_median_ms": 2.65, "book_median_ms": 1.1, "book_switch_ms": 3.2,
                      "ratio_median": pytest.approx(2.409, abs=1e-3)},
        "x86_64-cpu": {"calls": 2, "measured_median_ms": 18.1, "book_median_ms": 17.0, "book_switch_ms": 0.0,
                       "ratio_median": pytest.approx(1.065, abs=1e-3)}}
    assert t["p95_ms"] == pytest.approx(28.35)  # of 5, 5, 19, 30: 19 + 0.85·(30 - 19)
    assert t["within_slo"] is False and t["device_p95_ms"] == 18.0
    assert report["kinds"] == {"coral-usb": {"devices": ["tpu-1"], "online": [], "tenants": []},
                               "x86_64-cpu": {"devices": ["cpu-1"], "online": ["cpu-1"], "tenants": ["pose"]}}
    assert report["requests"] == {"total": 5, "failed": 1, "rps": 1.0}


def test_served_again_counts_the_first_answer_from_a_device_that_was_not_killed() -> None:
    calls = [Call("a", 9.0, True, "dead"), Call("a", 10.5, True, "dead"),  # still draining: not "again"
             Call("a", 11.0, False, "no_reply"), Call("a", 12.5, True, "alive"), Call("a", 13.0, True, "alive"),
             Call("b", 14.0, True, "alive"), Call("c", 12.0, True, "alive")]
    assert served_again(calls, ["a", "b"], ["dead"], at_s=10.0) == {"a": 2.5, "b": 4.0}


# -- the whole thing ----------------------------------------------------------------------------------
@pytest.mark.broker
def test_a_live_run_places_by_the_model_serves_at_the_books_speed_and_survives_a_kill(tmp_path: Path) -> None:
    sc = LiveScenario(per_kind=1, tenants=8, seconds=14.0, kill=1, kill_at=5.0, rate_rps=(2.0, 4.0), seed=2)
    report = run_live(sc, workdir=tmp_path)
    book = build_book()

    # every agent reported the kind it plays, with that kind's budget and the runtimes its fakes play
    devices = {d["device_id"]: d for d in report["coordinator"]["devices"]}
    assert {i: d["device_kind"] for i, d in devices.items()} == report["devices"]
    for d in devices.values():
        kind = next(k for k in KINDS if k.reported == d["device_kind"])
        assert d["memory_budget_bytes"] == kind.budget_bytes and d["runtimes"] == ["onnxruntime", "litert"]

    tenants = report["tenants"]
    assert len(tenants) == 8
    for name, t in tenants.items():
        # placed by the performance model, which picks the device keeping the most SLO slack: LiteRT where
        # the Edge TPU runs it; the OCR models where a GPU or the fast x86 cores do, never on the Arm cores
        # (3x slower). VAD is the exception: by the calibrated book at 3 req/s each, its min slack is 0.96 on
        # the idle Arm box, 0.93 on the Jetson's GPU beside ocr-rec and ocr-cls, 0.88 beside ocr-det on x86,
        # so the Arm box is its best place while it is idle (ocr-det there: 0.61, against 0.87 on x86)
        fast = {"jetson-orin-nano", "x86_64-cpu"} | ({"aarch64-cpu"} if t["model"] == "vad" else set())
        assert t["deployed_kind"] in ({"coral-usb"} if t["runtime"] == "litert" else fast), name
        # answers arrive; a tenant of the killed device loses the calls in flight and those sent before
        # its new replica subscribed (checked below), the others nearly none
        assert t["ok"] > 0, name
        if t["deployed_on"] not in report["failover"]["killed"]:
            assert t["ok"] >= 0.9 * t["requests"], (name, t["errors"])
        assert t["state"] == "running" and t["kind"] != "coral-usb", name  # nothing left on the dead box
        # the service time each answer reports is the book's for the kind that answered, within what
        # sleeping and the agent's own overhead add (wrong kind, ms vs s, lost per-row term: far off)
        for kind, s in t["service"].items():
            if s["calls"] < 3:
                continue
            assert s["measured_median_ms"] >= 0.97 * s["book_median_ms"], (name, kind, s)
            assert s["measured_median_ms"] <= 1.25 * (s["book_median_ms"] + s["book_switch_ms"]) + 1.0, (name, kind, s)
            assert book_kind(kind) in book.kinds

    # the agent hosting the most (the Coral box, with every LiteRT tenant) was killed; its tenants run
    # elsewhere, placed again by the coordinator, and their apps got answers from the new devices
    failover = report["failover"]
    assert failover["killed"] == ["coral-usb-1"]
    victims = failover["tenants"]
    assert victims and set(victims) == {n for n, t in tenants.items() if t["deployed_on"] == "coral-usb-1"}
    assert failover["unrecovered"] == [] and set(failover["replaced_s"]) == set(victims)
    assert set(failover["served_again_s"]) == set(victims)
    for name in victims:
        assert tenants[name]["device"] != "coral-usb-1" and tenants[name]["kind"] in ("x86_64-cpu", "aarch64-cpu",
                                                                                      "jetson-orin-nano")
        assert set(tenants[name]["service"]) >= {"coral-usb", tenants[name]["kind"]}
    assert report["kinds"]["coral-usb"]["online"] == [] and report["kinds"]["coral-usb"]["tenants"] == []
    text = live_summary(report)
    assert "killed coral-usb-1" in text and all(name in text for name in tenants)
