"""``edgefleet-agent --config FILE``: run the agent until SIGTERM/SIGINT.

Under systemd (Type=notify) it reports READY=1 once connected and WATCHDOG=1 every half WatchdogSec;
without NOTIFY_SOCKET those calls do nothing.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from agent import systemd_notify
from agent.config import load_config
from agent.host import LocalModels
from agent.service import Agent
from edgefleet.config import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgefleet-agent", description="Run the edgefleet device agent.")
    parser.add_argument("--config", required=True, help="agent TOML config file")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="host an extra local model file under NAME (fp32 only); repeatable",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"
    )
    try:
        config = load_config(args.config)
        local = None
        if args.model:
            pairs = [m.split("=", 1) for m in args.model]
            if any(len(p) != 2 or not p[0] for p in pairs):
                raise ConfigError("--model takes NAME=PATH")
            local = LocalModels({name: Path(path) for name, path in pairs})
    except (ConfigError, OSError) as exc:
        print(f"edgefleet-agent: {exc}", file=sys.stderr)
        return 2
    agent = Agent(config, local_models=local)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    agent.start()
    connected = agent.wait_connected(30)
    systemd_notify.ready(f"serving as {config.device_id}" if connected else "broker unreachable; retrying")
    systemd_notify.keep_alive(done)  # WATCHDOG=1 every half WatchdogSec until SIGTERM/SIGINT
    systemd_notify.stopping("leaving cleanly")
    agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
