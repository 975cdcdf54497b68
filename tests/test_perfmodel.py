"""The performance model: queueing formulas by table (arithmetic in the comments), the sharing models on
hand-checkable cases, the online service-time estimator on synthetic telemetry, error tracking and the
calibration's derived numbers."""

from __future__ import annotations

import dataclasses
import math
import random

import hypothesis.strategies as st
import pytest
from hypothesis import given

from edgefleet.coordinator.perf import (
    ErrorBook,
    Load,
    Processor,
    RlsEstimator,
    Scored,
    ServiceCurve,
    fit_profile,
    predict,
)
from edgefleet.coordinator.perf.calibration import build_book, derive, read
from edgefleet.coordinator.perf.queueing import (
    erlang_c,
    latency_p95,
    mg1_wait,
    mgc_wait,
    service_p95,
    wait_p95,
)
from edgefleet.coordinator.perf.report import ReportSchedule, model_report
from edgefleet.wire import TenantWindow, encode
from edgefleet.wire.codec import decode_model_report

ERLANG_C = [
    # c = 1: C(1, A) = A (M/M/1 waits with probability ρ)
    (1, 0.5, 0.5),
    # c = 2, A = 1: B(1) = 1·1/(1+1) = 0.5; B(2) = 1·0.5/(2+0.5) = 0.2; C = 2·0.2/(2 - 1·(1-0.2)) = 0.4/1.2
    (2, 1.0, 1 / 3),
    # c = 3, A = 2: B(1) = 2/3; B(2) = 2·(2/3)/(2+4/3) = 0.4; B(3) = 2·0.4/(3+0.8) = 4/19;
    # C = 3·(4/19)/(3 - 2·(15/19)) = (12/19)/(27/19) = 4/9
    (3, 2.0, 4 / 9),
    (2, 0.0, 0.0),  # no load, no wait
    (2, 2.0, 1.0),  # A >= c: unstable, everybody waits
]


@pytest.mark.parametrize(("c", "a", "expected"), ERLANG_C)
def test_erlang_c(c: int, a: float, expected: float) -> None:
    assert erlang_c(c, a) == pytest.approx(expected)


WAITS = [
    # M/D/1: λ = 0.05/ms, s = 10 ms, ρ = 0.5, E[S²] = 100: Wq = 0.05·100/(2·0.5) = 5 ms
    ("M/D/1", lambda: mg1_wait(0.05, 10.0, 100.0), 5.0),
    # M/M/1: E[S²] = 2·s² = 200: Wq = 0.05·200/1 = 10 ms = ρ·s/(1-ρ)
    ("M/M/1", lambda: mg1_wait(0.05, 10.0, 200.0), 10.0),
    ("M/G/1 unstable", lambda: mg1_wait(0.1, 10.0, 100.0), math.inf),
    # Allen–Cunneen M/M/2 (Cs² = 1, exact): λ = 0.1, s = 10, A = 1, C = 1/3: Wq = (1/3)·10/(2-1)·(1+1)/2
    ("M/M/2", lambda: mgc_wait(2, 0.1, 10.0, 1.0)[1], 10 / 3),
    # the same with deterministic service (Cs² = 0) halves the wait: (1/3)·10/1·(1+0)/2
    ("M/D/2", lambda: mgc_wait(2, 0.1, 10.0, 0.0)[1], 5 / 3),
    # c = 1 reduces to Pollaczek–Khinchine: C = ρ = 0.5; 0.5·10/(1-0.5)·(1+0)/2 = 5 (the M/D/1 row)
    ("M/G/c at c=1", lambda: mgc_wait(1, 0.05, 10.0, 0.0)[1], 5.0),
]


@pytest.mark.parametrize(("case", "fn", "expected"), WAITS, ids=[w[0] for w in WAITS])
def test_mean_waits(case: str, fn: object, expected: float) -> None:
    assert fn() == pytest.approx(expected)  # type: ignore[operator]


