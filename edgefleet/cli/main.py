"""Entry point of the ``edgefleet`` command: builds the parser from each area's ``register`` function.

Each sub-command module exposes ``register(subparsers)`` which adds its parser and sets ``func`` to a
callable taking the parsed namespace and returning an exit code. Imports of heavy modules happen inside
those callables so that ``edgefleet --help`` stays fast on a small device.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Sub-command modules, in the order they appear in --help.
_AREAS = (
    "edgefleet.cli.models",
    "edgefleet.cli.broker",
    "edgefleet.cli.fleet",
    "edgefleet.cli.top",
    "edgefleet.cli.demo",
    "edgefleet.cli.bench",
    "edgefleet.cli.security",
    "edgefleet.cli.sim",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgefleet",
        description="Run many tenants' neural networks on a fleet of edge boxes over MQTT 5.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _AREAS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # area not present in this build
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
