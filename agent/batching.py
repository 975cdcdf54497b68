"""Adaptive batching: learn how a model's service time grows with batch size, and pick the batch.

Per tenant, ``ServiceModel`` keeps an EWMA of the measured service time for each batch size it has run
and fits ``t(b) = a + c*b`` (least squares over the sizes seen) for the others. Sizes never tried are
estimated optimistically (half the per-row cost of batch 1 for each extra row), so the controller
explores them once the queue offers them; a measurement then replaces the guess.

``choose_batch`` maximises the utility ``U(b) = b / t(b)`` — requests served per second of worker
time — subject to every request in the batch still meeting its deadline: ``now + t(b) <= min(deadline
of the first b queued)``. It never waits for requests that have not arrived: at low load the queue holds
one request and it runs at once; batches form only from what queued while the workers were busy.
For a model where batching does not pay (t(2) >= 2 t(1), e.g. OCR detection here), U(1) wins and
requests run alone; for one where it does (VAD, the MLP), U grows with b and the batch grows with load.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

EXPLORE_ROW_FRACTION = 0.5  # optimistic guess: each extra row costs half of a batch-1 run
ALPHA = 0.2  # EWMA weight of a new measurement


@dataclass
class ServiceModel:
    """Measured service time (seconds) by batch size, for one tenant's model variant."""

    ewma: dict[int, float] = field(default_factory=dict)
    count: dict[int, int] = field(default_factory=dict)
    _line: tuple[float, float] | None = field(default=None, repr=False, compare=False)  # fit() until observe
    _best: float | None = field(default=None, repr=False, compare=False)  # per_request() until observe

    def observe(self, batch: int, seconds: float) -> None:
        old = self.ewma.get(batch)
        self.ewma[batch] = seconds if old is None else (1 - ALPHA) * old + ALPHA * seconds
        self.count[batch] = self.count.get(batch, 0) + 1
        self._line = self._best = None

    def fit(self) -> tuple[float, float] | None:
        """Least-squares (a, c) of t(b) = a + c*b over the sizes seen; None with fewer than two."""
        if len(self.ewma) < 2:
            return None
        if self._line is None:
            self._line = self._fit()
        return self._line

    def _fit(self) -> tuple[float, float]:
        bs = list(self.ewma)
        ts = [self.ewma[b] for b in bs]
        n = len(bs)
        mb, mt = sum(bs) / n, sum(ts) / n
        var = sum((b - mb) ** 2 for b in bs)
        c = sum((b - mb) * (t - mt) for b, t in zip(bs, ts, strict=True)) / var
        a = mt - c * mb
        return a, c

    def estimate(self, batch: int) -> float:
        """Expected service time of a batch of ``batch`` rows (0.0 if nothing was ever measured)."""
        if batch in self.ewma:
            return self.ewma[batch]
        if not self.ewma:
            return 0.0
        line = self.fit()
        if line is not None:
            a, c = line
            guess = a + c * batch
            if guess > 0:
                return guess
        b0 = min(self.ewma)
        t0 = self.ewma[b0]
        per_row = t0 / b0
        return t0 + (batch - b0) * per_row * EXPLORE_ROW_FRACTION if batch > b0 else per_row * batch

    def per_request(self) -> float:
        """Seconds of worker time per request at the most efficient batch size seen."""
        best = self._best
        if best is None:
            best = self._best = min((t / b for b, t in self.ewma.items()), default=0.0)
        return best


