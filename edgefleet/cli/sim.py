"""``edgefleet sim``: run the coordinator against a simulated fleet on a virtual clock, report as JSON.

The coordinator package is imported inside the command so that building the CLI parser stays light and
the shared CLI modules do not depend on the coordinator at import time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("sim", help="simulate a fleet (virtual clock) against the real coordinator")
    p.add_argument("--devices", type=int, default=50)
    p.add_argument("--tenants", type=int, default=200)
    p.add_argument("--seconds", type=float, default=120.0, help="simulated seconds")
    p.add_argument("--placement", choices=("most-free-memory", "predicted-latency"), default="most-free-memory")
    p.add_argument("--kill", type=int, default=1, help="devices to kill half-way (those hosting the most)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="write the full report here")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from coordinator.sim import Scenario, run_scenario

    try:
        scenario = Scenario(devices=args.devices, tenants=args.tenants, seconds=args.seconds,
                            placement=args.placement, kill=args.kill, seed=args.seed)
    except ValueError as exc:
        print(f"edgefleet sim: {exc}")
        return 2
    report = run_scenario(scenario)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
    t, f, slo, c = report["tenants"], report["failover"], report["slo"], report["commands"]
    print(f"{args.devices} devices, {t['total']} tenants, {report['simulated_s']:.0f} s simulated "
          f"in {report['wall_s']:.2f} s wall ({report['events']} events), placement {args.placement}")
    print(f"tenants: {t['running']} running ({t['running_on_live_devices']} on live devices), "
          f"{t['unplaced']} unplaced, states {t['states']}")
    if f.get("tenants"):
        ttr = f["time_to_replace_s"]
        print(f"killed {', '.join(f['killed'])}: {f['replaced']}/{f['tenants']} tenants re-placed, "
              f"max {ttr['max']} s, median {ttr['median']} s after the kill")
    print(f"SLO: {slo['over_slo']} of {slo['tenant_windows']} tenant windows over; "
          f"commands: {c['sends']} sent ({c['resends']} resent); rebalance moves: {report['rebalance_moves']}")
    if args.json is not None:
        print(f"wrote {args.json}")
    return 0