QUANTILES = [
    # M/M/1 with ρ = 0.5, s = 10: E[W] = 10, P(W>0) = 0.5, θ = 10/0.5 = 20 = 1/(μ-λ) = 1/(0.1-0.05);
    # q95 = 20·ln(0.5/0.05) = 20·ln 10 = 46.0517
    ("M/M/1 wait p95", lambda: wait_p95(0.5, 10.0), 20 * math.log(10)),
    # waits with probability 0.04 <= 0.05: the 95th percentile is no wait at all
    ("rare waits", lambda: wait_p95(0.04, 3.0), 0.0),
    # service mean 10, Cs² = 0.04 (sd 2): q95 = 10·(1 + 1.6449·0.2) = 13.2897
    ("service p95", lambda: service_p95(10.0, 0.04), 13.289707253902944),
    # latency = 10 + hypot(3.2897, 46.0517) = 10 + 46.1691
    (
        "latency p95",
        lambda: latency_p95(10.0, 13.289707253902944, 0.5, 10.0),
        10 + math.hypot(3.289707253902944, 20 * math.log(10)),
    ),
    # no wait: the service p95 itself
    ("no wait", lambda: latency_p95(10.0, 13.0, 0.0, 0.0), 13.0),
]


@pytest.mark.parametrize(("case", "fn", "expected"), QUANTILES, ids=[q[0] for q in QUANTILES])
def test_quantiles(case: str, fn: object, expected: float) -> None:
    assert fn() == pytest.approx(expected)  # type: ignore[operator]


