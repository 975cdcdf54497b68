"""Serving fake stand-ins instead of real models: how one agent process plays a device it is not.

With ``fake_models_dir`` set, the agent resolves every model to a fake-runtime description in that
folder, ``<model>/<variant>.json`` (see ``edgefleet.runtime.fake``), and opens it on the fake runtime,
which sleeps the service time written there. The description also says which real runtime the fake
stands in for (``"runtime": "litert"``) and how many bytes the model takes (``memory_bytes``), so
everything around the session is what the real runtime gets: the runtime reported in the Birth and
matched by placement, the per-tenant concurrency (LiteRT and Edge TPU interpreters run one request at
a time), batching (LiteRT models have fixed shapes), the memory budget and the telemetry.
``edgefleet sim --live`` writes these folders, one per simulated device kind.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgefleet.agent.host import DeployError, ResolvedModel
from edgefleet.runtime import Session, SessionOptions, get_runtime

STANDS_IN_FOR = ("onnxruntime", "litert", "edgetpu")  # runtimes a fake description may play


class FakeModels:
    """A resolver for the descriptions under ``folder``; a model without a folder there is unknown."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _describe(self, path: Path) -> tuple[str, int, float]:
        """(runtime played, memory bytes, fidelity) of one description; DeployError when unusable."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            runtime, size = data["runtime"], data["memory_bytes"]
            fidelity = float(data.get("fidelity", 1.0))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DeployError("load_failed", f"fake model {path} is unreadable: {exc}") from None
        if runtime not in STANDS_IN_FOR or not isinstance(size, int) or size <= 0 or not 0 <= fidelity <= 1:
            raise DeployError("load_failed", f"fake model {path}: runtime must be one of {STANDS_IN_FOR}, "
                                             "memory_bytes a positive integer, fidelity in [0, 1]")
        return runtime, size, fidelity

    def resolve(self, model: str, variant: str) -> ResolvedModel | None:
        folder = self.folder / model
        if not folder.is_dir():
            return None
        path = folder / f"{variant}.json"
        if not path.is_file():
            raise DeployError("variant_unavailable", f"no fake {model}:{variant} in {self.folder}")
        runtime, size, fidelity = self._describe(path)
        return ResolvedModel(path, runtime, size, fidelity)

    def cached(self) -> list[str]:
        """``model:variant`` of every description, as the Birth's cached models."""
        return sorted(f"{p.parent.name}:{p.stem}" for p in self.folder.glob("*/*.json"))

    def runtimes(self) -> list[str]:
        """The runtimes the descriptions play, in edgefleet's order: what this device reports it runs."""
        played = set()
        for p in self.folder.glob("*/*.json"):
            try:
                played.add(self._describe(p)[0])
            except DeployError:
                continue
        return [r for r in STANDS_IN_FOR if r in played]


def open_fake(runtime: str, path: Path, options: SessionOptions) -> Session:
    """Open ``path`` on the fake runtime whatever runtime the description plays (``ModelHost``'s opener)."""
    return get_runtime("fake").open(path, options)
