"""``edgefleet-coordinator --config FILE``: run the coordinator until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from edgefleet.coordinator.config import ConfigError, load_config
from edgefleet.coordinator.service import Coordinator

SWITCH_INTERVAL_S = 0.0005


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgefleet-coordinator", description="Place tenants on the fleet and keep them running."
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="coordinator TOML file")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"edgefleet-coordinator: {exc}", file=sys.stderr)
        return 2
    # The worker thread holds the GIL for long stretches; paho's network thread releases it at every
    # socket call and would wait the default 5 ms to get it back each time, which caps how fast messages
    # come in and acknowledgements go out (measured by ``edgefleet bench ingest``). Hand over more often.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    coordinator = Coordinator(config)
    try:
        coordinator.start(timeout_s=2.0)  # an unreachable broker is reported within 2 s, then retried
    except Exception as exc:
        print(f"edgefleet-coordinator: cannot start: {exc}", file=sys.stderr)
        return 1
    logging.getLogger("edgefleet.coordinator").info(
        "coordinator %s serving prefix %r (db %s)", config.coordinator_id, config.prefix, config.db_path
    )
    try:
        while not stop.wait(1.0):
            pass
    finally:
        coordinator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