def choose_batch(
    *,
    now: float,
    deadlines: Sequence[float],
    rows: Sequence[int],
    max_rows: int,
    model: ServiceModel,
) -> int:
    """How many of the queued requests (in queue order) to run as one batch; at least 1.

    Utility of a batch of the first n requests: the rows among them that finish by their deadlines,
    per second of worker time, ``U(n) = on_time_rows(n) / t(rows(n))``; a larger batch must beat the
    best smaller one by 2% to be chosen (ties favour latency). Worked example: t(1) = 10 ms,
    t(4) = 16 ms measured; four queued, deadlines 20 ms away: U(1) = 1/0.010 = 100/s, U(4) = 4/0.016 =
    250/s -> all four run together. With deadlines 12 ms away, a batch of four would finish at 16 ms
    with nobody on time (U = 0); two finish at ~12 ms (on the fitted line) on time: U(2) = 167/s.
    """
    if not deadlines:
        return 0
    best_n, best_u = 1, -1.0
    total = 0
    earliest = math.inf
    for n in range(1, len(deadlines) + 1):
        total += max(1, rows[n - 1])
        earliest = min(earliest, deadlines[n - 1])
        if n > 1 and total > max_rows:
            break
        t = model.estimate(total)
        if now + t <= earliest:  # every one of the first n is on time
            on_time = total
        else:
            on_time = sum(max(1, r) for r, d in zip(rows[:n], deadlines[:n], strict=True) if now + t <= d)
        u = on_time / t if t > 0 else float(on_time or total)
        if n == 1 or (on_time > 0 and u > best_u * 1.02):
            best_n, best_u = n, u
    return best_n


def hopeless(*, now: float, deadline: float, model: ServiceModel) -> bool:
    """True when even running alone, right now, the request would finish after its deadline: it is
    answered ``deadline_exceeded`` at once instead of taking a worker from requests that can still
    make it."""
    t = model.estimate(1)
    return t > 0 and now + t > deadline


AIMD_STEP = 1  # Clipper's additive increase: one more request per batch after a batch with no SLO miss
AIMD_BACKOFF = 0.9  # ... and its multiplicative decrease: the cap shrinks by 10% after a miss


def aimd_next(cap: int, *, missed: bool, max_batch: int) -> int:
    """Clipper-style AIMD of a batch-size cap after one finished batch: ``cap + AIMD_STEP`` (at most
    ``max_batch``) when none of its requests missed its deadline, ``floor(cap * AIMD_BACKOFF)`` (at
    least 1) when one did. Examples: cap 4, no miss -> 5; cap 10, a miss -> floor(9.0) = 9; cap 5, a
    miss -> floor(4.5) = 4; cap 1, a miss -> 1; cap 32 of max 32, no miss -> 32."""
    if missed:
        return max(1, math.floor(cap * AIMD_BACKOFF))
    return max(1, min(max_batch, cap + AIMD_STEP))


def preferred_count(queued: int, preferred: Sequence[int]) -> int:
    """Triton-style preferred batch sizes: the largest preferred size the ``queued`` requests can
    fill, else all of them (the caller has capped them at the largest batch). Examples: 9 queued,
    preferred (4, 8) -> 8; 5 -> 4; 3 -> 3 (no preferred size fits: the largest possible batch)."""
    fits = [p for p in preferred if p <= queued]
    return max(fits) if fits else max(1, queued)


