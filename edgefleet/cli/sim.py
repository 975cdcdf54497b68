"""``edgefleet sim``: run the real coordinator against a simulated fleet and report as JSON.

Two modes. By default a discrete-event simulation on a virtual clock (hundreds to thousands of
simulated agents, seconds of wall time). With ``--live``, real processes: a private Mosquitto, the
coordinator with the performance-model placement and one ``edgefleet-agent`` per device, each playing a
device kind (Jetson Orin Nano, Coral USB, Arm and x86 CPUs) with fake models that sleep the calibrated
service times, under Poisson load from apps through the SDK. The coordinator package is imported
inside the command so that building the CLI parser stays light.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edgefleet.cli.table import format_table

LIVE_HELP = """\
--live runs real processes instead: a private Mosquitto, the coordinator (placement predicted-latency)
and one edgefleet-agent per device, each reporting a simulated kind (x86_64-cpu, aarch64-cpu,
jetson-orin-nano, coral-usb, in turn) with its memory budget and serving the zoo models through fakes
that sleep the service times of coordinator/perf/calibration.json for that kind. Apps drive Poisson load
through the SDK; --kill agents are SIGKILLed a third of the way in. Defaults there: one device per kind,
8 tenants, 30 s of load (about 45 s in all, tens of requests per second)."""


def register(sub: Any) -> None:
    p = sub.add_parser("sim", help="simulate a fleet against the real coordinator (virtual clock, or --live)",
                       description="Simulate a fleet against the real coordinator; report as JSON.",
                       epilog=LIVE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--live", action="store_true", help="real agent processes over a real broker (see below)")
    p.add_argument("--devices", type=int, default=None, help="devices, taking the kinds in turn (default 50; "
                                                             "--live: --per-kind of each kind)")
    p.add_argument("--per-kind", type=int, default=1, help="--live: devices of each kind (default 1)")
    p.add_argument("--tenants", type=int, default=None, help="tenants (default 200; --live 8)")
    p.add_argument("--seconds", type=float, default=None,
                   help="seconds simulated (default 120); --live: seconds of load (default 30)")
    p.add_argument("--placement", choices=("most-free-memory", "predicted-latency"), default=None,
                   help="the coordinator's placement (default most-free-memory; --live: predicted-latency only)")
    p.add_argument("--kill", type=int, default=1, help="devices to kill (those hosting the most): half-way, "
                                                       "or with --live a third of the way (SIGKILL)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", type=Path, default=None, help="--live: keep every config, log and database here")
    p.add_argument("--json", type=Path, default=None, help="write the full report here")
    p.set_defaults(func=_run)


def _write(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {path}")


def _run(args: argparse.Namespace) -> int:
    return _live(args) if args.live else _virtual(args)


def _virtual(args: argparse.Namespace) -> int:
    from edgefleet.coordinator.sim import Scenario, run_scenario

    devices = 50 if args.devices is None else args.devices
    placement = args.placement or "most-free-memory"
    try:
        scenario = Scenario(devices=devices, tenants=200 if args.tenants is None else args.tenants,
                            seconds=120.0 if args.seconds is None else args.seconds,
                            placement=placement, kill=args.kill, seed=args.seed)
    except ValueError as exc:
        print(f"edgefleet sim: {exc}")
        return 2
    report = run_scenario(scenario)
    t, f, slo, c = report["tenants"], report["failover"], report["slo"], report["commands"]
    print(f"{devices} devices, {t['total']} tenants, {report['simulated_s']:.0f} s simulated "
          f"in {report['wall_s']:.2f} s wall ({report['events']} events), placement {placement}")
    print(f"tenants: {t['running']} running ({t['running_on_live_devices']} on live devices), "
          f"{t['unplaced']} unplaced, states {t['states']}")
    if f.get("tenants"):
        ttr = f["time_to_replace_s"]
        print(f"killed {', '.join(f['killed'])}: {f['replaced']}/{f['tenants']} tenants re-placed, "
              f"max {ttr['max']} s, median {ttr['median']} s after the kill")
    print(f"SLO: {slo['over_slo']} of {slo['tenant_windows']} tenant windows over; "
          f"commands: {c['sends']} sent ({c['resends']} resent); rebalance moves: {report['rebalance_moves']}")
    _write(args.json, report)
    return 0


def _live(args: argparse.Namespace) -> int:
    from edgefleet.coordinator.sim.live import LiveScenario, run_live

    if args.placement not in (None, "predicted-latency"):
        print("edgefleet sim: --live runs the coordinator with placement predicted-latency only")
        return 2
    try:
        scenario = LiveScenario(devices=args.devices, per_kind=args.per_kind,
                                tenants=8 if args.tenants is None else args.tenants,
                                seconds=30.0 if args.seconds is None else args.seconds, kill=args.kill,
                                seed=args.seed)
    except ValueError as exc:
        print(f"edgefleet sim: {exc}")
        return 2
    report = run_live(scenario, workdir=args.workdir, say=lambda line: print(line, flush=True))
    print(live_summary(report))
    _write(args.json, report)
    return 0


def live_summary(report: dict[str, Any]) -> str:
    """The end-of-run text of a live simulation, from its report."""
    r, f = report["requests"], report["failover"]
    lines = [f"live: {len(report['devices'])} agents, {len(report['tenants'])} tenants, "
             f"{report['scenario']['seconds']:g} s of load: {r['total']} requests ({r['rps']} req/s), "
             f"{r['failed']} failed; {report['wall_s']:g} s wall"]
    rows = [("TENANT", "DEPLOYED ON", "NOW ON", "REQUESTS", "FAILED", "P95 MS", "SLO MS", "SERVICE MS / BOOK")]
    for name, t in report["tenants"].items():
        svc = "  ".join(f"{k} {v['measured_median_ms']}/{v['book_median_ms']}" for k, v in t["service"].items())
        rows.append((name, t["deployed_kind"] or "-", t["kind"] or "-", str(t["requests"]), str(t["failed"]),
                     "-" if t["p95_ms"] is None else f"{t['p95_ms']:.1f}", f"{t['slo_ms']:g}", svc or "-"))
    lines.append(format_table(rows))
    for kind, k in sorted(report["kinds"].items()):
        lines.append(f"  {kind} ({', '.join(k['online']) or 'none online'}): {', '.join(k['tenants']) or '-'}")
    if f.get("killed"):
        again = f.get("served_again_s", {})
        lines.append(f"killed {', '.join(f['killed'])} at {f['at_s']:g} s: {len(f['replaced_s'])}/{len(f['tenants'])} "
                     f"tenants running again, max {f['max_replaced_s']} s after the kill (coordinator); "
                     f"first answers from elsewhere max {max(again.values()) if again else None} s (apps)")
    return "\n".join(lines)
