"""Loads and unloads tenants' model sessions inside the device's memory budget.

A tenant's model is resolved to a verified file (the zoo checks its sha256 before every load, local
models likewise), opened on its runtime with the agent's thread budget, and accounted in bytes with
what the session really took. Failures are ``DeployError`` values with a code the coordinator can act
on (``no_memory`` means try another device; ``unknown_model`` means the spec is wrong).
"""

from __future__ import annotations

import hashlib
import logging
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from edgefleet.agent import batch_axes, profiling
from edgefleet.agent.batching import ServiceModel
from edgefleet.agent.slots import Hosted as Hosted
from edgefleet.agent.slots import ResolvedModel as ResolvedModel
from edgefleet.agent.slots import Slots, TenantSlot
from edgefleet.runtime import (
    EdgeRuntimeError,
    RuntimeMissing,
    Session,
    SessionOptions,
    get_runtime,
    runtime_for_file,
)
from edgefleet.runtime.providers import GPU_ORDER
from edgefleet.wire import TenantSpec
from edgefleet.wire.messages import VARIANTS

log = logging.getLogger(__name__)


class DeployError(Exception):
    """A tenant could not be hosted. ``code``: unknown_model, variant_unavailable, runtime_missing,
    integrity, no_memory or load_failed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ModelResolver(Protocol):
    def resolve(self, model: str, variant: str) -> ResolvedModel | None:
        """The verified file for (model, variant); None if this resolver does not know the model.
        Raises DeployError when it knows the model but cannot provide it."""
        ...


class ZooResolver:
    """Models of the edgefleet zoo, verified against the catalog's sha256 at every resolve."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.data_dir = data_dir

    def resolve(self, model: str, variant: str) -> ResolvedModel | None:
        from edgefleet.zoo import ModelIntegrityError, ModelNotFound, load_catalog, model_path
        from edgefleet.zoo.paths import local_catalog_path

        cat_path = local_catalog_path(self.data_dir)
        catalog = load_catalog(cat_path if cat_path.is_file() else None)
        entry = catalog.find(model)
        if entry is None:
            return None
        try:
            record = entry.variant(variant)
            path = model_path(model, variant, data_dir=self.data_dir)
        except ModelIntegrityError as exc:
            raise DeployError("integrity", str(exc)) from None
        except ModelNotFound as exc:
            raise DeployError("variant_unavailable", str(exc)) from None
        return ResolvedModel(
            path,
            entry.runtime,
            int(record.size_bytes or path.stat().st_size),
            float(record.fidelity if record.fidelity is not None else 1.0),
        )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class LocalModels:
    """Operator-provided model files (config ``[models]`` name = path), fp32 only. The file's hash is
    taken when registered and checked before every load, like the zoo's."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self._files = {name: (Path(p), _sha256(Path(p))) for name, p in files.items()}

    def resolve(self, model: str, variant: str) -> ResolvedModel | None:
        item = self._files.get(model)
        if item is None:
            return None
        path, digest = item
        if variant != "fp32":
            raise DeployError("variant_unavailable", f"local model {model!r} has only an fp32 variant")
        if not path.is_file() or _sha256(path) != digest:
            raise DeployError("integrity", f"local model {model!r} at {path} changed since it was registered")
        return ResolvedModel(path, runtime_for_file(path), path.stat().st_size, 1.0)


class ModelHost:
    def __init__(
        self,
        resolvers: list[ModelResolver],
        *,
        budget_bytes: int,
        threads: int,
        open_session: Callable[[str, Path, SessionOptions], Session] | None = None,
        slots: Slots | None = None,
    ) -> None:
        self.resolvers = resolvers
        self.budget_bytes = budget_bytes
        self.threads = threads
        self._open = open_session or (lambda rt, path, opts: get_runtime(rt).open(path, opts))
        self.slots = slots if slots is not None else Slots()  # the session of each tenant is its slot's
        self._lock = threading.Lock()  # installs and unloads
        self._primed: set[str] = set()

    def _options(self) -> SessionOptions:
        # ONNX Runtime: TensorRT, then CUDA, then CPU, each used only once a real run proved it works
        # here (edgefleet.runtime.providers); other runtimes ignore the providers.
        return SessionOptions(threads=self.threads, providers=GPU_ORDER)

    def resolve(self, model: str, variant: str) -> ResolvedModel:
        for r in self.resolvers:
            found = r.resolve(model, variant)
            if found is not None:
                return found
        raise DeployError("unknown_model", f"model {model!r} is not in the catalog of this device")

    def memory_used(self) -> int:
        with self._lock:
            return sum(h.memory_bytes for h in self.slots.resident().values())

    def get(self, tenant: str) -> Hosted | None:
        slot = self.slots.get(tenant)
        return slot.hosted if slot is not None else None

    def tenants(self) -> dict[str, Hosted]:
        with self._lock:
            return self.slots.resident()

    def options(self, spec: TenantSpec) -> dict[str, ResolvedModel]:
        """The variants of the tenant's model it accepts (fidelity >= its minimum), preferred first.
        Raises DeployError when there is none."""
        found: dict[str, ResolvedModel] = {}
        errors: list[str] = []
        for variant in (spec.variant, *(v for v in VARIANTS if v != spec.variant)):
            try:
                r = self.resolve(spec.model, variant)
            except DeployError as exc:
                if exc.code == "unknown_model":
                    raise
                errors.append(f"{variant}: {exc.message}")
                continue
            if r.fidelity >= spec.min_fidelity:
                found[variant] = r
            else:
                errors.append(f"{variant}: fidelity {r.fidelity:.3f} < min_fidelity {spec.min_fidelity}")
        if not found:
            raise DeployError(
                "variant_unavailable", f"no variant of {spec.model} is acceptable: {'; '.join(errors)}"
            )
        return found

    def load(
        self, spec: TenantSpec, variant: str | None = None, resolved: ResolvedModel | None = None
    ) -> Hosted:
        """Open the tenant's model (``variant``, default the spec's) and make it resident, replacing
        (and closing) the session it had. The caller makes room first: a load that would exceed the
        budget, counting the replaced session as freed, is refused with ``no_memory``."""
        old = self.get(spec.name)
        hosted = self.open(spec, variant, resolved, replacing=old)
        self.install(hosted)
        if old is not None:
            old.session.close()
        return hosted

    def open(
        self,
        spec: TenantSpec,
        variant: str | None = None,
        resolved: ResolvedModel | None = None,
        *,
        replacing: Hosted | None = None,
    ) -> Hosted:
        """Open a session for the tenant without making it resident (``install`` does). The budget must
        hold it beside every resident session except ``replacing``; otherwise ``no_memory``."""
        variant = variant or spec.variant
        resolved = resolved or self.resolve(spec.model, variant)
        if resolved.fidelity < spec.min_fidelity:
            raise DeployError(
                "variant_unavailable",
                f"{spec.model}:{variant} has fidelity {resolved.fidelity:.3f} < min_fidelity {spec.min_fidelity}",
            )
        used = self.memory_used() - (replacing.memory_bytes if replacing else 0)
        if used + resolved.size_bytes > self.budget_bytes:
            raise DeployError(
                "no_memory",
                f"{spec.model}:{variant} needs ~{resolved.size_bytes / 2**20:.1f} MiB; "
                f"{(self.budget_bytes - used) / 2**20:.1f} MiB of the {self.budget_bytes / 2**20:.0f} MiB "
                "budget is free",
            )
        try:
            if resolved.runtime not in self._primed:
                # The first session of a runtime also pays for the runtime itself (libraries, thread
                # pools, allocators: tens of MB). Open and drop one first so that what is measured
                # and accounted below is what this model takes.
                self._open(resolved.runtime, resolved.path, self._options()).close()
                self._primed.add(resolved.runtime)
            session = self._open(resolved.runtime, resolved.path, self._options())
        except RuntimeMissing as exc:
            raise DeployError("runtime_missing", str(exc)) from None
        except EdgeRuntimeError as exc:
            raise DeployError("load_failed", str(exc)) from None
        return Hosted(
            spec=spec,
            variant=variant,
            session=session,
            runtime=resolved.runtime,
            memory_bytes=resolved.size_bytes,
            measured_bytes=int(session.memory_bytes),
            fidelity=resolved.fidelity,
            loaded_at=time.time(),
        )

    def install(self, hosted: Hosted) -> Hosted | None:
        """Make an opened session the tenant's resident one; returns the one it replaces (not closed:
        the caller closes it once no batch runs on it). What the model declares is the slot's."""
        slot = self.slots.ensure(hosted.spec.name)
        session = hosted.session
        with self._lock:
            old, slot.hosted = slot.hosted, hosted
            slot.inputs, slot.runtime, slot.capabilities = session.inputs, hosted.runtime, session.capabilities
            if not slot.in_axes:
                slot.in_axes = batch_axes.input_axes(session.inputs)
            slot.layouts = {}
        return old

    def unload(self, tenant: str, only: Hosted | None = None) -> None:
        slot = self.slots.get(tenant)
        with self._lock:
            h = slot.hosted if slot is not None else None
            if slot is None or h is None or (only is not None and h is not only):
                return
            slot.hosted = None
            if slot.spec is None and not slot.scheduled:  # loaded without an assignment (benchmarks)
                self.slots.remove(tenant)
        h.session.close()

    def close(self) -> None:
        for name in list(self.tenants()):
            self.unload(name)


