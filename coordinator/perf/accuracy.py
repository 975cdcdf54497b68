"""How wrong the latency model has been, per tenant: predicted p95 against the p95 agents observed.

Placement trusts the model only as far as it has earned: the coordinator records, for every telemetry
window, the p95 it predicted for the tenant's device and load against the p95 the agent measured, and
publishes the error. Two exponentially weighted moving averages per tenant (weight ``alpha`` on the
newest window): the absolute percentage error |pred - obs| / obs, and the signed ratio error
(pred - obs) / obs whose sign says whether the model is optimistic (< 0, dangerous: SLOs will be missed)
or pessimistic (> 0, wasteful). Windows with no completions carry no p95 and are skipped. Each tenant's
last scored window (``Scored``: where it ran, at which rate, predicted against observed) is kept with
its averages, so the report the coordinator publishes (``edgefleet.coordinator.perf.report``) can show both.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Scored:
    """One window the model was scored on: what it predicted, what the agent measured, and for what."""

    predicted_ms: float  # predicted p95
    observed_ms: float  # measured p95
    rate_rps: float = 0.0  # the arrival rate the prediction was made for
    device: str = ""  # the device that served the window
    kind: str = ""  # the book's device kind the prediction used
    model: str = ""
    variant: str = ""


@dataclass(frozen=True, slots=True)
class ErrorStat:
    ape: float  # EWMA of |pred - obs| / obs
    bias: float  # EWMA of (pred - obs) / obs
    windows: int
    last: Scored  # the latest window scored


SHARDS = 256  # a recorded window copies one shard of the book's entries, not the whole book


class ShardedStats(Mapping[str, ErrorStat]):
    """An immutable mapping from tenant to its error, split into ``SHARDS`` shards by the tenant's hash:
    ``with_entry`` copies the one shard it changes and shares the others, so recording one window costs
    about n / SHARDS + SHARDS, not n (a fleet's tenants are many and each window records a few)."""

    __slots__ = ("_len", "_shards")

    def __init__(self, items: Mapping[str, ErrorStat] | None = None) -> None:
        shards: list[dict[str, ErrorStat]] = [{} for _ in range(SHARDS)]
        for k, v in (items or {}).items():
            shards[hash(k) % SHARDS][k] = v
        self._shards: tuple[Mapping[str, ErrorStat], ...] = tuple(MappingProxyType(d) for d in shards)
        self._len = sum(len(d) for d in shards)

    @classmethod
    def _of(cls, shards: tuple[Mapping[str, ErrorStat], ...], n: int) -> ShardedStats:
        out = cls.__new__(cls)
        out._shards, out._len = shards, n
        return out

    def __getitem__(self, key: str) -> ErrorStat:
        return self._shards[hash(key) % SHARDS][key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._shards[hash(key) % SHARDS]

    def __iter__(self) -> Iterator[str]:
        for shard in self._shards:
            yield from shard

    def __len__(self) -> int:
        return self._len

    def with_entry(self, key: str, value: ErrorStat) -> ShardedStats:
        i = hash(key) % SHARDS
        shard = dict(self._shards[i])
        n = self._len + (0 if key in shard else 1)
        shard[key] = value
        return self._of((*self._shards[:i], MappingProxyType(shard), *self._shards[i + 1:]), n)

    def with_entries(self, changes: Mapping[str, ErrorStat]) -> ShardedStats:
        """``with_entry`` for each of ``changes`` at once: each shard they touch copied once, the shard
        tuple once (a window records a few tenants)."""
        shards = list(self._shards)
        copied: dict[int, dict[str, ErrorStat]] = {}
        n = self._len
        for key, value in changes.items():
            i = hash(key) % SHARDS
            shard = copied.get(i)
            if shard is None:
                shard = copied[i] = dict(shards[i])
            if key not in shard:
                n += 1
            shard[key] = value
        for i, shard in copied.items():
            shards[i] = MappingProxyType(shard)
        return self._of(tuple(shards), n)

    def without(self, key: str) -> ShardedStats:
        i = hash(key) % SHARDS
        if key not in self._shards[i]:
            return self
        shard = {k: v for k, v in self._shards[i].items() if k != key}
        return self._of((*self._shards[:i], MappingProxyType(shard), *self._shards[i + 1:]), self._len - 1)


@dataclass(frozen=True)
class ErrorBook:
    alpha: float = 0.2
    stats: Mapping[str, ErrorStat] = field(default_factory=ShardedStats)

    def __post_init__(self) -> None:
        if not isinstance(self.stats, ShardedStats):
            object.__setattr__(self, "stats", ShardedStats(self.stats))

    def record(self, tenant: str, scored: Scored) -> ErrorBook:
        """The book after one window of ``tenant``; unchanged when either p95 is unusable."""
        new = self._next(self.stats.get(tenant), scored)
        if new is None:
            return self
        return ErrorBook(self.alpha, self._sharded.with_entry(tenant, new))

    def _next(self, old: ErrorStat | None, scored: Scored) -> ErrorStat | None:
        """A tenant's error after one more window (None when either p95 is unusable)."""
        obs, pred = scored.observed_ms, scored.predicted_ms
        if not (obs > 0.0 and math.isfinite(obs) and math.isfinite(pred)):
            return None
        rel = (pred - obs) / obs
        if old is None:
            return ErrorStat(abs(rel), rel, 1, scored)
        a = self.alpha
        return ErrorStat((1 - a) * old.ape + a * abs(rel), (1 - a) * old.bias + a * rel, old.windows + 1, scored)

    @property
    def _sharded(self) -> ShardedStats:
        assert isinstance(self.stats, ShardedStats)  # made so in __post_init__
        return self.stats

    def record_all(self, windows: Iterable[tuple[str, Scored]]) -> ErrorBook:
        """``record`` of each window in turn, with one copy of the book (a telemetry window's tenants)."""
        changes: dict[str, ErrorStat] = {}
        for tenant, scored in windows:
            new = self._next(changes.get(tenant) or self.stats.get(tenant), scored)
            if new is not None:
                changes[tenant] = new
        if not changes:
            return self
        return ErrorBook(self.alpha, self._sharded.with_entries(changes))

    def forget(self, tenant: str) -> ErrorBook:
        if tenant not in self.stats:
            return self
        return ErrorBook(self.alpha, self._sharded.without(tenant))

    def mean_ape(self) -> float:
        """The fleet-wide figure to publish: mean over tenants of their EWMA APE (nan when empty)."""
        if not self.stats:
            return math.nan
        return sum(s.ape for s in self.stats.values()) / len(self.stats)
