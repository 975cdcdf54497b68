"""``edgefleet bench NAME [--json PATH] [--quick]``: run one benchmark, write its JSON and a PNG beside it.

Benchmarks measure and report; they never assert. Every figure that matters is a ratio taken within
one run, because these machines are noisy. A full run writes docs/results/NAME.json by default (the
file to commit), a quick one .bench/NAME.json. ``edgefleet bench report`` rewrites the table of
docs/benchmarks.md from docs/results (edgefleet.bench.results).
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

# name -> module under bench/ exposing run(json_path, *, quick, plot, ...)
BENCHMARKS = {
    "serving": "edgefleet.bench.serving",
    "batching": "edgefleet.bench.batching",
    "multitenancy": "edgefleet.bench.multitenancy",
    "memory": "edgefleet.bench.memory",
    "failover": "edgefleet.bench.failover",
    "chaos": "edgefleet.bench.chaos",
    "perfmodel": "edgefleet.bench.perfmodel",
    "planning": "edgefleet.bench.planning",
    "placement": "edgefleet.bench.placement",
    "closedloop": "edgefleet.bench.closedloop",
    "gpu-sharing": "edgefleet.bench.gpu_sharing",
    "ingest": "edgefleet.bench.ingest",
    "stream": "edgefleet.bench.stream",
    "grants": "edgefleet.bench.grants",
}

# name -> module under bench/ exposing main(args, registered_benchmarks) -> exit status: not benchmarks
TOOLS = {
    "report": "edgefleet.bench.report",
    "record-service": "edgefleet.bench.record_service",
}


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="run a benchmark (JSON + PNG plot); benchmarks never assert")
    p.add_argument("name", choices=sorted(BENCHMARKS) + sorted(TOOLS))
    p.add_argument("--json", type=Path, default=None,
                   help="where to write the JSON (default docs/results/NAME.json, .bench/NAME.json with --quick)")
    p.add_argument("--quick", action="store_true", help="short run (under a minute)")
    p.add_argument("--model", default="ocr-cls", help="zoo model for the serving benchmark")
    p.add_argument("--peer", choices=("triton",), default=None,
                   help="serving: also measure NVIDIA Triton on the same model (installs it under .bench/triton)")
    p.add_argument("--no-plot", action="store_true")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from edgefleet.bench import results

    if args.name in TOOLS:
        return int(importlib.import_module(TOOLS[args.name]).main(args, sorted(BENCHMARKS)))
    path: Path = args.json or results.default_path(args.name, quick=args.quick)
    results.mark_start()
    module = importlib.import_module(BENCHMARKS[args.name])
    kwargs: dict[str, Any] = {"quick": args.quick, "plot": not args.no_plot}
    if args.name == "serving":
        kwargs["zoo_model"] = args.model
        kwargs["peer"] = args.peer
    data = module.run(path, **kwargs)
    if data.get("skipped"):  # the hardware it needs is not here: said, nothing written
        print(data["skipped"])
        return 0
    summary = {k: v for k, v in data.items()
               if k not in ("machine", "models", "mixes", "policies", "loads", "trials", "faults", "runs",
                            "provenance")}
    print(json.dumps(summary, indent=2, default=str))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0