SHARING = [
    # cpu, one LiteRT tenant (concurrency 1) on 4 workers, no contention: M/D/1 of its own.
    # λ = 0.02/ms, s = 10: ρ = 0.2, Wq = 0.02·100/(2·0.8) = 1.25 -> mean 11.25, utilisation 0.2/4 = 0.05
    ("cpu alone", Processor("cpu", 4, 0.0), [Load("a", 20.0, 10.0, scv=0.0)], 0.05, 11.25),
    # cpu, two single-flight tenants on 2 workers, contention 0.2: nobody waits for a worker; the other
    # is busy 0.2·f on average, f = 1 + 0.2·0.2·f -> f = 1/(1-0.04) = 1.041667; utilisation 0.4·f/2
    (
        "cpu contention",
        Processor("cpu", 2, 0.2),
        [Load("a", 20.0, 10.0, scv=0.0), Load("b", 20.0, 10.0, scv=0.0)],
        0.4 / 0.96 / 2,
        None,
    ),
    # cpu, bursty arrivals (Ca² = 3) of the same LiteRT tenant: Allen–Cunneen with c = 1 (Kingman),
    # Wq = ρ·s/(1 - ρ)·(Ca² + Cs²)/2 = 0.2·10/0.8·(3 + 0)/2 = 3.75 -> mean 13.75 (Poisson: 11.25)
    ("cpu bursty", Processor("cpu", 4, 0.0), [Load("a", 20.0, 10.0, scv=0.0, arrival_scv=3.0)], 0.05, 13.75),
    # cpu, the worker's own timeline: a LiteRT tenant, λ = 0.02/ms, s = 10, Cs² = 0; the reply holds
    # its slot 2 ms more (occupancy 12, ρ = 0.24): Wq = 0.24·12/0.76·(1 + 0)/2 = 1.894737; dispatch
    # 0.5 ms is in the latency: mean 0.5 + 10 + 1.894737; utilisation 0.2/4 (the hold is the path's CPU)
    (
        "cpu dispatch and hold",
        Processor("cpu", 4, 0.0, dispatch_ms=0.5, hold_ms=2.0),
        [Load("a", 20.0, 10.0, scv=0.0)],
        0.05,
        0.5 + 10.0 + 0.24 * 12.0 / 0.76 / 2,
    ),
    # cpu, the agent's request path: one ONNX tenant (concurrency 2 = c, so nobody waits for the pool),
    # λ = 0.1/ms, s = 1, path g = 2 ms -> ρ_g = 0.2, Wg = λ·g²/(2·(1 - ρ_g)) = 0.4/1.6 = 0.25; other
    # processes 3 ms per request -> X = ρ_g + 0.3 = 0.5 cores aside; no other worker busy, k = 0.5, so
    # f = max(1, 1.5/2) = 1; own M/D/2 wait C(2, 0.1)·s/(2 - 0.1)/2 with C = 0.0047619;
    # utilisation (0.1 + 0.5)/2 = 0.3; mean 1 + 0.0047619/1.9/2 + 0.25
    (
        "cpu request path",
        Processor("cpu", 2, 0.0, path_ms=2.0, background_ms=3.0),
        [Load("a", 100.0, 1.0, scv=0.0, concurrency=2)],
        0.3,
        1.0 + 0.004761904761904762 / 1.9 / 2 + 0.25,
    ),
    # cpu, cores time-shared: one LiteRT tenant, λ = 0.1/ms, s = 1, other processes 15 ms per request
    # -> X = 1.5 cores aside, k = 1.5 others busy, f = max(1, 2.5/2) = 1.25; own M/D/1 at ρ = 0.125:
    # Wq = 0.125·1.25/(1 - 0.125)/2 = 0.0892857; utilisation (0.125 + 1.5)/2 = 0.8125
    (
        "cpu time-shared",
        Processor("cpu", 2, 0.0, background_ms=15.0),
        [Load("a", 100.0, 1.0, scv=0.0)],
        0.8125,
        1.25 + 0.125 * 1.25 / 0.875 / 2,
    ),
    # the path's cost grows with the request: 1 ms + 2 ms/MB at 0.5 MB = 2 ms, the same as above
    (
        "cpu path per MB",
        Processor("cpu", 2, 0.0, path_ms=1.0, path_ms_per_mb=2.0, background_ms=3.0),
        [Load("a", 100.0, 1.0, scv=0.0, concurrency=2, request_mb=0.5)],
        0.3,
        1.0 + 0.004761904761904762 / 1.9 / 2 + 0.25,
    ),
    # gpu, one tenant, 4 slots: ρ = 0.2; shares with min(N, 3): mean s·(1 + 0.2 + 0.04 + 0.008) = 12.48;
    # all slots taken with 0.2^4 = 0.0016, then waits θ = s·(1+Cs²)/(1-ρ) = 12.5: + 0.02 -> 12.5
    ("gpu alone", Processor("gpu", 4), [Load("a", 20.0, 10.0, scv=0.0, concurrency=4)], 0.2, 12.5),
    # tpu, two models at 100 req/s each, s = 1 ms, reload σ = 2 ms: p = 0.5 each,
    # E[S_g] = 1 + 0.5·2 = 2, ρ = 0.2·2 = 0.4, E[S²] = 2·0.5·(0.5·3² + 0.5·1²) = 5,
    # Wq = 0.2·5/(2·0.6) = 0.8333 -> mean 2.8333
    (
        "tpu two models",
        Processor("tpu"),
        [
            Load("a", 100.0, 1.0, scv=0.0, switch_ms=2.0, group="m1"),
            Load("b", 100.0, 1.0, scv=0.0, switch_ms=2.0, group="m2"),
        ],
        0.4,
        2 + 0.2 * 5 / 1.2,
    ),
]


@pytest.mark.parametrize(("case", "proc", "loads", "util", "mean"), SHARING, ids=[s[0] for s in SHARING])
def test_sharing_models(
    case: str, proc: Processor, loads: list[Load], util: float, mean: float | None
) -> None:
    out = predict(proc, loads)
    assert out.utilisation == pytest.approx(util, rel=1e-6)
    if mean is not None:
        assert out.mean_ms[0] == pytest.approx(mean, rel=1e-6)
    assert all(p >= m for p, m in zip(out.p95_ms, out.mean_ms, strict=True))


