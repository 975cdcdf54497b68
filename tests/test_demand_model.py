"""Demand kinds in the performance model: periodic streams' gap spread, closed loops by mean value
analysis (edgefleet.coordinator.perf.mva) on each processor kind, the declared kind as the learner's prior, and
placement of closed tenants. Table tests carry their arithmetic; Hypothesis checks the invariants."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edgefleet.coordinator.fleet import DeviceSnapshot, FleetSnapshot, ModelFacts
from edgefleet.coordinator.perf import mva
from edgefleet.coordinator.perf.calibration import build_book
from edgefleet.coordinator.perf.demand import Expected, declared, observed, periodic_scv
from edgefleet.coordinator.perf.sharing import Load, Processor, predict, predict_open
from edgefleet.coordinator.placement.live import LearnedModel, ModelPlacement
from edgefleet.coordinator.placement.seam import NoFit, Placed
from edgefleet.wire import Closed, Periodic, Poisson, TenantSpec, TenantWindow

GPU = Processor("gpu", 4)
TPU = Processor("tpu", 1)
CPU2 = Processor("cpu", 2)  # two workers, no contention, no request path: the laws alone


def closed(name: str, s: float, n: int = 1, think: float = 0.0, **kw: object) -> Load:
    return Load(name, 1.0, s, in_flight=n, think_ms=think, **kw)  # type: ignore[arg-type]


# -- periodic streams ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fps", "jitter_ms", "scv"),
    [
        (30.0, 0.0, 0.0),  # a strict clock: every gap is T
        (30.0, 5.0, 2 * 25 / (1000 / 30) ** 2),  # 2σ²/T² = 50 / 1111.1 = 0.045
        (10.0, 10.0, 0.02),  # 2·100 / 100² = 0.02
        (100.0, 50.0, 1.0),  # 2·2500 / 10² = 50, capped at 1: frames reorder, no longer a stream
    ],
)
def test_periodic_gap_spread(fps: float, jitter_ms: float, scv: float) -> None:
    assert periodic_scv(fps, jitter_ms) == pytest.approx(scv)


def test_a_periodic_stream_waits_less_than_poisson_at_the_same_rate() -> None:
    # one LiteRT-like tenant alone on a worker (concurrency 1) at 50 req/s of 10 ms: ρ = 0.5.
    # Kingman: W = ρ/(1-ρ)·s·(Ca² + Cs²)/2 = 1·10·(Ca² + 0.04)/2: Poisson 5.2 ms, strict clock 0.2 ms
    poisson = predict(CPU2, [Load("p", 50.0, 10.0, concurrency=1)])
    clock = predict(CPU2, [Load("p", 50.0, 10.0, concurrency=1, arrival_scv=periodic_scv(50.0, 0.0))])
    assert poisson.mean_ms[0] == pytest.approx(10.0 + 5.2)
    assert clock.mean_ms[0] == pytest.approx(10.0 + 0.2)
    assert clock.p95_ms[0] < poisson.p95_ms[0]


# -- closed loops: exact MVA, by hand ---------------------------------------------------------------
def test_one_loop_alone_cycles_through_service_and_think() -> None:
    # N = 1 finds nothing: R = s = 5 ms; X = 1 / (R + Z) = 1 / 15 ms = 66.7 req/s, on every kind
    for proc in (GPU, TPU, CPU2):
        out = predict(proc, [closed("a", 5.0, think=10.0)])
        assert out.mean_ms[0] == pytest.approx(5.0)
        assert out.throughput_rps[0] == pytest.approx(1000.0 / 15.0)


def test_processor_sharing_stretches_each_by_the_others_present() -> None:
    # GPU, three loops back to back (Z = 0), s = 5, 10, 20 ms, w = 4 slots: each finds the other two
    # (Q = 1 each at N - e_i, since every request of theirs is always at the device), so
    # R_i = s_i·(1 + 2): 15, 30, 60 ms; X_i = 1/R_i: 66.7, 33.3, 16.7 req/s; Σ X·s = 3·(1/3) = 1, full
    out = predict(GPU, [closed("a", 5.0), closed("b", 10.0), closed("c", 20.0)])
    assert out.mean_ms == pytest.approx((15.0, 30.0, 60.0))
    assert out.throughput_rps == pytest.approx((1000 / 15, 1000 / 30, 1000 / 60))
    assert out.utilisation == pytest.approx(1.0)


def test_a_loop_of_two_in_flight_queues_behind_itself() -> None:
    # one FCFS TPU, s = 10 ms, N = 2, Z = 0. n = 1: R = 10, X = 0.1/ms, Q = 1.
    # n = 2: finds Q(1) = 1 ahead: R = 10 + 1·10 = 20 ms, X = 2/20 = 0.1/ms = 100 req/s (the server's
    # capacity: always busy)
    out = predict(TPU, [closed("a", 10.0, n=2)])
    assert out.mean_ms[0] == pytest.approx(20.0)
    assert out.throughput_rps[0] == pytest.approx(100.0)


def test_three_loops_on_two_workers_wait_half_a_service() -> None:
    # CPU pool, c = 2, no contention, three ONNX tenants of s = 10 ms back to back (N = 1, Z = 0).
    # At (1,1,1) an arrival finds the other two present (exact MVA: Q = 1 each at (0,1,1)), so
    # E = 2 > c - 1 = 1: W = (Σ e·o - (c - 1)·ō)/c = (20 - 10)/2 = 5 ms; R = 15 ms; X = 1/15 ms.
    # The schedule agrees: two run, the third waits for the first to end, each waits s every other
    # cycle: cycle 15 ms.
    out = predict(CPU2, [closed(n, 10.0, concurrency=2) for n in "abc"])
    assert out.mean_ms == pytest.approx((15.0, 15.0, 15.0))
    assert out.throughput_rps == pytest.approx((1000 / 15,) * 3)


def test_a_single_flight_tenant_waits_for_its_own_requests() -> None:
    # CPU, c = 2, LiteRT-like concurrency 1, s = 10 ms, N = 2, Z = 0: n = 1 -> R = 10, Q = 1;
    # n = 2 finds its own one ahead on its only slot: W_own = (1 - 0)·10/1 = 10 -> R = 20, X = 100 req/s
    # (the second worker idles: one slot)
    out = predict(CPU2, [closed("a", 10.0, n=2, concurrency=1)])
    assert out.mean_ms[0] == pytest.approx(20.0)
    assert out.throughput_rps[0] == pytest.approx(100.0)


def test_open_tenants_stretch_closed_ones_on_a_single_server() -> None:
    # TPU, an open tenant at 100 req/s of 2 ms (U_o = 0.2) beside one closed loop of s = 8 ms, Z = 0:
    # mixed network: R_c = 8 / (1 - 0.2) = 10 ms, X_c = 100 req/s; the open one meets Q_c = 1:
    # R_o = 2·(1 + 1)/(1 - 0.2) = 5 ms
    out = predict(TPU, [closed("c", 8.0), Load("o", 100.0, 2.0)])
    assert out.mean_ms == pytest.approx((10.0, 5.0))
    assert out.throughput_rps == pytest.approx((100.0, 100.0))


def test_schweitzer_is_close_to_exact_mva() -> None:
    loads = [closed("a", 4.0, n=6, think=20.0), closed("b", 9.0, n=5, think=5.0), closed("c", 2.0, n=4)]
    for proc in (GPU, TPU, Processor("cpu", 2, 0.183, 1.0, dispatch_ms=0.35, hold_ms=0.4)):
        exact = mva.predict_closed(proc, loads)
        states = mva.EXACT_STATES
        try:
            mva.EXACT_STATES = 1
            approx = mva.predict_closed(proc, loads)
        finally:
            mva.EXACT_STATES = states
        for x, y in zip(exact.throughput_rps, approx.throughput_rps, strict=True):
            assert y == pytest.approx(x, rel=0.10), proc.kind


# -- invariants ------------------------------------------------------------------------------------
procs = st.sampled_from([GPU, Processor("gpu", 1), TPU, CPU2,
                         Processor("cpu", 4, 0.183, 1.0, 1.5, 0.5, 0.0, 0.35, 0.4)])
loops = st.lists(
    st.tuples(st.floats(0.5, 50.0), st.integers(1, 6), st.floats(0.0, 100.0), st.integers(1, 4)),
    min_size=1, max_size=4,
)


def _loads(spec: list[tuple[float, int, float, int]], switch_ms: float = 1.0) -> list[Load]:
    return [closed(f"t{i}", s, n, z, concurrency=m, switch_ms=switch_ms) for i, (s, n, z, m) in enumerate(spec)]


@settings(max_examples=150, deadline=None)
@given(procs, loops)
def test_mva_throughput_is_bounded_by_the_loop_alone_and_the_processor(proc: Processor, spec: list) -> None:
    loads = _loads(spec)
    out = predict(proc, loads)
    for ld, x, r in zip(loads, out.throughput_rps, out.mean_ms, strict=True):
        assert math.isfinite(r) and r >= ld.service_ms - 1e-9
        # X <= N / (s + Z): no loop runs faster than alone with no wait (dispatch adds to s on a CPU)
        z = mva.outside_ms(proc, ld)
        assert x <= ld.in_flight * 1000.0 / (ld.service_ms + proc.dispatch_ms + z) * (1 + 1e-9)
        # Little over the cycle: X·(R + Z) = N, the cycle's CPU outside the device stretched on full cores
        assert x * (r + z) / 1000.0 <= ld.in_flight * (1 + 1e-9)
        if proc.kind != "cpu" or proc.path_ms + proc.background_ms == 0.0:
            assert x * (r + z) / 1000.0 == pytest.approx(ld.in_flight)
    if proc.kind == "gpu" and proc.servers >= sum(ld.in_flight for ld in loads):
        # processor sharing (product form, MVA exact): one unit of work per ms at most. (FCFS with
        # class-dependent service is not product form; MVA may pass capacity there by a few %.)
        assert sum(x / 1000.0 * ld.service_ms for ld, x in zip(loads, out.throughput_rps, strict=True)) <= 1 + 1e-6


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([GPU, Processor("gpu", 1), TPU]), loops, st.integers(0, 3))
def test_mva_is_monotone_in_the_population(proc: Processor, spec: list, which: int) -> None:
    # (on a TPU more requests of one model mean fewer reloads, which may rightly shorten its latency: no
    # reloads here)
    loads = _loads(spec, switch_ms=0.0)
    # a GPU whose slot limit binds (1 < w <= the requests in flight) is approximated piecewise (shared
    # below w, queued beyond): not monotone across that knee for tenants of different sizes
    assume(not (proc.kind == "gpu" and 1 < proc.servers <= sum(ld.in_flight for ld in loads) + 1))
    # One FCFS server (a TPU, or a GPU running one request at a time) with tenants of different service
    # times is not product form: MVA's residence there (R_i = S_i + sum_j A_j * S_j, Reiser's heuristic)
    # can pass the server's capacity and is not monotone. Loops of 1 ms (2 in flight, 4 ms think) and
    # 4 ms (1 in flight, no think) are predicted at 209 and 224 req/s, a utilisation of
    # 0.209 + 0.896 = 1.10; at 2 in flight the second gets 218 req/s. A known limit of the model, so the
    # law is checked there only for tenants of one service time (where MVA is exact):
    if proc.kind == "tpu" or (proc.kind == "gpu" and proc.servers == 1):  # every tenant of one service time
        loads = [dataclasses.replace(ld, service_ms=loads[0].service_ms) for ld in loads]
    # Not checked on a CPU: with contention every busy worker slows the others (and the cores time-share
    # once the workers outnumber them), so one more in flight can cost throughput, as on the real box —
    # 4 workers at contention 0.183, loops of 1 ms (2 in flight) and 4 ms (2 in flight): 3 in flight for
    # the first is predicted at 1192 req/s against 1291 at 2; and without contention the worker-pool law
    # is not monotone where a tenant's own concurrency limit meets the pool wait (the known limit below).
    i = which % len(loads)
    more = [*loads]
    more[i] = Load(loads[i].name, 1.0, loads[i].service_ms, in_flight=loads[i].in_flight + 1,
                   think_ms=loads[i].think_ms, concurrency=loads[i].concurrency)
    a, b = predict(proc, loads), predict(proc, more)
    # one more in flight: that loop's throughput and latency do not fall; nobody else's throughput grows.
    tol = 1e-6
    assert b.throughput_rps[i] >= a.throughput_rps[i] * (1 - tol)
    assert b.mean_ms[i] >= a.mean_ms[i] * (1 - tol)
    for j in range(len(loads)):
        if j != i:
            assert b.throughput_rps[j] <= a.throughput_rps[j] * (1 + tol)


def test_a_second_request_in_flight_never_costs_a_single_flight_tenant_throughput_on_a_free_pool() -> None:
    # two workers, no contention: loops of 4 ms and 1 ms, one in flight each, so each has a worker to
    # itself and the 1 ms loop runs 1000 req/s. A second request of the 1 ms loop (concurrency 1) waits
    # for its own first one, never for the pool (the other loop holds one worker, it holds the other):
    # at (1, 2) it finds Q_b = 1 of its own (p_own = 1): W = W_own + (1 - 1)·W_pool = 1·1 ms, R = 2 ms,
    # X = 2 / 2 ms = 1000 req/s. (The law once took the longer of W_own and the pool's wait,
    # (4 + 1 - 1·2.5)/2 = 1.25 ms, and predicted 889 req/s.)
    proc = Processor("cpu", 2)
    one = [Load("a", 1.0, 4.0, in_flight=1), Load("b", 1.0, 1.0, in_flight=1)]
    two = [one[0], Load("b", 1.0, 1.0, in_flight=2)]
    assert predict(proc, one).throughput_rps[1] == pytest.approx(1000.0)
    assert predict(proc, two).throughput_rps[1] == pytest.approx(1000.0, rel=1e-3)


def test_open_loads_alone_predict_as_before() -> None:
    loads = [Load("a", 30.0, 10.0), Load("b", 50.0, 3.0, arrival_scv=0.1)]
    proc = Processor("cpu", 2, 0.183, 1.0, 1.5, dispatch_ms=0.35, hold_ms=0.4)
    new, old = predict(proc, loads), predict_open(proc, loads)
    assert new.p95_ms == old.p95_ms and new.mean_ms == old.mean_ms
    assert new.throughput_rps == (30.0, 50.0)


# -- the declared kind as the prior ---------------------------------------------------------------
def _window(**kw: object) -> TenantWindow:
    return TenantWindow(tenant="t", model="vad", variant="fp32", slo_ms=50.0, **kw)  # type: ignore[arg-type]


def test_declared_kinds_give_the_prior() -> None:
    assert declared(None, 2.0) == Expected(2.0)  # nothing declared: Poisson at the default rate
    assert declared(Poisson(rate_rps=20.0), 2.0) == Expected(20.0)
    assert declared(Periodic(fps=25.0, jitter_ms=4.0), 2.0) == Expected(25.0, 2 * 16 / 40**2)  # T = 40 ms
    assert declared(Closed(in_flight=3, think_ms=7.0), 2.0) == Expected(2.0, 1.0, 3, 7.0)


def test_windows_take_over_from_the_prior() -> None:
    periodic = declared(Periodic(fps=30.0), 1.0)
    got = observed(periodic, _window(arrivals=300, arrival_rps=29.5, arrival_scv=0.08))
    assert (got.rate_rps, got.arrival_scv) == (29.5, 0.08)  # what the device saw, not the declared clock
    assert observed(periodic, _window()) == periodic  # no arrivals: nothing learnt
    loop = declared(Closed(in_flight=2, think_ms=1.0), 1.0)
    # 2 in flight at 100 req/s: a cycle of 20 ms, 6 + 8 = 14 at the device, 6 ms outside
    got = observed(loop, _window(arrivals=500, arrival_rps=100.0, queue_ms_mean=6.0, service_ms_mean=8.0))
    assert got.in_flight == 2 and got.outside_ms == pytest.approx(6.0) and got.cycle_outside_ms == pytest.approx(6.0)
    # the declared think time holds when the loop measured less outside (e.g. a window of bursts)
    assert observed(loop, _window(arrivals=5, arrival_rps=200.0, queue_ms_mean=6.0,
                                  service_ms_mean=4.0)).cycle_outside_ms == 1.0


# -- placement -----------------------------------------------------------------------------------
def _fleet() -> FleetSnapshot:
    return FleetSnapshot((DeviceSnapshot("box", True, "x86_64-cpu", frozenset({"onnxruntime", "litert"}),
                                         1 << 30),), 0.0)


def test_placement_plans_a_closed_tenant_by_its_loop() -> None:
    live, placement = LearnedModel(build_book()), ModelPlacement()
    facts = ModelFacts("ocr-rec", "fp32", "onnxruntime", 11 << 20)
    # back to back, one in flight: alone on the box it takes ocr-rec's ~24 ms plus the request path,
    # so a 40 ms SLO holds; two loops in flight on two cores keep it near the same; ten do not
    ok = TenantSpec(name="cam", model="ocr-rec", slo_ms=40.0, demand=Closed(in_flight=1))
    live.declare(ok)  # as the engine does before it places a tenant
    assert isinstance(placement.place(ok, facts, _fleet(), live.predictor()), Placed)
    many = TenantSpec(name="cam2", model="ocr-rec", slo_ms=40.0, demand=Closed(in_flight=10))
    live.declare(many)
    decision = placement.place(many, facts, _fleet(), live.predictor())
    assert isinstance(decision, NoFit) and "p95" in decision.reason
    assert live.demand["cam"].in_flight == 1


def test_the_learner_scores_a_closed_loop_as_one() -> None:
    from edgefleet.coordinator.perf.learner import Learner
    from edgefleet.wire import DeviceWindow, Telemetry

    w = _window(arrivals=200, completions=200, arrival_rps=30.0, latency_p95_ms=30.0,
                service_ms_by_batch={1: 24.0}, batches_by_size={1: 200})
    w = TenantWindow(**{**{f: getattr(w, f) for f in w.__struct_fields__}, "tenant": "cam", "model": "ocr-rec"})
    tel = Telemetry(device_id="a", boot_id="b", seq=0, window_start=0.0, window_end=5.0, tenants=[w],
                    device=DeviceWindow(cpu_percent=50.0, memory_used_bytes=1, memory_budget_bytes=1,
                                        model_memory_bytes=1))
    as_open = Learner(build_book()).observe("x86-cpu", tel).errors.stats["cam"].last.predicted_ms
    as_loop = Learner(build_book()).observe("x86-cpu", tel, {"cam": (1, 9.0)}).errors.stats["cam"].last.predicted_ms
    # open at 30 req/s of ~24 ms it queues behind its own requests (Poisson bursts); one request in
    # flight never does: its p95 is its service's
    assert as_loop < as_open
    assert as_loop == pytest.approx(predict(build_book().kinds["x86-cpu"].processors["cpu"],
                                            [Load("cam", 1.0, 24.0, in_flight=1, think_ms=9.0, concurrency=2,
                                                  request_mb=0.18432)]).p95_ms[0], rel=0.05)


def test_other_work_on_the_box_time_shares_the_cores() -> None:
    # two cores, 1.5 of them kept busy by other processes; one request alone finds no other worker busy
    # (k = 0): f = (1 + κ·min(0 + 1.5, 1))·max(1, (0 + 1 + 1.5)/2) = 1·1.25 with κ = 0 -> 10 ms runs 12.5
    quiet, busy = Processor("cpu", 2), Processor("cpu", 2, external_cores=1.5)
    assert predict(busy, [Load("a", 0.001, 10.0)]).service_ms[0] == pytest.approx(12.5, rel=1e-3)
    assert predict(quiet, [Load("a", 0.001, 10.0)]).service_ms[0] == pytest.approx(10.0, rel=1e-3)
    # a loop back to back (Z = 0) alone: R = 12.5 ms, X = 80 req/s; on the quiet box 100 req/s
    assert predict(busy, [closed("a", 10.0)]).throughput_rps[0] == pytest.approx(80.0)
    assert predict(quiet, [closed("a", 10.0)]).throughput_rps[0] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="bad processor"):
        Processor("cpu", 2, external_cores=-1.0)


# -- the CPU worker pool's invariants (no contention, no request path: the pool law alone) -----------
cpu_loops = st.lists(
    st.tuples(st.floats(0.5, 50.0), st.integers(1, 4), st.floats(0.0, 50.0), st.sampled_from([1, 2])),
    min_size=1, max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(cpu_loops)
def test_cpu_pool_throughput_never_passes_its_capacity(spec: list) -> None:
    # c = 2 workers: Σ X_i·s_i <= 2 worker-ms per ms, and a tenant of concurrency m keeps at most m busy.
    # The pool's wait law is an approximation that alone may pass the capacity (an ONNX loop of 3 in flight
    # beside two single-flight ones, all of 1 ms: 1500 + 400 + 400 req/s, Σ X·s = 2.3; three single-flight
    # loops of 10, 12 and 12 ms, the first thinking 7 ms: 2.002); the prediction is then held to the
    # capacity (mva._within_pool), so the bound holds for every mix, backlogs included.
    loads = _loads(spec)
    out = predict(CPU2, loads)
    work = [x / 1000.0 * ld.service_ms for ld, x in zip(loads, out.throughput_rps, strict=True)]
    assert sum(work) <= CPU2.servers * (1 + 1e-9)  # (float arithmetic only)
    for ld, u in zip(loads, work, strict=True):
        assert u <= min(ld.concurrency, CPU2.servers) * (1 + 1e-9)


@settings(max_examples=150, deadline=None)
@given(cpu_loops, st.integers(0, 3))
def test_cpu_pool_latency_grows_with_the_requests_in_flight(spec: list, which: int) -> None:
    # one more request in flight for a tenant: its own latency does not fall
    # (a tenant alone, or none with more in flight than its concurrency, before or after: with backlogs
    # beside others the law is an approximation, not checked here; see the two table tests below)
    loads = _loads(spec)
    i = which % len(loads)
    assume(len(spec) == 1 or all(n + (j == i) <= m for j, (_s, n, _z, m) in enumerate(spec)))
    more = [*loads]
    more[i] = dataclasses.replace(loads[i], in_flight=loads[i].in_flight + 1)
    a, b = predict(CPU2, loads), predict(CPU2, more)
    assert b.mean_ms[i] >= a.mean_ms[i] * (1 - 1e-6)



def test_two_backlogged_single_flight_tenants_stay_within_the_pool() -> None:
    # two workers, s = 1 ms: a loop of one in flight beside two single-flight tenants (concurrency 1) with
    # two in flight each. Each of those waits for its own request ahead (1 ms) and then for the worker it
    # frees behind the others found waiting: the pool's wait over the others alone. Predicted 400, 667
    # and 667 req/s: Σ X·s = 1.73 <= 2. (The law once let each count on the worker its own one frees and
    # the pool on top: 400 + 1000 + 1000 = 2.4 > 2.)
    out = predict(CPU2, [closed("a", 1.0), closed("b", 1.0, n=2), closed("c", 1.0, n=2)])
    assert out.throughput_rps == pytest.approx((400.0, 2000.0 / 3.0, 2000.0 / 3.0))
    assert sum(x / 1000.0 for x in out.throughput_rps) <= 2.0


def test_a_second_request_in_flight_never_shortens_a_single_flight_tenants_latency() -> None:
    # two workers, loops of 1, 2 and 3 ms back to back, concurrency 1 each: 444, 333 and 267 req/s, the
    # 1 ms loop at 2.25 ms. A second request of it waits for its first (1 ms) and for the worker that one
    # frees behind the others found waiting: 3.25 ms, 615 req/s; the others 200 req/s each. (The law
    # once counted the freed worker as its own: 2.0 ms, shorter than with one in flight.)
    one = [closed("a", 1.0), closed("b", 2.0), closed("c", 3.0)]
    two = [closed("a", 1.0, n=2), one[1], one[2]]
    assert predict(CPU2, one).mean_ms[0] == pytest.approx(2.25)
    assert predict(CPU2, two).mean_ms[0] == pytest.approx(3.25)


def test_a_loads_measured_background_replaces_the_processors_count() -> None:
    # the processor counts 1.3 ms + 4 ms per MB of other processes' CPU per request: 1.3 + 4·0.5 = 3.3 ms
    # for a 0.5 MB request; a load that carries its own measured figure (an app's CPU per request, say
    # 6 ms) is counted at that
    proc = Processor("cpu", 2, background_ms=1.3, background_ms_per_mb=4.0)
    assert proc.background_of(Load("a", 1.0, 5.0, request_mb=0.5)) == pytest.approx(3.3)
    assert proc.background_of(Load("a", 1.0, 5.0, request_mb=0.5, background_ms=6.0)) == pytest.approx(6.0)
    # and the model sees it: one loop back to back, s = 5 ms, on two cores with 1.5 cores kept busy by
    # other work: more background CPU per cycle, more of it time-shared, a longer cycle, lower throughput
    busy = dataclasses.replace(proc, external_cores=1.5)
    lo = predict(busy, [closed("a", 5.0, request_mb=0.5)]).throughput_rps[0]
    hi = predict(busy, [closed("a", 5.0, request_mb=0.5, background_ms=6.0)]).throughput_rps[0]
    assert hi < lo


def test_a_pool_prediction_past_the_capacity_is_held_to_it() -> None:
    # three single-flight loops on 2 workers (no contention, no path): 10 ms with 7 ms outside, 12 ms and
    # 12 ms back to back. The wait law alone gives 0.435 + 0.784 + 0.784 = 2.002 workers busy; held to 2,
    # each throughput is cut by 2 / 2.002 and its cycle N / X' lengthens by that much, all of it waiting.
    loads = _loads([(10.0, 1, 7.0, 1), (12.0, 1, 0.0, 1), (12.0, 1, 0.0, 1)])
    out = predict(CPU2, loads)
    work = [x / 1000.0 * ld.service_ms for ld, x in zip(loads, out.throughput_rps, strict=True)]
    assert sum(work) == pytest.approx(2.0, rel=1e-9)
    for ld, x, r in zip(loads, out.throughput_rps, out.mean_ms, strict=True):
        assert 1000.0 / x == pytest.approx(r + ld.think_ms, rel=1e-6)  # Little over the cycle, N = 1
