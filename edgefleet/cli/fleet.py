"""The ``edgefleet deploy | undeploy | migrate | status`` sub-commands: operator calls to the coordinator.

Each sends one request over MQTT 5 request/response (see ``edgefleet.cli.opsclient``) and prints the
answer for people (or JSON with ``status --json``). With the performance-model placement, ``status``
also shows each tenant's predicted p95 and the model's error on it (the report ``op.status`` carries). Exit status: 0 done, 1 refused or failed, 2 usage.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from edgefleet.wire import FleetStatus, OpReply, TenantModelError, TenantView

MIB = 1 << 20  # sizes are printed in MiB, the unit budgets are configured in


def _common(parser: argparse.ArgumentParser) -> None:
    from edgefleet.cli.brokerargs import add_broker_args

    add_broker_args(parser)


def _demand_args(parser: argparse.ArgumentParser, *, rate_default: float | None) -> None:
    """``--rate`` | ``--fps`` [``--jitter-ms``] | ``--closed N`` [``--think-ms``]: how requests arrive."""
    kind = parser.add_mutually_exclusive_group()
    rate_help = "Poisson: expected requests per second" + (f" (default {rate_default:g})" if rate_default else "")
    kind.add_argument("--rate", type=float, default=None, help=rate_help)
    kind.add_argument("--fps", type=float, default=None, help="periodic: one request every 1/FPS seconds (a camera)")
    kind.add_argument("--closed", type=int, default=None, metavar="N",
                      help="closed loop: N requests in flight, the next sent when a reply arrives")
    parser.add_argument("--jitter-ms", type=float, default=0.0,
                        help="with --fps: standard deviation of each request's offset from its slot (ms)")
    parser.add_argument("--think-ms", type=float, default=0.0,
                        help="with --closed: time between a reply and the next request (ms, default 0)")


def _demand(args: argparse.Namespace) -> Any:
    """The declared demand the flags give (None: none declared); ValueError on a bad figure."""
    from edgefleet.wire import Closed, Periodic, Poisson

    if args.jitter_ms and args.fps is None:
        raise ValueError("--jitter-ms needs --fps")
    if args.think_ms and args.closed is None:
        raise ValueError("--think-ms needs --closed")
    if args.fps is not None:
        return Periodic(fps=args.fps, jitter_ms=args.jitter_ms)
    if args.closed is not None:
        return Closed(in_flight=args.closed, think_ms=args.think_ms)
    if args.rate is not None:
        return Poisson(rate_rps=args.rate)
    return None


def register(subparsers: Any) -> None:
    """Add ``deploy``, ``undeploy`` and ``status`` to the parent CLI."""
    deploy = subparsers.add_parser("deploy", help="run a tenant on the fleet (the coordinator places it)")
    deploy.add_argument("name", help="tenant name: lower-case letters, digits, '-' and '_'")
    deploy.add_argument("--model", required=True, help="zoo model name (see `edgefleet models list`)")
    deploy.add_argument("--variant", default="fp32", choices=["fp32", "fp16", "int8"])
    deploy.add_argument("--slo-ms", type=float, required=True, help="p95 latency objective, milliseconds")
    deploy.add_argument("--min-fidelity", type=float, default=0.0, help="lowest fidelity vs fp32, in [0, 1]")
    deploy.add_argument("--max-batch", type=int, default=8, help="largest batch the device may form")
    deploy.add_argument("--device", default=None, help="pin to this device instead of letting placement choose")
    _demand_args(deploy, rate_default=None)
    deploy.add_argument("--source", action="append", default=None, metavar="TOPIC",
                        help="a stream tenant: take frames from this topic filter (repeat for several sources); "
                             "results and events go to {prefix}/v1/tenants/NAME/results and /events")
    deploy.add_argument("--event", action="append", default=[], metavar="RULE",
                        help="with --source: NAME:VALUE>=ON[/OFF] (an event when VALUE rises to ON and when it "
                             "falls below OFF) or NAME:VALUE~HOLD (when the class VALUE changes and holds HOLD frames)")
    deploy.add_argument("--results", choices=["auto", "json", "tensors"], default="auto",
                        help="with --source: results as JSON, EFT1 tensors, or JSON when the model has a decoder")
    _common(deploy)
    deploy.set_defaults(func=cmd_deploy)

    undeploy = subparsers.add_parser("undeploy", help="remove a tenant from the fleet")
    undeploy.add_argument("name")
    _common(undeploy)
    undeploy.set_defaults(func=cmd_undeploy)

    migrate = subparsers.add_parser(
        "migrate", help="move a running tenant, make-before-break (the new replica is warm before the old leaves)"
    )
    migrate.add_argument("name")
    migrate.add_argument("--to", default=None, metavar="DEVICE", help="target device (default: placement chooses)")
    _common(migrate)
    migrate.set_defaults(func=cmd_migrate)

    plan = subparsers.add_parser(
        "plan", help="would a new tenant fit, where, with what SLO margin? (nothing is deployed)"
    )
    plan.add_argument("--add", required=True, metavar="NAME", help="the new tenant's name")
    plan.add_argument("--model", required=True, help="zoo model name")
    plan.add_argument("--variant", default="fp32", choices=["fp32", "fp16", "int8"])
    plan.add_argument("--slo-ms", type=float, required=True, help="p95 latency objective, milliseconds")
    _demand_args(plan, rate_default=1.0)
    _common(plan)
    plan.set_defaults(func=cmd_plan)

    status = subparsers.add_parser("status", help="devices and tenants as the coordinator sees them")
    status.add_argument("--json", action="store_true", help="print the FleetStatus as JSON")
    _common(status)
    status.set_defaults(func=cmd_status)


def _call(args: argparse.Namespace, op: Any) -> OpReply | None:
    from edgefleet.cli.brokerargs import settings_from_args
    from edgefleet.cli.opsclient import OpsError, call_ops
    from edgefleet.wire import Topics, WireError

    try:
        settings = settings_from_args(args)
        topics = Topics(args.prefix)
        return call_ops(settings, topics, op, timeout=args.timeout)
    except (OpsError, WireError, ValueError) as exc:
        print(f"edgefleet {args.command}: {exc}")
        return None


def _failed(args: argparse.Namespace, reply: OpReply) -> int:
    code = f" [{reply.code}]" if reply.code else ""
    print(f"edgefleet {args.command}: failed{code}: {reply.message}")
    return 1


def parse_event(text: str) -> Any:
    """An event rule from ``NAME:VALUE>=ON[/OFF]`` (Above) or ``NAME:VALUE~HOLD`` (TopChange).
    Examples: ``someone:face_score_max>=0.7/0.5`` -> on at 0.7, off below 0.5; ``label:scores.argmax~3``
    -> a new class that holds 3 frames. ValueError says what is wrong."""
    from edgefleet.wire import Above, TopChange

    name, sep, rest = text.partition(":")
    if not sep:
        raise ValueError(f"event {text!r}: expected NAME:VALUE>=ON[/OFF] or NAME:VALUE~HOLD")
    try:
        if ">=" in rest:
            value, _, levels = rest.partition(">=")
            on, _, off = levels.partition("/")
            return Above(name=name, value=value, on=float(on), off=float(off) if off else None)
        if "~" in rest:
            value, _, hold = rest.partition("~")
            return TopChange(name=name, value=value, hold_frames=int(hold))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"event {text!r}: {exc}") from None
    raise ValueError(f"event {text!r}: expected NAME:VALUE>=ON[/OFF] or NAME:VALUE~HOLD")


def _stream(args: argparse.Namespace) -> Any:
    """The stream part the flags give (None: a request tenant); ValueError on bad flags."""
    from edgefleet.wire import StreamSpec

    if not args.source:
        if args.event or args.results != "auto":
            raise ValueError("--event and --results need --source")
        return None
    return StreamSpec(sources=list(args.source), events=[parse_event(e) for e in args.event],
                      results=args.results)


def cmd_deploy(args: argparse.Namespace) -> int:
    from edgefleet.wire import OpDeploy, TenantSpec

    try:
        spec = TenantSpec(name=args.name, model=args.model, variant=args.variant, slo_ms=args.slo_ms,
                          min_fidelity=args.min_fidelity, max_batch=args.max_batch, demand=_demand(args),
                          stream=_stream(args))
    except ValueError as exc:
        print(f"edgefleet deploy: {exc}")
        return 2
    reply = _call(args, OpDeploy(tenant=spec, device_id=args.device))
    if reply is None:
        return 1
    if not reply.ok:
        return _failed(args, reply)
    print(reply.message or f"{spec.name} running on {reply.device_id}")
    return 0


def cmd_undeploy(args: argparse.Namespace) -> int:
    from edgefleet.wire import OpUndeploy

    reply = _call(args, OpUndeploy(tenant=args.name))
    if reply is None:
        return 1
    if not reply.ok:
        return _failed(args, reply)
    print(reply.message or f"{args.name} removed")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from edgefleet.wire import OpMigrate

    reply = _call(args, OpMigrate(tenant=args.name, device_id=args.to))
    if reply is None:
        return 1
    if not reply.ok:
        return _failed(args, reply)
    print(reply.message or f"{args.name} runs on {reply.device_id}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from edgefleet.wire import OpPlan, TenantSpec

    try:
        demand = _demand(args)
        rate = args.rate if args.rate is not None else (args.fps if args.fps is not None else 1.0)
        op = OpPlan(tenant=TenantSpec(name=args.add, model=args.model, variant=args.variant, slo_ms=args.slo_ms,
                                      demand=demand), rate_rps=rate)
    except ValueError as exc:
        print(f"edgefleet plan: {exc}")
        return 2
    reply = _call(args, op)
    if reply is None:
        return 1
    if not reply.ok:
        return _failed(args, reply)
    print(reply.message)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from edgefleet.wire import OpStatus

    reply = _call(args, OpStatus())
    if reply is None:
        return 1
    if not reply.ok or reply.status is None:
        return _failed(args, reply)
    if args.json:
        import msgspec

        print(json.dumps(msgspec.to_builtins(reply.status), indent=2))
    else:
        print(format_status(reply.status))
    return 0


def format_status(status: FleetStatus) -> str:
    """The two tables ``edgefleet status`` prints: devices, then tenants."""
    devices: list[tuple[str, ...]] = [("DEVICE", "ONLINE", "KIND", "RUNTIMES", "MODEL MEM MiB", "TENANTS")]
    for d in status.devices:
        devices.append((
            d.device_id, "yes" if d.online else "no", d.device_kind or "-", ",".join(d.runtimes) or "-",
            f"{d.memory_used_bytes / MIB:.1f}/{d.memory_budget_bytes / MIB:.1f}", ",".join(d.tenants) or "-",
        ))
    model = {e.tenant: e for e in status.model.tenants} if status.model is not None else None
    head = ("TENANT", "MODEL", "DEVICE", "STATE", "RPS", "P50/P95 MS", "SLO MS", "ERRORS")
    tenants: list[tuple[str, ...]] = [(*head, *(_MODEL_HEAD if model is not None else ()), "DETAIL")]
    for t in status.tenants:
        row = (
            t.name, f"{t.model}:{t.variant}", t.device_id or "-", t.state, f"{t.arrival_rps:.1f}",
            f"{t.latency_p50_ms:.1f}/{t.latency_p95_ms:.1f}" if t.latency_p95_ms else "-", f"{t.slo_ms:g}", str(t.errors),
        )
        tenants.append((*row, *(_model_cells(model.get(t.name)) if model is not None else ()),
                        (t.detail[:60] + "...") if len(t.detail) > 63 else t.detail))
    from edgefleet.cli.table import format_table

    parts = [format_table(devices) if status.devices else "no devices",
             format_table(tenants) if status.tenants else "no tenants"]
    changed = [f"  {t.name}: {_reconfigured(t)}" for t in status.tenants if t.requested is not None]
    if changed:
        parts.append("reconfigured by the rebalancer (running, and what was deployed):\n" + "\n".join(changed))
    if status.model is not None and status.model.mean_ape_ratio is not None:
        n = len(status.model.tenants)
        parts.append(f"performance model: mean p95 error {status.model.mean_ape_ratio:.0%} over {n} "
                     f"tenant{'' if n == 1 else 's'} (EWMA of |predicted - measured| / measured; bias < 0: optimistic)")
    return "\n\n".join(parts)


def _reconfigured(t: TenantView) -> str:
    """``"variant int8 (deployed fp32), max_batch 16 (deployed 8)"``: what runs where it differs from the
    operator's spec."""
    asked = t.requested
    if asked is None:
        return ""
    running = {"variant": t.variant, "max_batch": t.max_batch, "slo_ms": t.slo_ms}
    diffs = [f"{k} {v:g} (deployed {getattr(asked, k):g})" if isinstance(v, float)
             else f"{k} {v} (deployed {getattr(asked, k)})"
             for k, v in running.items() if v != getattr(asked, k)]
    return ", ".join(diffs) or "as deployed"


_MODEL_HEAD = ("PRED P95 MS", "MODEL ERR (BIAS)")


def _model_cells(e: TenantModelError | None) -> tuple[str, str]:
    """The performance model's last predicted p95 and its error for one tenant ("-" when not scored)."""
    if e is None:
        return "-", "-"
    return f"{e.predicted_p95_ms:.1f}", f"{e.ape_ratio:.0%} ({e.bias_ratio:+.0%})"
