"""``edgefleet-agent --config FILE``: run the agent until SIGTERM/SIGINT.

``--check-config`` validates the config and the runtimes it names, the state folder and the zoo, prints
what it found and exits (0: ready to start, 2: not) without connecting or starting anything.

Under systemd (Type=notify) it reports READY=1 once connected and WATCHDOG=1 every half WatchdogSec;
without NOTIFY_SOCKET those calls do nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from edgefleet.agent import systemd_notify
from edgefleet.agent.config import load_config
from edgefleet.agent.host import LocalModels
from edgefleet.agent.service import Agent
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
    parser.add_argument("--device-id", default=None, metavar="ID",
                        help="this device's id instead of the config's [agent] device_id (one config, many agents)")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config and the runtimes it names, then exit (0: ok, 2: not)")
    args = parser.parse_args(argv)
    if args.check_config:
        return check_config(args.config, args.device_id)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"
    )
    try:
        config = load_config(args.config, device_id=args.device_id)
        local = None
        if args.model:
            pairs = [m.split("=", 1) for m in args.model]
            if any(len(p) != 2 or not p[0] for p in pairs):
                raise ConfigError("--model takes NAME=PATH")
            local = LocalModels({name: Path(path) for name, path in pairs})
        missing = [problem for _, problem in runtime_problems(config.runtimes) if problem]
        if missing:
            raise ConfigError(f"{args.config}: " + "; ".join(missing))
    except (ConfigError, OSError) as exc:
        print(f"edgefleet-agent: {exc}", file=sys.stderr)
        return 2
    agent = Agent(config, local_models=local)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    agent.start()
    connected = agent.wait_connected(2)
    if not connected:  # said at once, with the address tried; the agent keeps trying in the background
        logging.getLogger("edgefleet.agent").warning("cannot reach the MQTT broker at %s:%d yet; retrying in the background",
                                           config.mqtt.host, config.mqtt.port)
        connected = agent.wait_connected(28)
    systemd_notify.ready(f"serving as {config.device_id}" if connected else "broker unreachable; retrying")
    systemd_notify.keep_alive(done)  # WATCHDOG=1 every half WatchdogSec until SIGTERM/SIGINT
    systemd_notify.stopping("leaving cleanly")
    agent.stop()
    return 0


def runtime_problems(names: Sequence[str]) -> list[tuple[str, str]]:
    """(runtime, why it cannot be used, or '') for each named runtime: its package imports and it opens."""
    from edgefleet.runtime import EdgeRuntimeError, get_runtime

    out = []
    for name in names:
        try:
            get_runtime(name)
            out.append((name, ""))
        except EdgeRuntimeError as exc:
            out.append((name, f"runtime {name}: {exc}"))
    return out


def _writable(path: Path) -> bool:
    """Whether ``path`` is, or could be created as, a writable folder (nothing is created)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def check_config(path: str, device_id: str | None = None) -> int:
    """``--check-config``: one line per check, ``ok`` or what is wrong; 0 when the agent could start."""
    from edgefleet.runtime import available_runtimes
    from edgefleet.zoo.paths import data_dir, local_catalog_path

    try:
        config = load_config(path, device_id=device_id)
    except ConfigError as exc:
        print(f"config: {exc}")
        return 2
    bad = 0
    print(f"config: ok ({path}: device {config.device_id}, prefix {config.prefix})")
    for name, problem in runtime_problems(config.runtimes or [r for r in available_runtimes() if r != "fake"]):
        print(problem or f"runtime {name}: ok")
        bad += bool(problem) and name in config.runtimes
    if not config.runtimes:
        print("runtimes: none required ([agent] runtimes); the agent offers what is installed")
    if _writable(config.state_dir):
        print(f"state_dir: ok ({config.state_dir})")
    else:
        print(f"state_dir: {config.state_dir} cannot be created or written")
        bad += 1
    zoo = config.data_dir or data_dir()
    if config.fake_models_dir is not None:
        print(f"models: fakes from {config.fake_models_dir}")
    elif local_catalog_path(zoo).is_file():
        print(f"models: ok ({zoo})")
    else:
        print(f"models: no zoo in {zoo} yet: deploys will fail until `edgefleet models fetch --data-dir {zoo}`")
    print(f"broker: {config.mqtt.host}:{config.mqtt.port} (not contacted)")
    return 2 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