def test_unstable_and_monotone() -> None:
    cpu = Processor("cpu", 2, 0.18)
    one = Load("a", 50.0, 10.0)
    assert predict(cpu, [one]).p95_ms[0] < predict(cpu, [one, Load("b", 50.0, 10.0)]).p95_ms[0]
    # two tenants at 120 req/s · 10 ms = 2.4 workers' worth on 2 workers: unstable
    out = predict(cpu, [Load("a", 120.0, 10.0, concurrency=2), Load("b", 120.0, 10.0, concurrency=2)])
    assert out.utilisation >= 1.0 and math.isinf(out.p95_ms[0])
    # the request path alone: 600 req/s x 2 ms of serial work = 1.2 > 1, unstable however many cores
    out = predict(Processor("cpu", 8, path_ms=2.0), [Load("a", 600.0, 0.1, concurrency=8)])
    assert out.utilisation >= 1.0 and math.isinf(out.mean_ms[0])
    # the reply's hold on the worker delays the next request but costs no CPU beyond the path's
    held = Processor("cpu", 2, background_ms=10.0, hold_ms=2.0)
    base = dataclasses.replace(held, hold_ms=0.0)
    ld = [Load("a", 50.0, 5.0)]
    assert predict(held, ld).utilisation == predict(base, ld).utilisation
    assert predict(held, ld).mean_ms[0] > predict(base, ld).mean_ms[0]
    # a single-flight tenant whose run and reply together fill its slot is unstable: 90 x (10 + 2) ms
    assert math.isinf(predict(held, [Load("a", 90.0, 10.0)]).p95_ms[0])
    # the same model shares the TPU's parameters: no reload between tenants of one group
    same = predict(
        Processor("tpu"),
        [Load("a", 100, 1, switch_ms=5, group="m"), Load("b", 100, 1, switch_ms=5, group="m")],
    )
    other = predict(
        Processor("tpu"),
        [Load("a", 100, 1, switch_ms=5, group="m"), Load("b", 100, 1, switch_ms=5, group="n")],
    )
    assert same.utilisation == pytest.approx(0.2) and other.utilisation == pytest.approx(0.2 + 0.2 * 0.5 * 5)


# -- service curve and online estimation -----------------------------------------------------------
PROFILES = [
    ({1: 10.0}, ServiceCurve(0.0, 10.0)),  # one point: through the origin, no batching gain
    ({1: 5.0, 8: 12.0}, ServiceCurve(4.0, 1.0)),  # slope (12-5)/(8-1) = 1, a = 5 - 1 = 4
    ({1: 3.0, 2: 5.0, 4: 9.0}, ServiceCurve(1.0, 2.0)),  # exactly s(b) = 1 + 2b
]


@pytest.mark.parametrize(("profile", "curve"), PROFILES)
def test_fit_profile(profile: dict[int, float], curve: ServiceCurve) -> None:
    got = fit_profile(profile)
    assert got.fixed_ms == pytest.approx(curve.fixed_ms) and got.per_row_ms == pytest.approx(curve.per_row_ms)


def _window(
    est_batches: dict[int, int], a: float, c: float, rng: random.Random, noise: float
) -> TenantWindow:
    means = {b: (a + c * b) * (1 + rng.gauss(0, noise) / math.sqrt(n)) for b, n in est_batches.items()}
    return TenantWindow(
        tenant="t",
        model="m",
        variant="fp32",
        slo_ms=100,
        service_ms_by_batch=means,
        batches_by_size=est_batches,
    )


def test_estimator_converges_to_known_parameters() -> None:
    rng = random.Random(3)
    est = RlsEstimator.from_profile({1: 10.0})  # wrong prior: s(b) = 10·b
    for _ in range(60):  # true s(b) = 3 + 2·b, 10% noise per batch
        est = est.observe(_window({1: 40, 2: 10, 4: 5, 8: 3}, 3.0, 2.0, rng, 0.1))
    assert est.fixed_ms == pytest.approx(3.0, rel=0.05) and est.per_row_ms == pytest.approx(2.0, rel=0.05)
    for _ in range(60):  # the device got slower: s(b) = 6 + 4·b; forgetting follows it
        est = est.observe(_window({1: 40, 2: 10, 4: 5, 8: 3}, 6.0, 4.0, rng, 0.1))
    assert est.fixed_ms == pytest.approx(6.0, rel=0.05) and est.per_row_ms == pytest.approx(4.0, rel=0.05)
    assert est.windows == 120


