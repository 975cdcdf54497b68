"""Profiles measured at deploy: what a device timed when it warmed up a model variant, into the book.

An agent times the variant it loads (batch 1, and one larger batch where the tenant batches and it is
cheap: ``edgefleet.agent.profiling``) and the Ack of the Deploy or Configure carries it. That is the first
measurement of the variant on that device kind, so it is the right start for the online estimator —
better than the calibration table, which scales another machine's figures, and the only start there
is for a variant the table does not have (int8 and fp16 are never in it). ``seed`` says how it enters
the book and the estimators; ``Learner.profiled`` applies it.

An RLS prior needs two batch sizes to pin both the fixed and the per-row cost. When only batch 1 was
timed (a LiteRT model, a tenant with ``max_batch`` 1, a slow model), batch ``FAR`` is taken from the
shape of a curve the book already has for that model there (the same variant's, else fp32's), scaled
to the measured batch-1 time; without any, batching is assumed to gain nothing (FAR x s(1), the safe
side).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from edgefleet.coordinator.perf.book import PerfBook, Profile, ProfileKey
from edgefleet.coordinator.perf.curve import RlsEstimator, ServiceCurve

FAR = 8  # the batch size a one-point measurement is extended to
DEFAULT_SCV = 0.04  # the spread of a new profile when the model has no fp32 profile on the kind (CV 0.2)
REFERENCE_VARIANT = "fp32"  # whose request size, spread and reload cost a new variant's profile takes


def seed_points(ms_by_batch: Mapping[int, float], shape: ServiceCurve | None) -> dict[int, float]:
    """The measured points, extended to at least two batch sizes (see the module docstring)."""
    points = {int(b): float(ms) for b, ms in ms_by_batch.items() if b >= 1 and ms > 0.0}
    if len(points) != 1:
        return points
    ((b, ms),) = points.items()
    far = FAR if b != FAR else 1
    if shape is None:
        return {b: ms, far: ms * far / b}
    return {b: ms, far: ms * shape.at(far) / shape.at(b)}


@dataclass(frozen=True)
class Seeded:
    book: PerfBook
    estimator: RlsEstimator | None  # None: nothing changed


def seed(
    book: PerfBook,
    key: ProfileKey,
    runtime: str,
    ms_by_batch: Mapping[int, float],
    request_mb: float = 0.0,
) -> Seeded:
    """The book and the estimator for ``key`` = (model, variant, kind) seeded from a deploy-time
    measurement, for a key with no estimator yet (the caller checks). A profile the book lacks is added:
    the curve fitted to the measurement, ``runtime``, and the request size, spread and TPU reload cost of
    the fp32 profile of the model on that kind when there is one (else ``request_mb``, ``DEFAULT_SCV``,
    no reload). A profile it has keeps all but its curve, which becomes the measurement's. Unknown
    kinds, runtimes the kind does not run and measurements without a usable point change nothing."""
    model, _variant, kind = key
    spec = book.kinds.get(kind)
    if spec is None or spec.processor_of(runtime) is None:
        return Seeded(book, None)
    existing = book.profile(*key)
    reference = book.profile(model, REFERENCE_VARIANT, kind)
    shape = existing or reference
    points = seed_points(ms_by_batch, shape.curve if shape is not None else None)
    if not points:
        return Seeded(book, None)
    est = RlsEstimator.from_profile(points)
    if existing is not None:
        return Seeded(book.with_curve(key, est.curve), est)
    if reference is not None:
        prof = Profile(est.curve, runtime, reference.scv, reference.switch_ms, reference.request_mb)
    else:
        prof = Profile(est.curve, runtime, DEFAULT_SCV, 0.0, request_mb)
    return Seeded(book.with_profile(key, prof), est)
