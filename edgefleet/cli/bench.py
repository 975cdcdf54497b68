"""``edgefleet bench NAME --json PATH [--quick]``: run one benchmark, write its JSON and a PNG beside it.

Benchmarks measure and report; they never assert. Every figure that matters is a ratio taken within
one run, because these machines are noisy.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

# name -> module under bench/ exposing run(json_path, *, quick, plot, ...)
BENCHMARKS = {
    "serving": "bench.serving",
    "batching": "bench.batching",
    "multitenancy": "bench.multitenancy",
    "memory": "bench.memory",
    "failover": "bench.failover",
    "chaos": "bench.chaos",
    "perfmodel": "bench.perfmodel",
    "planning": "bench.planning",
    "placement": "bench.placement",
}


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="run a benchmark (JSON + PNG plot); benchmarks never assert")
    p.add_argument("name", choices=sorted(BENCHMARKS))
    p.add_argument("--json", type=Path, default=None, help="where to write the JSON (default .bench/NAME.json)")
    p.add_argument("--quick", action="store_true", help="short run (under a minute)")
    p.add_argument("--model", default="ocr-cls", help="zoo model for the serving benchmark")
    p.add_argument("--no-plot", action="store_true")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    path: Path = args.json or Path(".bench") / f"{args.name}.json"
    module = importlib.import_module(BENCHMARKS[args.name])
    kwargs: dict[str, Any] = {"quick": args.quick, "plot": not args.no_plot}
    if args.name == "serving":
        kwargs["zoo_model"] = args.model
    data = module.run(path, **kwargs)
    summary = {k: v for k, v in data.items()
               if k not in ("machine", "models", "mixes", "policies", "loads", "trials", "faults", "runs")}
    print(json.dumps(summary, indent=2, default=str))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0
