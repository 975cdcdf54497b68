"""The benchmarks' metric functions (edgefleet.bench.metrics) and report table (edgefleet.bench.results), table-driven with
the arithmetic written out: a benchmark's figure is only as honest as the function that computes it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.bench import metrics, results

INF = math.inf


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 95, 5.0),  # one value is every percentile
        (list(range(1, 21)), 95, 19.05),  # rank 0.95*19 = 18.05 -> 19 + 0.05*(20-19)
        (list(range(1, 21)), 50, 10.5),  # rank 9.5 -> 10 + 0.5*(11-10)
        ([10.0, 20.0], 95, 19.5),  # rank 0.95 -> 10 + 0.95*10
        ([1.0, 2.0, 3.0, INF], 50, 2.5),  # rank 1.5 -> 2 + 0.5*1; the failure sorts last
        ([1.0, 2.0, 3.0, INF], 95, INF),  # rank 2.85 lands between 3 and inf -> inf
        ([3.0, 1.0, 2.0], 0, 1.0),  # order of input does not matter
    ],
)
def test_percentile(values: list[float], q: float, expected: float) -> None:
    assert metrics.percentile(values, q) == pytest.approx(expected)


def test_percentile_of_nothing_is_nan_and_q_is_checked() -> None:
    assert math.isnan(metrics.percentile([], 95))
    with pytest.raises(ValueError):
        metrics.percentile([1.0], 101)


@pytest.mark.parametrize(
    ("latencies", "failures", "expected"),
    [
        (list(range(1, 21)), 0, 19.05),  # no failure: the plain p95 of 1..20
        (list(range(1, 20)), 1, INF),  # 19 answers + 1 failure: rank 18.05 reaches the inf at index 19
        (list(range(1, 40)), 1, 38.05),  # 39 answers + 1 failure: rank 0.95*39 = 37.05 -> 38 + 0.05*(39-38)
        ([], 3, INF),  # nothing answered
    ],
)
def test_p95_counting_failures(latencies: list[float], failures: int, expected: float) -> None:
    assert metrics.p95_counting_failures(latencies, failures) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("num", "den", "expected"),
    [(6.0, 3.0, 2.0), (1.0, 0.0, None), (None, 2.0, None), (2.0, None, None), (0.0, 4.0, 0.0)],
)
def test_ratio(num: float | None, den: float | None, expected: float | None) -> None:
    assert metrics.ratio(num, den) == expected


@pytest.mark.parametrize(
    ("predicted", "measured", "expected"),
    [
        (11.0, 10.0, 0.1),  # |11-10|/10
        (9.0, 10.0, 0.1),  # |9-10|/10
        (30.0, 10.0, 2.0),  # |30-10|/10: a pessimistic miss can exceed 1
        (10.0, INF, 1.0),  # the requests failed; a finite prediction missed entirely
        (INF, INF, 0.0),  # the model said "cannot serve" and it could not
        (INF, 10.0, 1.0),  # the model said "cannot serve" and it could
    ],
)
def test_ape(predicted: float, measured: float, expected: float) -> None:
    assert metrics.ape(predicted, measured) == pytest.approx(expected)


def test_mape() -> None:
    # (|11-10|/10 + |15-20|/20) / 2 = (0.1 + 0.25) / 2 = 0.175
    assert metrics.mape([(11.0, 10.0), (15.0, 20.0)]) == pytest.approx(0.175)
    assert metrics.mape([]) is None
    with pytest.raises(ValueError):
        metrics.ape(1.0, 0.0)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([3.0, 1.0, 2.0], {"min": 1.0, "median": 2.0, "max": 3.0}),
        ([4.0, 1.0, 2.0, 3.0], {"min": 1.0, "median": 2.5, "max": 4.0}),  # median (2+3)/2
        ([], {"min": None, "median": None, "max": None}),
    ],
)
def test_spread(values: list[float], expected: dict[str, float | None]) -> None:
    assert metrics.spread(values) == expected


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        ([(1, 0), (2, 0), (3, 0)], 3),  # never violated: everything accepted counts
        ([(1, 0), (2, 0), (3, 1), (3, 1)], 2),  # the third broke an SLO and it stayed broken: 2
        ([(1, 0), (2, 1), (2, 0), (3, 0)], 3),  # violation cleared later (judged clean again): last clean point
        ([(1, 1), (2, 2)], 0),  # never clean: 0
        ([(0, 0), (0, 0)], 0),  # rejected everything: 0
        ([], 0),
    ],
)
def test_admission_score(history: list[tuple[int, int]], expected: int) -> None:
    assert metrics.admission_score(history) == expected


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 5)), max_size=30))
def test_admission_score_is_one_of_the_clean_points(history: list[tuple[int, int]]) -> None:
    score = metrics.admission_score(history)
    clean = [a for a, v in history if v == 0]
    assert score == (clean[-1] if clean else 0)


def test_normalized_gain_and_serial_rate() -> None:
    # two tenants each at 80% of their solo rate together: 0.8 + 0.8 = 1.6
    assert metrics.normalized_gain({"a": 80.0, "b": 40.0}, {"a": 100.0, "b": 50.0}) == pytest.approx(1.6)
    # serial with equal request counts: 2 / (1/100 + 1/50) = 2 / 0.03 = 66.67 req/s
    assert metrics.serial_rps({"a": 100.0, "b": 50.0}) == pytest.approx(66.666, rel=1e-4)
    assert metrics.serial_rps({}) == 0.0


@pytest.mark.parametrize(
    ("produced", "stored", "expected"),
    [
        ([0, 1, 2], [0, 1, 2], {"produced": 3, "stored": 3, "lost": 0, "duplicated": 0, "unknown": 0}),
        # the last window of a killed boot never arrived: a lost tail is seen only against the ledger
        ([0, 1, 2, 3], [0, 1, 2], {"produced": 4, "stored": 3, "lost": 1, "duplicated": 0, "unknown": 0}),
        # window 1 stored three times: 2 extra copies
        ([0, 1], [0, 1, 1, 1], {"produced": 2, "stored": 4, "lost": 0, "duplicated": 2, "unknown": 0}),
        ([0], [0, 9], {"produced": 1, "stored": 2, "lost": 0, "duplicated": 0, "unknown": 1}),
    ],
)
def test_ledger_diff(produced: list[int], stored: list[int], expected: dict[str, int]) -> None:
    assert metrics.ledger_diff(produced, stored) == expected


@pytest.mark.parametrize(
    ("measured", "goal", "higher", "expected"),
    [(2.4, 2.3, True, True), (2.2, 2.3, True, False), (0.09, 0.10, False, True), (0.2, 0.10, False, False),
     (None, 1.0, True, None), (math.nan, 1.0, True, None)],
)
def test_goal_met(measured: float | None, goal: float, higher: bool, expected: bool | None) -> None:
    assert metrics.goal_met(measured, goal, higher_is_better=higher) is expected


# ---- the report -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "goal", "expected"),
    [
        ("gain_vs_best_knapsack", 2.3, (2.3, True)),
        ("mape", 0.10, (0.10, False)),  # an error: at most
        ("seconds", 1.0, (1.0, False)),  # a time: at most
        ("floor_violations", 0, (0.0, False)),
        ("telemetry_lost", 0, (0.0, False)),
        ("p50_ms", 1.1, (1.1, False)),
        ("goodput", {"at_least": 0.9}, (0.9, True)),
        ("whatever", {"at_most": 3}, (3.0, False)),
        ("reference", "Triton", None),  # not a numeric goal
        ("flag", True, None),
    ],
)
def test_goal_direction(key: str, goal: object, expected: tuple[float, bool] | None) -> None:
    assert results.goal_direction(key, goal) == expected


def test_row_shows_figures_against_goals_and_provenance() -> None:
    data = {
        "goal": {"gain_vs_best_knapsack": 2.3, "mape": 0.1, "not_there": 1.0},
        "gain_vs_best_knapsack": 1.5,
        "mape": 0.08,
        "provenance": {"commit": "0123456789abcdef", "tree_dirty": False, "finished_utc": "2026-12-04T17:00:00+00:00",
                       "loadavg_start": [1.5, 1.0, 0.9]},
    }
    line = results.row("placement", data, "results/placement.json", "tenants hosted")
    assert "`gain_vs_best_knapsack` **1.5** (goal ≥ 2.3: **missed**)" in line
    assert "`mape` **0.08** (goal ≤ 0.1: met)" in line
    assert "`not_there` **none** (goal ≥ 1: not measured)" in line
    assert "[results/placement.json](results/placement.json), commit 0123456789, 2026-12-04T17:00:00+00:00, load 1.50" in line


def test_row_of_a_benchmark_never_run_says_so() -> None:
    assert results.row("memory", None, "results/memory.json", "warm starts") == "| `memory` | warm starts | not run | — |"


def test_splice_replaces_only_between_markers() -> None:
    doc = f"# B\nintro\n{results.BEGIN}\nold\n{results.END}\nprose\n"
    assert results.splice(doc, "new") == f"# B\nintro\n{results.BEGIN}\nnew\n{results.END}\nprose\n"
    assert results.splice("# B\n", "t") == f"# B\n\n{results.BEGIN}\nt\n{results.END}\n"


def test_write_report_lists_registered_and_unregistered_files(tmp_path: Path) -> None:
    res = tmp_path / "results"
    res.mkdir()
    (res / "placement.json").write_text(json.dumps({"goal": {"gain_vs_best_knapsack": 2.3},
                                                    "gain_vs_best_knapsack": 2.5}))
    (res / "ingest.json").write_text(json.dumps({"goal": {"rate_ratio": 0.9}, "rate_ratio": 0.95}))
    (res / "broken.json").write_text("{not json")
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n{results.BEGIN}\n{results.END}\nkept\n")
    table = results.write_report(["placement", "memory"], results_dir=res, doc=doc)
    text = doc.read_text()
    assert table in text and text.endswith("kept\n")
    lines = table.splitlines()
    assert lines[2].startswith("| `placement` |") and "**2.5** (goal ≥ 2.3: met)" in lines[2]
    assert lines[3].startswith("| `memory` |") and "not run" in lines[3]
    assert any(ln.startswith("| `ingest` |") and "(goal ≥ 0.9: met)" in ln for ln in lines)
    assert any(ln.startswith("| `broken` |") for ln in lines)  # an unreadable file is listed, not hidden


def test_provenance_names_the_commit_and_machine() -> None:
    results.mark_start()
    prov = results.provenance()
    assert prov["commit"] is None or len(prov["commit"]) == 40
    assert prov["machine"]["cpus"] and prov["started_utc"] and prov["finished_utc"]


# ---- multitenancy's per-mix figures ------------------------------------------------------------------


def test_multitenancy_mix_figures() -> None:
    from edgefleet.bench.multitenancy import headline, mix_figures

    fig = mix_figures(agent_solo={"a": 100.0, "b": 50.0}, agent_conc={"a": 80.0, "b": 40.0},
                      raw_solo={"a": 125.0, "b": 50.0}, raw_conc={"a": 100.0, "b": 45.0})
    assert fig["gain_vs_serial"] == pytest.approx(1.6)  # 80/100 + 40/50
    assert fig["raw_gain_vs_serial"] == pytest.approx(1.7)  # 100/125 + 45/50
    # agent work 80/125 + 40/50 = 1.44 over raw work 1.7 = 0.847
    assert fig["no_loss_ratio"] == pytest.approx(1.44 / 1.7)
    assert fig["solo_no_loss"] == {"a": pytest.approx(0.8), "b": pytest.approx(1.0)}  # 100/125, 50/50
    assert fig["agent_serial_rps_total"] == pytest.approx(200.0 / 3.0)  # 2 / (1/100 + 1/50)
    second = {"gain_vs_serial": 1.2, "raw_gain_vs_serial": 1.3, "no_loss_ratio": 0.95}
    head = headline({"m1": fig, "m2": second})
    assert head["no_loss_ratio_min"] == pytest.approx(1.44 / 1.7)  # min(0.847, 0.95)
    assert head["gain_vs_serial_min"] == pytest.approx(1.2)  # min(1.6, 1.2)
    assert head["gain_vs_serial_min_where_raw_reaches_goal"] == pytest.approx(1.6)  # only m1's raw >= 1.6
    assert head["raw_gain_vs_serial_min"] == pytest.approx(1.3)


# ---- perfmodel's scoring of one run ---------------------------------------------------------------------


def test_perfmodel_scores_failures_as_beyond_the_slo() -> None:
    from edgefleet.bench.perfmodel import score_run

    names = {"a": "t0-a"}
    # 20 answers of 2 ms queue + 8 ms service = 10 ms inside the agent, 12.5 ms at the app; predicted 11
    clean = [{"inside": [(2.0, 8.0)] * 20, "app_ms": [12.5] * 20, "failures": {}}]
    row = score_run(("a",), 0.4, names, {"a": 10.0}, clean, {"t0-a": (11.0, 8.0)}, {"t0-a": (20.0, 8.0)})[0]
    assert row["measured_p95_ms"] == pytest.approx(10.0)
    assert row["ape"] == pytest.approx(0.1)  # |11 - 10| / 10
    assert row["ape_app"] == pytest.approx(0.12)  # |11 - 12.5| / 12.5
    assert row["ape_book_only"] == pytest.approx(1.0)  # |20 - 10| / 10
    # 19 answers and 1 timeout: the p95's rank 0.95 * 19 = 18.05 reaches the failure -> inf, error 1
    failed = [{"inside": [(2.0, 8.0)] * 19, "app_ms": [12.5] * 19, "failures": {"timeout": 1}}]
    row = score_run(("a",), 0.8, names, {"a": 10.0}, failed, {"t0-a": (11.0, 8.0)}, {"t0-a": (11.0, 8.0)})[0]
    assert row["measured_p95_ms"] == INF and row["failed"] == 1
    assert row["ape"] == 1.0 and row["ape_app"] == 1.0


@pytest.mark.parametrize(
    ("served", "expected"),
    [
        ([], 0),  # nothing served, nothing violated
        ([(1.0, 0.99), (0.994, 0.99)], 0),  # fp32 and fp16 (0.994) both at or above 0.99
        ([(0.99, 0.99)], 0),  # exactly at the floor meets it
        ([(0.95, 0.99), (0.95, 0.9), (0.78, 0.9)], 2),  # 0.95 < 0.99 and 0.78 < 0.9; 0.95 >= 0.9 is fine
        ([(0.5, 0.0)] * 3, 0),  # a tenant with no floor accepts anything
    ],
)
def test_floor_violations(served: list[tuple[float, float]], expected: int) -> None:
    assert metrics.floor_violations(served) == expected


@pytest.mark.parametrize(
    ("waits", "expected"),
    [
        ([], None),  # no start: no share
        ([0.0, 0.0, 0.0, 0.0], 1.0),  # every start found its model ready
        ([0.0, 0.12, 0.0, 0.5], 0.5),  # 2 of 4 waited for a load
        ([0.0, INF], 0.5),  # one never served (no room): cold
    ],
)
def test_warm_share(waits: list[float], expected: float | None) -> None:
    assert metrics.warm_share(waits) == expected


@pytest.mark.parametrize(
    ("intervals", "start", "end", "expected"),
    [
        ([], 0.0, 10.0, 0.0),  # nothing resident
        ([(0.0, 10.0), (0.0, 10.0)], 0.0, 10.0, 2.0),  # two models all the time
        ([(0.0, 5.0), (5.0, 10.0)], 0.0, 10.0, 1.0),  # one after the other: (5 + 5) / 10
        ([(-5.0, 5.0), (8.0, 20.0)], 0.0, 10.0, 0.7),  # clipped: (5 - 0) + (10 - 8) = 7 over 10
        ([(6.0, 4.0)], 0.0, 10.0, 0.0),  # evicted (4) before it was ready (6): never resident
        ([(2.0, 3.0)], 2.0, 4.0, 0.5),  # 1 s of a 2 s window
    ],
)
def test_time_average_count(intervals: list[tuple[float, float]], start: float, end: float,
                            expected: float) -> None:
    assert metrics.time_average_count(intervals, start, end) == pytest.approx(expected)


def test_time_average_count_needs_a_window() -> None:
    with pytest.raises(ValueError):
        metrics.time_average_count([], 5.0, 5.0)


@pytest.mark.parametrize(
    ("fidelities", "expected"),
    [
        ([], None),
        ([1.0, 1.0], 0.0),  # all fp32
        ([1.0, 0.994, 0.95, 0.976], 0.02),  # mean (1 + 0.994 + 0.95 + 0.976) / 4 = 0.98 -> loss 0.02
    ],
)
def test_fidelity_loss(fidelities: list[float], expected: float | None) -> None:
    got = metrics.fidelity_loss(fidelities)
    assert got == expected if expected is None else got == pytest.approx(expected)


# ---- batching ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("latencies", "sent", "duration", "slo", "expected"),
    [
        # 4 answers within 10 ms of 5 sent in 2 s: attainment 4/5 = 0.8, goodput 4/2 = 2/s,
        # mean (2+4+6+8)/4 = 5 ms -> utility 2 * (1 - 0.5 * 5/10) = 1.5
        ([2.0, 4.0, 6.0, 8.0], 5, 2.0, 10.0, {"within_slo": 4, "slo_attainment": 0.8, "goodput_rps": 2.0,
                                               "mean_latency_ms": 5.0, "utility": 1.5}),
        # a late answer (30 ms) counts in the mean, not in goodput: good 1, mean (10+30)/2 = 20 ms:
        # 1 - 0.5*20/10 = 0 -> utility 0
        ([10.0, 30.0], 2, 1.0, 10.0, {"within_slo": 1, "slo_attainment": 0.5, "goodput_rps": 1.0,
                                       "mean_latency_ms": 20.0, "utility": 0.0}),
        # nothing answered: mean taken as the SLO, utility 0
        ([], 3, 1.0, 10.0, {"within_slo": 0, "slo_attainment": 0.0, "goodput_rps": 0.0,
                             "mean_latency_ms": 10.0, "utility": 0.0}),
        # nothing sent
        ([], 0, 1.0, 10.0, {"within_slo": 0, "slo_attainment": 0.0, "utility": 0.0}),
    ],
)
def test_batching_point(latencies: list[float], sent: int, duration: float, slo: float,
                        expected: dict[str, float]) -> None:
    point = metrics.batching_point(latencies, sent=sent, duration_s=duration, slo_ms=slo)
    for key, value in expected.items():
        assert point[key] == pytest.approx(value), key


def test_batching_point_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError):
        metrics.batching_point([1.0, 2.0], sent=1, duration_s=1.0, slo_ms=10.0)
    with pytest.raises(ValueError):
        metrics.batching_point([], sent=1, duration_s=0.0, slo_ms=10.0)


def test_pooled_point() -> None:
    seeds = [{"sent": 100, "within_slo": 99, "goodput_rps": 99.0, "utility": 80.0},
             {"sent": 300, "within_slo": 297, "goodput_rps": 297.0, "utility": 200.0}]
    pooled = metrics.pooled_point(seeds)
    assert pooled["slo_attainment"] == pytest.approx(0.99)  # (99 + 297) / (100 + 300) = 396/400
    assert pooled["utility"] == pytest.approx(140.0)  # (80 + 200) / 2
    assert pooled["goodput_rps"] == pytest.approx(198.0)  # (99 + 297) / 2
    with pytest.raises(ValueError):
        metrics.pooled_point([])


@pytest.mark.parametrize(
    ("adaptive", "baselines", "expected_gain", "expected_best"),
    [
        # totals: a = 10+20 = 30, b = 5+40 = 45 -> best b (one configuration for the sweep, not the
        # best per load, which would be 10+40 = 50); adaptive 15+45 = 60 -> 60/45 = 1.333
        ({"1": 15.0, "2": 45.0}, {"a": {"1": 10.0, "2": 20.0}, "b": {"1": 5.0, "2": 40.0}}, 60 / 45, "b"),
        # a tie in total goes to the first name: a = b = 30 -> a; 30/30 = 1
        ({"1": 10.0, "2": 20.0}, {"b": {"1": 30.0}, "a": {"1": 10.0, "2": 20.0}}, 1.0, "a"),
        # adaptive loses: 10 / 20 = 0.5
        ({"1": 10.0}, {"a": {"1": 20.0}}, 0.5, "a"),
        # no baseline scored anything: no ratio
        ({"1": 10.0}, {"a": {"1": 0.0}}, None, "a"),
        ({"1": 10.0}, {}, None, None),
    ],
)
def test_utility_gain_vs_best(adaptive: dict[str, float], baselines: dict[str, dict[str, float]],
                              expected_gain: float | None, expected_best: str | None) -> None:
    gain, best = metrics.utility_gain_vs_best(adaptive, baselines)
    assert best == expected_best
    assert gain == (pytest.approx(expected_gain) if expected_gain is not None else None)


@pytest.mark.parametrize(
    ("adaptive", "baselines", "expected"),
    [
        # a baseline reaches 0.99 at loads 1 and 2 (a at 1, b at 2), none at 3: min(0.995, 0.97) = 0.97;
        # the 0.50 at load 3 is not counted
        ({"1": 0.995, "2": 0.97, "3": 0.50},
         {"a": {"1": 0.999, "2": 0.9, "3": 0.6}, "b": {"1": 0.98, "2": 0.991, "3": 0.7}}, 0.97),
        ({"1": 0.9}, {"a": {"1": 0.98}}, None),  # no baseline reaches 0.99 anywhere
        ({"1": 0.98}, {"a": {"1": 0.99}}, 0.98),  # exactly 0.99 reaches it
    ],
)
def test_min_attainment_where_reachable(adaptive: dict[str, float], baselines: dict[str, dict[str, float]],
                                        expected: float | None) -> None:
    assert metrics.min_attainment_where_reachable(adaptive, baselines) == expected


@given(st.dictionaries(st.sampled_from("abcdef"), st.dictionaries(st.sampled_from("123"), st.floats(0, 100)),
                       min_size=1))
def test_the_best_baseline_is_at_least_every_configuration(baselines: dict[str, dict[str, float]]) -> None:
    adaptive = {"1": 1.0, "2": 1.0, "3": 1.0}
    gain, best = metrics.utility_gain_vs_best(adaptive, baselines)
    assert best is not None
    best_total = sum(baselines[best].get(x, 0.0) for x in adaptive)
    assert all(best_total >= sum(v.get(x, 0.0) for x in adaptive) for v in baselines.values())
    assert gain == (3.0 / best_total if best_total else None)


@pytest.mark.parametrize(
    ("totals", "expected"),
    [
        # relative to each model's best: "1.0": 1000/1000 + 80/100 = 1.8; "1.2": 900/1000 + 100/100 = 1.9
        # -> 1.2, although 1.0 has the larger raw sum (1080 against 1000)
        ({"1.0": {"vad": 1000.0, "ocr": 80.0}, "1.2": {"vad": 900.0, "ocr": 100.0}}, "1.2"),
        ({"1.0": {"vad": 10.0}, "1.5": {"vad": 10.0}}, "1.0"),  # a tie: the first name
        ({"1.0": {"vad": 0.0}, "1.2": {"vad": 0.0}}, "1.0"),  # nothing scored: every score 0, first name
        ({}, None),
    ],
)
def test_calibration_choice(totals: dict[str, dict[str, float]], expected: str | None) -> None:
    assert metrics.calibration_choice(totals) == expected


def test_serving_headlines_arithmetic() -> None:
    """bench serving's headline figures from made-up runs, the arithmetic written out."""
    from edgefleet.bench.serving import _headlines

    mlp = {
        # c=1: agent 0.30 ms CPU per request, the model's service 0.05 -> path 0.25 ms; 3,000 + 1,000 bytes
        "1": {"agent_rps": 1000.0, "agent_p50_ms": 0.60, "cpu_ms_per_request": {"agent": 0.30},
              "service_ms_per_request": 0.05, "request_bytes": 3000, "reply_bytes": 1000},
        "32": {"agent_rps": 6000.0, "cpu_ms_per_request": {"agent": 0.10}},
    }
    # the frame: 1.40 ms CPU less 1.00 ms service -> path 0.40 ms; 804,000 + 200,000 bytes = 1.004 MB
    large = {"cpu_ms_per_request": {"agent": 1.40}, "service_ms_per_request": 1.00, "request_bytes": 804_000,
             "reply_bytes": 200_000}
    floor = {"1": {"cpu_ms_per_request": {"responder": 0.10}, "reply_bytes": 1000},
             "32": {"cpu_ms_per_request": {"responder": 0.04}}}
    floor_large = {"cpu_ms_per_request": {"responder": 0.20}, "request_bytes": 804_000, "reply_bytes": 200_000}
    triton = {"1": {"p50_ms": 0.75}, "32": {"rps": 4000.0}}
    h = _headlines({"mlp": mlp}, floor, triton, large, floor_large)
    assert h["vs_triton_c32"] == pytest.approx(6000 / 4000)  # 1.5
    assert h["p50_vs_triton_c1"] == pytest.approx(0.60 / 0.75)  # 0.8
    assert h["agent_cpu_vs_floor_c32"] == pytest.approx(0.10 / 0.04)  # 2.5
    assert h["path_ms_per_mb"] == pytest.approx((0.40 - 0.25) / (1.004 - 0.004))  # 0.15 ms per MB
    assert h["floor_path_ms_per_mb"] == pytest.approx((0.20 - 0.10) / (1.004 - 0.004))  # 0.10 ms per MB
    assert h["path_ms_per_mb_beyond_floor"] == pytest.approx(0.05)  # 0.15 - 0.10
    bare = _headlines({"mlp": mlp}, floor, None, large)  # no peer, no large floor: nulls, never constants
    assert bare["vs_triton_c32"] is None and bare["p50_vs_triton_c1"] is None
    assert bare["floor_path_ms_per_mb"] is None and bare["path_ms_per_mb_beyond_floor"] is None