@dataclass(frozen=True)
class BatchPolicy:
    """How batches are formed. ``adaptive`` (the default) is described above; the others are the
    baselines users know, kept for comparison (``edgefleet bench batching``). Every policy gets the
    same admission control and the same early drop of hopeless requests (edgefleet.agent.scheduler).

    ``fixed:N``          run exactly N requests together; wait for N (at most ``max_wait_s``, 10 ms).
    ``delay:MS``         Triton's dynamic batcher: hold the first request up to MS milliseconds for
                         more, up to the tenant's max_batch, then run what is there.
    ``dynamic:B:MS``     the same with a max batch of B (Triton's ``max_batch_size`` x
                         ``max_queue_delay``).
    ``preferred:P,Q:MS`` Triton's ``preferred_batch_size``: hold the first request up to MS ms for the
                         largest preferred size, then run the largest preferred size that the queue
                         fills (all of it when none does), up to the tenant's max_batch.
    ``aimd``             Clipper's AIMD: a per-tenant cap on the batch, +1 after a batch with no SLO
                         miss, x0.9 after one where a request finished past its deadline; no waiting.
    """

    kind: str = "adaptive"
    size: int = 0  # fixed: the batch size; delay: the max batch (0 = the tenant's max_batch)
    max_wait_s: float = 0.0
    preferred: tuple[int, ...] = ()
    # aimd: the current cap per tenant (mutable state; only touched under the scheduler's lock)
    caps: dict[str, int] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> BatchPolicy:
        kind, _, arg = text.partition(":")
        try:
            if kind in ("adaptive", "aimd") and not arg:
                return cls(kind)
            if kind == "fixed" and int(arg) >= 1:
                return cls("fixed", int(arg), 0.010 if int(arg) > 1 else 0.0)
            if kind == "delay":
                return cls("delay", 0, _delay_s(arg))
            if kind == "dynamic":
                size, _, ms = arg.partition(":")
                if int(size) >= 1:
                    return cls("delay", int(size), _delay_s(ms))
            if kind == "preferred":
                sizes, _, ms = arg.partition(":")
                pref = tuple(sorted({int(x) for x in sizes.split(",")}))
                if pref and pref[0] >= 1:
                    return cls("preferred", 0, _delay_s(ms), pref)
        except ValueError:
            pass
        raise ValueError(
            "batch policy must be adaptive, fixed:N, delay:MS, dynamic:B:MS, preferred:P,Q,...:MS or aimd, "
            f"got {text!r}"
        )

    @property
    def name(self) -> str:
        """The policy as ``parse`` reads it."""
        ms = f"{1e3 * self.max_wait_s:g}"
        if self.kind == "fixed":
            return f"fixed:{self.size}"
        if self.kind == "delay":
            return f"dynamic:{self.size}:{ms}" if self.size else f"delay:{ms}"
        if self.kind == "preferred":
            return f"preferred:{','.join(map(str, self.preferred))}:{ms}"
        return self.kind

    def hold(self, *, queued: int, head_age_s: float, max_batch: int) -> float:
        """Seconds to keep the head request waiting for more (0: dispatch now)."""
        if self.kind in ("adaptive", "aimd"):
            return 0.0
        if self.kind == "preferred":
            target = min(max_batch, max(self.preferred))
        else:
            target = self.size if self.size else max_batch
        if queued >= target:
            return 0.0
        return max(0.0, self.max_wait_s - head_age_s)

    def count(
        self,
        *,
        now: float,
        candidates_deadlines: Sequence[float],
        rows: Sequence[int],
        max_rows: int,
        model: ServiceModel,
        tenant: str = "",
    ) -> int:
        if self.kind == "adaptive":
            return choose_batch(
                now=now, deadlines=candidates_deadlines, rows=rows, max_rows=max_rows, model=model
            )
        n = len(candidates_deadlines)
        if self.kind == "preferred":
            return preferred_count(n, self.preferred)
        if self.kind == "aimd":
            return max(1, min(n, self.caps.get(tenant, 1)))
        return max(1, min(n, self.size) if self.size else n)

    @property
    def learns_from_batches(self) -> bool:
        """Whether ``finished`` must hear of every answered batch (AIMD); the others keep no state, so
        the scheduler spares them the deadline check per batch."""
        return self.kind == "aimd"

    def finished(self, tenant: str, *, missed: bool, max_batch: int) -> None:
        """A batch of ``tenant`` finished (``missed``: a request of it was answered past its
        deadline); AIMD moves the tenant's cap, the other policies keep no state."""
        if self.kind == "aimd":
            self.caps[tenant] = aimd_next(self.caps.get(tenant, 1), missed=missed, max_batch=max_batch)


def _delay_s(ms: str) -> float:
    value = float(ms.removesuffix("ms"))
    if not 0 <= value < math.inf:
        raise ValueError(ms)
    return value / 1e3