def test_estimator_deflates_colocated_measurements_and_ignores_empty_windows() -> None:
    est = RlsEstimator.from_profile({1: 5.0, 8: 12.0})
    same = est.update({}, {})
    assert same is est
    for _ in range(80):  # measured 1.5x slower under co-location the model predicted: the curve stays
        est = est.update({1: 7.5, 8: 18.0}, {1: 20, 8: 20}, slowdown=1.5)
    assert est.curve.at(1) == pytest.approx(5.0, rel=0.01) and est.curve.at(8) == pytest.approx(
        12.0, rel=0.01
    )
    for _ in range(200):  # only batch 1 seen: the slope direction must not wind up
        est = est.update({1: 5.0}, {1: 50})
    assert est.p11 + est.p22 <= est.trace_cap * (1 + 1e-9)


ERROR_BOOK = [
    # (case, alpha, windows as (predicted p95, observed p95), ape, bias, windows counted)
    # one window: predicted 12, observed 10: rel = (12-10)/10 = +0.2 -> ape 0.2, bias 0.2
    ("one pessimistic window", 0.5, [(12.0, 10.0)], 0.2, 0.2, 1),
    # then predicted 8, observed 10: rel = -0.2 -> ape 0.5·0.2 + 0.5·0.2 = 0.2, bias 0.5·0.2 - 0.5·0.2 = 0
    ("errors of both signs", 0.5, [(12.0, 10.0), (8.0, 10.0)], 0.2, 0.0, 2),
    # 10 vs 8: rel = +0.25; 10 vs 12.5: rel = -0.2 -> ape 0.8·0.25 + 0.2·0.2 = 0.24,
    # bias 0.8·0.25 - 0.2·0.2 = 0.16
    ("default alpha", 0.2, [(10.0, 8.0), (10.0, 12.5)], 0.24, 0.16, 2),
    # no completions (observed 0) and an unstable prediction (inf) are skipped: only 15 vs 10 counts
    ("unusable windows skipped", 0.2, [(5.0, 0.0), (math.inf, 10.0), (15.0, 10.0)], 0.5, 0.5, 1),
]


@pytest.mark.parametrize(("case", "alpha", "windows", "ape", "bias", "n"), ERROR_BOOK,
                         ids=[e[0] for e in ERROR_BOOK])
def test_error_book_ewma(case: str, alpha: float, windows: list[tuple[float, float]], ape: float, bias: float,
                         n: int) -> None:
    book = ErrorBook(alpha=alpha).record_all(
        ("t", Scored(pred, obs, rate_rps=float(i + 1), device="d1")) for i, (pred, obs) in enumerate(windows)
    )
    stat = book.stats["t"]
    assert (stat.ape, stat.bias, stat.windows) == (pytest.approx(ape), pytest.approx(bias), n)
    usable = [(i, p, o) for i, (p, o) in enumerate(windows) if o > 0 and math.isfinite(p)]
    i, pred, obs = usable[-1]  # the last usable window is the one kept, with the rate it was for
    assert (stat.last.predicted_ms, stat.last.observed_ms, stat.last.rate_rps) == (pred, obs, i + 1)


def test_error_book_is_frozen_and_forgets() -> None:
    book = ErrorBook().record("a", Scored(12.0, 10.0)).record("b", Scored(10.0, 10.0))
    assert book.record("a", Scored(5.0, 0.0)) is book  # no completions, no p95: the same book
    # mean APE over tenants: (0.2 + 0) / 2
    assert book.mean_ape() == pytest.approx(0.1)
    assert book.forget("a").mean_ape() == pytest.approx(0.0) and "a" in book.stats  # the old book is unchanged
    assert math.isnan(book.forget("a").forget("b").mean_ape())
    with pytest.raises(dataclasses.FrozenInstanceError):
        book.stats["a"].last.predicted_ms = 1.0  # type: ignore[misc]


