"""How ``bench placement``'s live confirmation combines its streams (edgefleet.bench.placement_live.run_live): each
policy's score is the median over seeds and the gain a ratio of medians. The streams themselves (real
agents) are the benchmark's; here they are replaced by their recorded outcome."""

from __future__ import annotations

from typing import Any

import pytest

from edgefleet.bench import placement_live

# seed -> (model-driven score, best knapsack score)
OUTCOMES = {11: (4, 3), 12: (6, 0), 13: (5, 2)}


def fake_stream(best_knapsack: str, *, quick: bool, seed: int, progress: Any = print) -> dict[str, Any]:
    model, knap = OUTCOMES[seed]
    return {"seed": seed, "arrivals": 12, "window_s": 5.0,
            "policies": {"predicted-latency": {"score": model}, best_knapsack: {"score": knap}},
            "live_gain_vs_best_knapsack": model / knap if knap else None}


def test_live_scores_are_medians_over_seeds_and_the_gain_a_ratio_of_medians(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement_live, "run_stream", fake_stream)
    out = placement_live.run_live("best-fit", quick=False, seeds=(11, 12, 13), progress=lambda _m: None)
    # model-driven scores 4, 6, 5 -> median 5; best fit 3, 0, 2 -> median 2; gain 5 / 2 = 2.5
    assert out["policies"]["predicted-latency"]["score"] == 5.0
    assert out["policies"]["best-fit"]["score"] == 2.0
    assert out["policies"]["best-fit"]["min"] == 0.0 and out["policies"]["best-fit"]["max"] == 3.0
    assert out["live_gain_vs_best_knapsack"] == pytest.approx(2.5)
    # per seed: 4/3 = 1.33, none (best fit scored 0), 5/2 = 2.5 -> spread over the two that exist
    assert out["live_gain_per_seed"] == [pytest.approx(4 / 3), None, 2.5]
    assert out["live_gain_per_seed_spread"]["median"] == pytest.approx((4 / 3 + 2.5) / 2)
    assert out["seeds"] == [11, 12, 13]


def test_a_knapsack_that_scores_nothing_anywhere_gives_no_gain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement_live, "run_stream", fake_stream)
    out = placement_live.run_live("best-fit", quick=True, seeds=(12,), progress=lambda _m: None)
    assert out["live_gain_vs_best_knapsack"] is None  # 6 / 0: no ratio
