"""The model catalog: what each zoo model is, where it came from, and the hash of every file.

``models/catalog.json`` in the repository is the committed, reviewed catalog; it pins the sha256 of each
source file. ``<data>/catalog.json`` is this machine's copy, with the hashes of the variants it built.
Both are decoded into frozen msgspec structs and validated, with errors that name the file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from edgefleet.zoo.errors import CatalogError, ModelNotFound

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
NAME_RE = re.compile(NAME_PATTERN)
VARIANTS = ("fp32", "fp16", "int8")
SCHEMA = 1

Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
Sha256 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Size = Annotated[int, msgspec.Meta(ge=0)]
RuntimeName = Literal["onnxruntime", "litert"]


class TensorRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An input or output as the model declares it; ``None`` marks a dynamic dimension."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


class Source(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The PyPI package a model file is taken from, and the pinned hash of that file."""

    package: str
    version: str
    path: str
    license: str
    sha256: Sha256
    size_bytes: Size


class Variant(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One file of a model (fp32 as shipped, or a derived int8/fp16) and how close it is to fp32."""

    available: bool = True
    reason: str | None = None
    file: str | None = None
    sha256: Sha256 | None = None
    size_bytes: Size | None = None
    fidelity: Unit | None = None
    fidelity_metric: str | None = None
    top1_agreement: Unit | None = None
    recipe: str | None = None
    source_sha256: Sha256 | None = None


class ImageInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How an encoded image (JPEG or PNG) becomes this model's input tensor, as the model's own pipeline
    prepares it: RGB, resized to ``width`` x ``height`` (``letterbox``: keeping the aspect ratio, black
    padding; otherwise stretched), values scaled from [0, 255] to [``low``, ``high``], channels last
    (``nhwc``) or first (``nchw``), with a batch axis of one."""

    input: str
    width: Annotated[int, msgspec.Meta(ge=1, le=8192)]
    height: Annotated[int, msgspec.Meta(ge=1, le=8192)]
    layout: Literal["nhwc", "nchw"] = "nhwc"
    low: float = 0.0
    high: float = 1.0
    letterbox: bool = True


class ModelEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One model of the zoo. ``image``: the model takes encoded images (stream tenants' frames);
    ``decoder``: the name of the function in ``edgefleet.zoo.decoders`` that turns its outputs into
    fields that mean something (``blazeface``: faces with boxes, keypoints and scores)."""

    name: Name
    task: str
    runtime: RuntimeName
    inputs: tuple[TensorRecord, ...]
    outputs: tuple[TensorRecord, ...]
    source: Source
    variants: dict[str, Variant]
    image: ImageInput | None = None
    decoder: str | None = None

    @property
    def extension(self) -> str:
        return ".onnx" if self.runtime == "onnxruntime" else ".tflite"

    def variant(self, name: str) -> Variant:
        """The variant record, or :class:`ModelNotFound` if it is unknown or was not produced."""
        record = self.variants.get(name)
        if record is None:
            raise ModelNotFound(
                f"model {self.name!r} has no {name!r} variant; it has {sorted(self.variants)}"
            )
        if not record.available:
            raise ModelNotFound(f"variant {name!r} of model {self.name!r} is unavailable: {record.reason}")
        return record


class Catalog(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """All zoo models, in a stable order."""

    models: tuple[ModelEntry, ...]
    schema: int = SCHEMA

    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def get(self, name: str) -> ModelEntry:
        for entry in self.models:
            if entry.name == name:
                return entry
        raise ModelNotFound(
            f"model {name!r} is not in the catalog (known: {', '.join(self.names())}); "
            "run `edgefleet models fetch` to fetch the zoo"
        )

    def find(self, name: str) -> ModelEntry | None:
        return next((m for m in self.models if m.name == name), None)

    def replace(self, entry: ModelEntry) -> Catalog:
        """A catalog with ``entry`` in place of the model of the same name (appended if new)."""
        models = [entry if m.name == entry.name else m for m in self.models]
        if entry.name not in self.names():
            models.append(entry)
        return Catalog(models=tuple(models), schema=self.schema)


def _validate(catalog: Catalog, origin: str) -> Catalog:
    if catalog.schema != SCHEMA:
        raise CatalogError(f"{origin}: schema {catalog.schema} is not supported (expected {SCHEMA})")
    seen: set[str] = set()
    for entry in catalog.models:
        if entry.name in seen:
            raise CatalogError(f"{origin}: model {entry.name!r} appears twice")
        seen.add(entry.name)
        unknown = sorted(set(entry.variants) - set(VARIANTS))
        if unknown:
            raise CatalogError(f"{origin}: model {entry.name!r} has unknown variants {unknown}")
        if "fp32" not in entry.variants:
            raise CatalogError(f"{origin}: model {entry.name!r} has no fp32 variant")
        for vname, v in entry.variants.items():
            if v.available and (v.file is None or v.sha256 is None or v.fidelity is None):
                raise CatalogError(
                    f"{origin}: {entry.name}/{vname} is available but lacks file, sha256 or fidelity"
                )
            if v.available and v.file != f"{vname}{entry.extension}":
                raise CatalogError(f"{origin}: {entry.name}/{vname} names file {v.file!r}")
            if not v.available and not v.reason:
                raise CatalogError(f"{origin}: {entry.name}/{vname} is unavailable without a reason")
    return catalog


def decode_catalog(data: bytes, origin: str = "<catalog>") -> Catalog:
    """Decode and validate catalog JSON; :class:`CatalogError` names ``origin`` and the bad field."""
    try:
        catalog = msgspec.json.decode(data, type=Catalog)
    except msgspec.ValidationError as exc:
        raise CatalogError(f"{origin}: invalid catalog: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise CatalogError(f"{origin}: not valid JSON: {exc}") from exc
    return _validate(catalog, origin)


def read_catalog(path: Path) -> Catalog:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CatalogError(f"cannot read catalog {path}: {exc}") from exc
    return decode_catalog(data, str(path))


def encode_catalog(catalog: Catalog) -> str:
    """Catalog JSON indented for review, models in catalog order."""
    return json.dumps(json.loads(msgspec.json.encode(catalog)), indent=2) + "\n"


def write_catalog(catalog: Catalog, path: Path) -> None:
    """Write ``catalog`` atomically (temporary file then rename)."""
    _validate(catalog, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(encode_catalog(catalog), encoding="utf-8")
    os.replace(tmp, path)