def _report_book() -> ErrorBook:
    # b: 10 vs 8 (rel +0.25) then 10 vs 12.5 (rel -0.2): ape 0.24, bias 0.16 (the "default alpha" row)
    # a: 9 vs 10: rel -0.1 -> ape 0.1, bias -0.1 (optimistic)
    return ErrorBook().record_all([
        ("b", Scored(10.0, 8.0, 2.0, "d2", "x86-cpu", "vad", "fp32")),
        ("b", Scored(10.0, 12.5, 3.0, "d2", "x86-cpu", "vad", "fp32")),
        ("a", Scored(9.0, 10.0, 20.0, "d1", "coral-tpu", "face-detect", "int8")),
    ])


def test_model_report_lists_each_tenant_by_name_with_its_last_window() -> None:
    report = model_report(_report_book(), 100.0)
    assert [t.tenant for t in report.tenants] == ["a", "b"]
    a, b = report.tenants
    assert (a.device_id, a.device_kind, a.model, a.variant, a.windows) == ("d1", "coral-tpu", "face-detect", "int8", 1)
    assert (a.predicted_p95_ms, a.observed_p95_ms, a.arrival_rps) == (9.0, 10.0, 20.0)
    assert (a.ape_ratio, a.bias_ratio) == (pytest.approx(0.1), pytest.approx(-0.1))
    assert (b.predicted_p95_ms, b.observed_p95_ms, b.arrival_rps, b.windows) == (10.0, 12.5, 3.0, 2)
    # mean APE (0.1 + 0.24) / 2 = 0.17; only "b": 0.24; nobody: None (not NaN, which JSON cannot carry)
    assert report.mean_ape_ratio == pytest.approx(0.17) and report.ts == 100.0
    only_b = model_report(_report_book(), 100.0, only={"b", "gone"})
    assert [t.tenant for t in only_b.tenants] == ["b"] and only_b.mean_ape_ratio == pytest.approx(0.24)
    empty = model_report(ErrorBook(), 5.0)
    assert (empty.tenants, empty.mean_ape_ratio) == ([], None)
    assert decode_model_report(encode(report)) == report


SCHEDULE = [
    # (case, period s, last published at, with the same content?, now, publish?)
    ("never published", 10.0, None, False, 0.0, True),
    ("period not over", 10.0, 100.0, False, 109.9, False),
    ("period over, changed", 10.0, 100.0, False, 110.0, True),
    ("period over, unchanged", 10.0, 100.0, True, 500.0, False),
    ("clock went back", 10.0, 100.0, False, 50.0, True),
    ("disabled", 0.0, None, False, 1e9, False),
]


@pytest.mark.parametrize(("case", "period", "at", "same", "now", "publish"), SCHEDULE, ids=[c[0] for c in SCHEDULE])
def test_report_schedule(case: str, period: float, at: float | None, same: bool, now: float, publish: bool) -> None:
    report = model_report(_report_book(), now)  # built now: only its time differs from the same one
    schedule = ReportSchedule(period)
    if at is not None:
        sent = model_report(_report_book() if same else _report_book().forget("a"), at)
        schedule = schedule.published(sent, at)
    assert schedule.due(report, now) is publish
    after = schedule.published(report, now)
    assert after.due(model_report(_report_book(), now + 3 * max(period, 1.0)), now + 3 * max(period, 1.0)) is False


def test_calibration_derivations() -> None:
    d = derive(read())
    # embedded/desktop ratios of the 7 Coral rows, sorted: 2.392 2.660 3.094 3.239 4.218 4.356 6.884
    assert d["arm_factor"] == pytest.approx(353 / 109)
    assert d["tpu_ratio"] == pytest.approx(0.0532, abs=1e-3) and d["tpu_fixed_ms"] == pytest.approx(
        0.19, abs=0.01
    )
    # pose-landmark: 6440512 fp32 bytes / 4 (int8) / 500 MB/s = 3.22 ms
    assert d["tpu_switch_ms"]["pose-landmark"] == pytest.approx(6440512 / 4 / 5e5)
    book = build_book()
    # vad on x86: s(1) = 0.2 measured; 2.5x throughput at batch 8: s(8) = 8·0.2/2.5 = 0.64,
    # c = (0.64 - 0.2)/7 = 0.062857, a = 0.2 - c = 0.137143
    vad = book.profile("vad", "fp32", "x86-cpu")
    assert (
        vad is not None and vad.curve.at(1) == pytest.approx(0.2) and vad.curve.at(8) == pytest.approx(0.64)
    )
    assert book.kinds["jetson-gpu"].processor_of("onnxruntime") == ("gpu", Processor("gpu", 4))


