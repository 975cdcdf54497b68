"""``edgefleet models list --json`` and ``edgefleet models show NAME``: what a client needs to call a model."""

from __future__ import annotations

import json
import re

import pytest

from edgefleet.cli.main import main
from edgefleet.zoo import load_catalog
from edgefleet.zoo.inputs import INPUT_SHAPES, PREPROCESSING, sample_inputs


def test_list_json_has_every_model_with_inputs_outputs_variants_and_preprocessing(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--json"]) == 0
    models = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert set(models) == {m.name for m in load_catalog().models}
    for name, m in models.items():
        assert m["inputs"] and m["outputs"] and m["preprocessing"], name
        assert all(i["dtype"] and isinstance(i["shape"], list) and i["fixed_shape"] for i in m["inputs"]), name
        assert m["variants"]["fp32"]["available"] and m["variants"]["fp32"]["fidelity"] == 1.0
    cls = models["ocr-cls"]
    assert cls["inputs"][0] == {"name": "x", "dtype": "float32", "shape": [None, 3, None, None],
                                "fixed_shape": "[N, 3, 48, 192]"}


def test_show_prints_dtypes_shapes_with_sizes_variants_and_preprocessing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "show", "ocr-cls"]) == 0
    out = capsys.readouterr().out
    assert "x  float32  [?, 3, ?, ?]  sizes: [N, 3, 48, 192]" in out
    assert "fp32" in out and "int8" in out and "fidelity" in out and "(x - 0.5) / 0.5" in out
    assert main(["models", "show", "no-such-model"]) == 1
    assert "known: ocr-det" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(INPUT_SHAPES))
def test_the_documented_sizes_are_those_of_the_sample_inputs(name: str) -> None:
    pytest.importorskip("PIL")
    feeds = sample_inputs(name)
    assert set(INPUT_SHAPES[name]) == set(feeds) and name in PREPROCESSING
    for key, text in INPUT_SHAPES[name].items():
        dims = re.match(r"\[([^\]]*)\]", text)
        assert dims is not None, text
        documented = [d.strip() for d in dims.group(1).split(",") if d.strip()]
        actual = feeds[key].shape
        assert len(documented) == len(actual), (key, text, actual)
        for doc_dim, real in zip(documented, actual, strict=True):
            if doc_dim.isdigit():  # a fixed size; letters (N, H, W) vary
                assert int(doc_dim) == real, (key, text, actual)
