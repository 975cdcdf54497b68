"""``edgefleet broker``: Mosquitto with the settings edgefleet needs, on a free or given port.

It runs ``edgefleet.broker.PrivateBroker`` (the broker of the demo and the tests) with persistence in the
user's state folder, and prints the ``EDGEFLEET_MQTT_URL`` that every other command reads. In the
foreground it stops at Ctrl-C or SIGTERM; ``--detach`` leaves it running and prints shell exports, so
``eval "$(edgefleet broker --detach)"`` starts it and points this shell's commands at it.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "broker", help="run Mosquitto with edgefleet's settings (no-delay, queue limits, persistence)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    parser.add_argument("--bind", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for devices on the network)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="persistence, config and log (default: ~/.local/state/edgefleet/broker, or the "
                             "unit's StateDirectory=)")
    parser.add_argument("--detach", action="store_true",
                        help="leave the broker running and print `export EDGEFLEET_MQTT_URL=...` and "
                             "`export EDGEFLEET_BROKER_PID=...` for eval")
    parser.add_argument("--print-config", action="store_true", help="print the Mosquitto config and exit")
    parser.set_defaults(func=cmd_broker)


def cmd_broker(args: argparse.Namespace) -> int:
    from edgefleet.broker import BrokerUnavailable, PrivateBroker
    from edgefleet.paths import MQTT_URL_ENV, default_state_dir

    if not 0 <= args.port < 65536:
        print(f"edgefleet broker: --port must be in 0..65535, got {args.port}", file=sys.stderr)
        return 2
    state_dir = (args.state_dir or default_state_dir("broker")).expanduser().resolve()
    try:
        broker = PrivateBroker(port=args.port or None, workdir=state_dir, persistence=True, bind=args.bind)
    except (BrokerUnavailable, OSError) as exc:
        print(f"edgefleet broker: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(broker.config_path.read_text(), end="")
        return 0
    done = threading.Event()  # set by SIGTERM or Ctrl-C, from before Mosquitto starts: it is never left behind
    if not args.detach:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
    try:
        broker.start()
    except BrokerUnavailable as exc:
        print(f"edgefleet broker: {exc}", file=sys.stderr)
        return 1
    if args.detach:
        print(f"export {MQTT_URL_ENV}={shlex.quote(broker.url)}")
        print(f"export EDGEFLEET_BROKER_PID={broker.pid}")
        print(f"# Mosquitto {broker.url}, state and log in {state_dir}; stop it with: kill {broker.pid}",
              file=sys.stderr)
        return 0
    print(f"edgefleet broker: Mosquitto on {broker.url} (state and log in {state_dir}); Ctrl-C stops it\n"
          f"  in other shells: export {MQTT_URL_ENV}={broker.url}", flush=True)
    while not done.wait(1.0):
        if not broker.running:
            print(f"edgefleet broker: Mosquitto exited; see {broker.log_path}", file=sys.stderr)
            return 1
    broker.stop()
    return 0