# -- the analytic model against the discrete-event simulation -------------------------------------
AGAINST_SIM = [
    # (case, processor, loads): moderate utilisation, where placement operates (headroom 0.8)
    (
        "cpu pool, ONNX tenants",
        Processor("cpu", 4, 0.183),
        [Load(f"t{i}", 20.0, 24.3, concurrency=4) for i in range(4)],
    ),
    ("cpu, LiteRT tenants", Processor("cpu", 4, 0.183), [Load(f"t{i}", 10.0, 24.3) for i in range(8)]),
    ("cpu, mixed sizes", Processor("cpu", 4, 0.183), [Load("big", 8.0, 55.0), Load("small", 30.0, 4.2)] * 2),
    (
        "cpu, the agent's request path",
        Processor("cpu", 2, 0.183, path_ms=1.0, path_ms_per_mb=1.5, background_ms=1.3, dispatch_ms=0.35,
                  hold_ms=0.4),
        [Load("hand", 14.0, 9.2, request_mb=0.6), Load("cls", 50.0, 1.2, concurrency=2, request_mb=0.11)] * 2,
    ),
    (
        "tpu, four models",
        Processor("tpu"),
        [
            Load("pose", 15.0, 1.1, switch_ms=3.2, group="pose"),
            Load("hand", 15.0, 0.68, switch_ms=2.7, group="hand"),
            Load("seg", 30.0, 0.43, switch_ms=0.12, group="seg"),
            Load("face", 30.0, 0.26, switch_ms=0.11, group="face"),
        ]
        * 3,
    ),
    ("gpu, light", Processor("gpu", 4), [Load(f"t{i}", 30.0, 1.96, concurrency=4) for i in range(8)]),
]


@pytest.mark.parametrize(("case", "proc", "loads"), AGAINST_SIM, ids=[a[0] for a in AGAINST_SIM])
def test_model_tracks_simulation(case: str, proc: Processor, loads: list[Load]) -> None:
    from edgefleet.coordinator.perf.simulate import simulate

    loads = [
        Load(
            f"{ld.name}{i}",
            ld.rate_rps,
            ld.service_ms,
            ld.slo_ms,
            ld.scv,
            ld.concurrency,
            ld.switch_ms,
            ld.group,
            ld.request_mb,
        )
        for i, ld in enumerate(loads)
    ]
    out = predict(proc, loads)
    assert out.utilisation < 0.8
    sim = simulate(proc, [(1000 + i, ld) for i, ld in enumerate(loads)], 120_000.0, 5_000.0)
    for pred, (_, p95) in zip(out.p95_ms, sim, strict=True):
        assert abs(pred - p95) / p95 < 0.25, (case, pred, p95)  # seen here: -16 % .. +20 %


