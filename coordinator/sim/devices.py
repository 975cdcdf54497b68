"""What each device of a live simulation is: its agent's config and its fake models, from the book.

A live simulation (``edgefleet sim --live``) runs real agent processes that play device kinds they are
not. Each agent reports its kind in its Birth (``device_kind``) with that kind's memory budget, and
serves every zoo model through the fake runtime from descriptions written here: the zoo's inputs and
outputs (so real requests are accepted and answered), the model's size, the runtime it stands in for,
and the service time that the calibrated book gives for the model on that kind, a + c·b ms for a batch
of b rows, to be slept. The processor the runtime uses on that kind (cpu, gpu or tpu in the book) is
named with its servers, so an Edge TPU runs one invocation at a time and reloads parameters on a model
switch. Everything here is pure; ``edgefleet.coordinator.sim.live`` writes the files and starts the processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefleet.coordinator.perf import PerfBook
from edgefleet.coordinator.perf.calibration import VARIANT
from edgefleet.coordinator.sim.agents import KINDS, MIB, DeviceKind
from edgefleet.localfleet import AgentPlan

Tensor = tuple[str, str, tuple[int | None, ...]]  # name, numpy dtype, shape (None: dynamic)


@dataclass(frozen=True)
class ModelShape:
    """What the zoo catalog says of one model variant: its runtime, tensors and size in bytes."""

    name: str
    runtime: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    size_bytes: int


@dataclass(frozen=True)
class LiveDevice:
    device_id: str
    kind: DeviceKind


def live_devices(*, count: int | None = None, per_kind: int = 1,
                 kinds: Sequence[DeviceKind] = KINDS) -> tuple[LiveDevice, ...]:
    """``count`` devices taking the kinds in turn, or else ``per_kind`` of every kind; ids name the kind."""
    if count is not None:
        if count < 1:
            raise ValueError(f"a live simulation needs at least one device, got {count}")
        chosen = [kinds[i % len(kinds)] for i in range(count)]
    else:
        if per_kind < 1:
            raise ValueError(f"devices per kind must be at least 1, got {per_kind}")
        chosen = [k for k in kinds for _ in range(per_kind)]
    seen: dict[str, int] = {}
    out = []
    for kind in chosen:
        seen[kind.reported] = seen.get(kind.reported, 0) + 1
        out.append(LiveDevice(f"{kind.reported}-{seen[kind.reported]}", kind))
    return tuple(out)


def fake_description(shape: ModelShape, book: PerfBook, kind: DeviceKind) -> dict[str, Any] | None:
    """The fake-runtime description of ``shape`` on ``kind`` (None when the book has no profile)."""
    profile = book.profile(shape.name, VARIANT, kind.book)
    spec = book.kinds.get(kind.book)
    where = spec.processor_of(profile.runtime) if profile is not None and spec is not None else None
    if profile is None or where is None:
        return None
    processor, proc = where

    def tensors(items: tuple[Tensor, ...]) -> list[dict[str, Any]]:
        return [{"name": n, "dtype": d, "shape": list(s)} for n, d, s in items]

    return {
        "runtime": shape.runtime,
        "inputs": tensors(shape.inputs),
        "outputs": tensors(shape.outputs),
        "function": "zeros",
        "service_time_s": max(0.0, profile.curve.fixed_ms) / 1e3,
        "per_row_s": max(0.0, profile.curve.per_row_ms) / 1e3,
        "memory_bytes": shape.size_bytes,
        "processor": processor,
        "servers": proc.servers,
        "switch_s": profile.switch_ms / 1e3,
    }


def fake_models(shapes: Sequence[ModelShape], book: PerfBook, kind: DeviceKind) -> dict[str, dict[str, Any]]:
    """Model name -> description, for every model the book profiles on ``kind``."""
    out = {}
    for shape in shapes:
        desc = fake_description(shape, book, kind)
        if desc is not None:
            out[shape.name] = desc
    return out



def fake_path(folder: Path, model: str) -> Path:
    """Where an agent with ``fake_models_dir = folder`` looks for ``model`` (edgefleet.agent.fakes)."""
    return folder / model / f"{VARIANT}.json"


def agent_plan(device: LiveDevice, fake_dir: Path, *, telemetry_period_s: float = 1.0) -> AgentPlan:
    """The agent that plays ``device``: its kind, its budget in MiB, one worker per core of the kind."""
    extra = {"agent": {"device_kind": device.kind.reported, "fake_models_dir": str(fake_dir)}}
    return AgentPlan(device.device_id, budget_mib=device.kind.budget_bytes // MIB,
                     telemetry_period_s=telemetry_period_s, workers=device.kind.cpu_count, extra_config=extra)
