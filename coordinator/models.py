"""The coordinator's one dependency on the model zoo: turning ``model:variant`` into ModelFacts.

Kept apart so that placement stays pure (it receives ModelFacts values) and tests can hand the service
a fixed table of models instead of the zoo's catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from edgefleet.coordinator.fleet import ModelFacts


class UnknownModel(LookupError):
    """The model or the variant is not in the catalog, or the variant was not produced."""


class ModelLookup(Protocol):
    def facts(self, model: str, variant: str) -> ModelFacts:
        """The facts of ``model:variant``; raise UnknownModel when there are none."""
        ...


class ZooModels:
    """Reads the zoo catalog (this machine's if fetched, else the committed one) on first use."""

    def __init__(self, load: Callable[[], Any] | None = None) -> None:
        self._load = load
        self._catalog: Any = None

    def _get_catalog(self) -> Any:
        if self._catalog is None:
            if self._load is None:
                from edgefleet.zoo import load_catalog

                self._load = load_catalog
            self._catalog = self._load()
        return self._catalog

    def facts(self, model: str, variant: str) -> ModelFacts:
        from edgefleet.zoo import ZooError

        try:
            entry = self._get_catalog().get(model)
            record = entry.variant(variant)
        except ZooError as exc:
            raise UnknownModel(str(exc)) from None
        size = record.size_bytes if record.size_bytes is not None else entry.source.size_bytes
        fidelity = float(record.fidelity) if record.fidelity is not None else 1.0
        return ModelFacts(name=model, variant=variant, runtime=str(entry.runtime), size_bytes=int(size),
                          fidelity=fidelity)


class StaticModels:
    """A fixed table ``{(model, variant): ModelFacts}``, for tests and demos without the zoo."""

    def __init__(self, table: Mapping[tuple[str, str], ModelFacts]) -> None:
        self._table = dict(table)

    def facts(self, model: str, variant: str) -> ModelFacts:
        try:
            return self._table[(model, variant)]
        except KeyError:
            raise UnknownModel(f"model {model}:{variant} is not in the catalog") from None