def test_learner_follows_telemetry_and_records_its_error() -> None:
    from edgefleet.coordinator.perf.learner import Learner
    from edgefleet.wire import DeviceWindow, Telemetry

    book = build_book()
    learner = Learner(book)
    # an x86 box that runs ocr-rec twice as slow as the calibration says (s(b) = 48.6·b), alone, 5 req/s
    true = ServiceCurve(0.0, 48.6)
    for seq in range(40):
        w = TenantWindow(
            tenant="t",
            model="ocr-rec",
            variant="fp32",
            slo_ms=500,
            arrivals=50,
            completions=50,
            arrival_rps=5.0,
            latency_p95_ms=80.0,
            service_ms_by_batch={1: true.at(1), 2: true.at(2)},
            batches_by_size={1: 40, 2: 5},
        )
        tel = Telemetry(
            device_id="d1",
            boot_id="b",
            seq=seq,
            window_start=seq * 10.0,
            window_end=seq * 10.0 + 10,
            device=DeviceWindow(
                cpu_percent=30, memory_used_bytes=1, memory_budget_bytes=1, model_memory_bytes=1
            ),
            tenants=[w],
        )
        learner = learner.observe("x86-cpu", tel)
    learnt = learner.book.profile("ocr-rec", "fp32", "x86-cpu")
    assert learnt is not None and learnt.curve.at(1) == pytest.approx(48.6, rel=0.03)
    before = book.profile("ocr-rec", "fp32", "x86-cpu")
    assert before is not None and before.curve.at(1) == pytest.approx(24.3)  # the old book is unchanged
    stat = learner.errors.stats["t"]
    assert stat.windows == 40
    # the last window scored is kept with what the prediction was for: device, kind, model, rate
    assert (stat.last.device, stat.last.kind, stat.last.model, stat.last.variant, stat.last.rate_rps) == (
        "d1", "x86-cpu", "ocr-rec", "fp32", 5.0)
    assert stat.last.observed_ms == 80.0 and stat.last.predicted_ms > 0
    # late windows: predicted p95 near the measured 80 ms once the curve has moved (first ones were far off)
    assert learner.errors.stats["t"].ape < 0.5


BURSTS = [
    # (agent's measured Ca², arrivals in the window) -> what the model uses
    (0.0, 100, 1.0),  # not measured (an older agent): Poisson
    (2.5, 2, 1.0),  # too few arrivals to say
    (2.5, 100, 2.5),
    (0.4, 100, 0.4),  # smoother than Poisson
    (50.0, 100, 10.0),  # a stall, not a load: capped
]


@pytest.mark.parametrize(("measured", "arrivals", "used"), BURSTS)
def test_arrival_burstiness_from_a_window(measured: float, arrivals: int, used: float) -> None:
    from edgefleet.coordinator.perf.learner import arrival_scv

    w = TenantWindow(tenant="a", model="m", variant="fp32", slo_ms=10.0, arrivals=arrivals,
                     arrival_scv=measured)
    assert arrival_scv(w) == used


@given(st.lists(st.tuples(st.sampled_from([f"t{i}" for i in range(40)]), st.booleans()), max_size=60))
def test_the_sharded_error_book_behaves_as_a_dict_and_never_changes_an_old_book(ops: list[tuple[str, bool]]) -> None:
    """Recording copies one shard of the book (so a window's cost does not grow with the tenants); it
    must still act as a plain mapping, and every earlier book must stay as it was."""
    book, model = ErrorBook(), {}
    history = [(book, dict(model))]
    for i, (tenant, keep) in enumerate(ops):
        if keep:
            book = book.record(tenant, Scored(10.0 + i, 10.0))
            model[tenant] = book.stats[tenant]
        else:
            book = book.forget(tenant)
            model.pop(tenant, None)
        history.append((book, dict(model)))
    for b, m in history:
        assert dict(b.stats) == m and len(b.stats) == len(m) and set(b.stats) == set(m)
        assert all((t in b.stats) == (t in m) for t in ("t0", "t1", "nope"))


@given(st.lists(st.lists(st.tuples(st.sampled_from([f"t{i}" for i in range(40)]),
                                   st.floats(min_value=-1.0, max_value=50.0)), max_size=5), max_size=20))
def test_recording_a_window_of_tenants_at_once_equals_recording_them_one_by_one(
        windows: list[list[tuple[str, float]]]) -> None:
    """``record_all`` (one copy of the book per telemetry window) gives the same book as ``record`` of each
    tenant in turn, a tenant twice in one window and unusable p95s (observed <= 0) included, and leaves
    the book it started from unchanged."""
    together, apart = ErrorBook(), ErrorBook()
    for window in windows:
        scored = [(t, Scored(10.0, obs)) for t, obs in window]
        before = dict(together.stats)
        after = together.record_all(scored)
        assert dict(together.stats) == before
        together = after
        for t, s in scored:
            apart = apart.record(t, s)
        assert dict(together.stats) == dict(apart.stats) and len(together.stats) == len(apart.stats)