def sample_feeds(hosted: Hosted) -> dict[str, np.ndarray]:
    """A realistic one-row request: the zoo's sample input for zoo models, zeros otherwise."""
    try:
        from edgefleet.zoo import sample_inputs

        return dict(sample_inputs(hosted.spec.model, batch=1))
    except Exception:
        return {
            s.name: np.zeros(tuple(1 if d is None else d for d in s.shape), dtype=s.dtype)
            for s in hosted.session.inputs
        }


def warm_up(hosted: Hosted, slot: TenantSlot | None = None, runs: int = profiling.RUNS,
            budget_s: float = profiling.BUDGET_S) -> ServiceModel:
    """Run the model a few times so the first request is warm; learn its output batch axes (into
    ``slot``, once: every variant shares them), and profile it (``edgefleet.agent.profiling``): ``hosted.profile``
    gets the median ms of the timed runs at batch 1 and, where the tenant batches and it is cheap, at
    one larger batch. The service-time model the scheduler starts from is seeded with the same
    measurements."""
    model = ServiceModel()
    feeds = sample_feeds(hosted)
    run = hosted.session.run
    in_axes = slot.in_axes if slot is not None and slot.in_axes else batch_axes.input_axes(hosted.session.inputs)
    try:
        run(feeds)  # first run pays lazy initialisation
        one = profiling.timed(lambda: run(feeds), runs)
    except Exception:
        log.info("warm-up of %s failed; its first request will be cold", hosted.spec.model, exc_info=True)
        return model
    for t in one:
        model.observe(1, t)
    hosted.served = 1
    hosted.profile = {1: profiling.median_ms(one)}
    out_axes = None
    if hosted.capabilities.batches:  # fixed-shape models (LiteRT, Edge TPU) are never batched
        out_axes = slot.out_axes if slot is not None and slot.out_axes is not None else (
            batch_axes.learn_output_axes(run, in_axes, feeds)
        )
    if slot is not None:
        slot.in_axes, slot.out_axes = in_axes, out_axes
        slot.layouts = {}
    b = profiling.probe_batch(statistics.median(one), hosted.spec.max_batch, runs=runs, budget_s=budget_s)
    if out_axes is not None and b is not None:
        stacked = batch_axes.stack(in_axes, [feeds] * b)
        try:
            run(stacked)  # a new shape may pay allocation once
            many = profiling.timed(lambda: run(stacked), runs)
        except Exception:
            log.info("profiling %s at batch %d failed", hosted.spec.model, b, exc_info=True)
        else:
            for t in many:
                model.observe(b, t)
            hosted.profile[b] = profiling.median_ms(many)
    return model
