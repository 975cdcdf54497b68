"""``edgefleet top``: a live terminal view of the fleet, redrawn from the coordinator's status.

One operator connection polls ``op.status`` every ``--interval`` seconds and redraws the devices and
tenants tables of ``edgefleet status``, marking tenants whose last p95 is over their SLO. ``--once``
prints one frame and exits (for scripts and for terminals that are not TTYs). Ends at Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from edgefleet.cli.brokerargs import add_broker_args
from edgefleet.wire import FleetStatus


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("top", help="live view of devices and tenants (rates, p50/p95 vs SLO)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    add_broker_args(p)
    p.set_defaults(func=run)


def frame(status: FleetStatus, *, clock: float, where: str) -> str:
    """One screen: a title line, then the status tables with tenants over their SLO flagged."""
    from edgefleet.cli.fleet import format_status

    online = sum(1 for d in status.devices if d.online)
    over = [t.name for t in status.tenants if t.latency_p95_ms > t.slo_ms]
    title = (f"edgefleet top — {where} — {online}/{len(status.devices)} devices online, "
             f"{len(status.tenants)} tenants, {len(over)} over SLO — {time.strftime('%H:%M:%S', time.localtime(clock))}")
    body = format_status(status)
    if over:
        body += "\n\nover SLO (last p95 > SLO): " + ", ".join(sorted(over))
    return f"{title}\n\n{body}"


def run(args: argparse.Namespace) -> int:
    from edgefleet.cli.brokerargs import settings_from_args
    from edgefleet.cli.opsclient import OpsClient, OpsError
    from edgefleet.config import ConfigError
    from edgefleet.wire import OpStatus, Topics

    if args.interval <= 0:
        print("edgefleet top: --interval must be > 0")
        return 2
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(f"edgefleet top: {exc}")
        return 2
    where = f"{settings.host}:{settings.port} prefix {args.prefix!r}"
    live = sys.stdout.isatty() and not args.once
    try:
        with OpsClient(settings, Topics(args.prefix), connect_timeout_s=args.timeout) as ops:
            while True:
                try:
                    reply = ops.call(OpStatus(), args.timeout)
                except OpsError as exc:
                    text = f"edgefleet top — {where}\n\n{exc}"
                    if args.once:
                        print(text)
                        return 1
                else:
                    if not reply.ok or reply.status is None:
                        print(f"edgefleet top: status failed [{reply.code}]: {reply.message}")
                        return 1
                    text = frame(reply.status, clock=time.time(), where=where)
                if live:
                    sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
                    sys.stdout.flush()
                else:
                    print(text, flush=True)
                if args.once:
                    return 0
                time.sleep(args.interval)
    except OpsError as exc:
        print(f"edgefleet top: {exc}")
        return 1
    except KeyboardInterrupt:
        return 0
