"""``edgefleet demo``: a real fleet on this machine, real models, Poisson load, a live table, a summary.

Starts a private Mosquitto on a free port, a coordinator and three agents (different memory budgets) as
child processes, deploys six tenants on six zoo models (ONNX Runtime and LiteRT) through the
coordinator's operator API, and lets one app per tenant call it with Poisson arrivals through the SDK.
One more tenant is a stream tenant: a simulated camera publishes real JPEG frames at a fixed rate to its
own topic, the device hosting the tenant answers the newest frame, and an app subscribed to the tenant's
results counts frames in, results out, frames skipped and the frame age (``edgefleet.demo.camera``).
Ends after ``--duration`` seconds or at Ctrl-C / SIGTERM: the apps stop sending, answers still due are
awaited, tenants are undeployed, and only the processes the demo started are stopped. Exit status 0
when no request failed, 1 otherwise, 2 when the zoo or the broker is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo", help="run a fleet of three agents on this machine with six tenants under Poisson load"
    )
    p.add_argument("--duration", type=float, default=90.0, help="seconds of load (default 90)")
    p.add_argument("--load-scale", type=float, default=1.0, help="multiply every tenant's request rate")
    p.add_argument("--refresh", type=float, default=1.0, help="seconds between table updates (default 1)")
    p.add_argument("--plain", action="store_true",
                   help="print the table every 10 s instead of redrawing the screen (default when not a TTY)")
    p.add_argument("--placement", choices=["most-free-memory", "predicted-latency"], default="most-free-memory",
                   help="the coordinator's placement policy (default most-free-memory; predicted-latency uses "
                        "the performance model, learnt from telemetry as the demo runs)")
    p.add_argument("--secure", action="store_true",
                   help="run with `edgefleet security init --dynamic` credentials and Mosquitto's dynamic "
                        "security plugin: every process and app its own account, each app allowed to call only "
                        "its own tenant, each device reading only the requests of the tenants placed on it")
    p.add_argument("--camera-fps", type=float, default=10.0,
                   help="frames per second of the simulated camera feeding the stream tenant (default 10)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep configs, SQLite state and logs of every process here (default: a temp folder, "
                        "removed at the end)")
    p.set_defaults(func=run)


def app_name(tenant: str) -> str:
    """The app (MQTT username and client id) that calls ``tenant``."""
    return f"app-{tenant}"


def _zoo_ready() -> str | None:
    """None when every demo model is fetched, else what to tell the user."""
    from edgefleet.demo.plan import TENANTS
    from edgefleet.zoo.errors import ZooError
    from edgefleet.zoo.paths import model_path

    for t in TENANTS:
        try:
            if not model_path(t.spec.model).exists():
                return f"model {t.spec.model} is not fetched"
        except (ZooError, OSError) as exc:
            return str(exc)
    return None


def run(args: argparse.Namespace) -> int:
    from edgefleet.broker import BrokerUnavailable
    from edgefleet.demo.plan import DEVICES, tenants
    from edgefleet.localfleet import FleetError, LocalFleet

    if args.duration <= 0 or args.refresh <= 0:
        print("edgefleet demo: --duration and --refresh must be > 0")
        return 2
    try:
        loads = tenants(args.load_scale)
    except ValueError as exc:
        print(f"edgefleet demo: {exc}")
        return 2
    problem = _zoo_ready()
    if problem:
        print(f"edgefleet demo: {problem}; run `edgefleet models fetch` (or `make demo`) first")
        return 2
    from edgefleet.demo.camera import stream_tenant

    prefix = f"demo{os.getpid()}"
    # the stream tenant's camera publishes to a topic of its own, which the ACLs of --secure do not grant
    stream = None if args.secure else stream_tenant(prefix, fps=args.camera_fps)
    fleet = LocalFleet(agents=DEVICES, prefix=prefix, workdir=args.workdir,
                       keep_workdir=args.workdir is not None, secure=args.secure, placement=args.placement,
                       apps={app_name(t.spec.name): [t.spec.name] for t in loads})
    print(f"edgefleet demo: starting a private Mosquitto{' (passwords, dynamic security)' if args.secure else ''}, "
          f"a coordinator and {len(DEVICES)} agents "
          f"({', '.join(f'{d.device_id} {d.budget_mib} MiB' for d in DEVICES)})", flush=True)
    try:
        fleet.start()
        for load in loads:
            reply = fleet.deploy(load.spec)
            print(f"  deployed {load.spec.name:<13} {load.spec.model:<14} -> {reply.message}", flush=True)
        if stream is not None:
            reply = fleet.deploy(stream[0])
            print(f"  deployed {stream[0].name:<13} {stream[0].model:<14} -> {reply.message} "
                  f"(a stream: camera frames on {stream[1]}, results on "
                  f"{fleet.prefix}/v1/tenants/{stream[0].name}/results)", flush=True)
        summary = asyncio.run(_serve(fleet, loads, args, stream))
        print(summary.text, flush=True)
        for load in loads:
            fleet.undeploy(load.spec.name)
        if stream is not None:
            fleet.undeploy(stream[0].name)
        return 0 if summary.failed == 0 else 1
    except BrokerUnavailable as exc:
        print(f"edgefleet demo: {exc}")
        return 2
    except FleetError as exc:
        print(f"edgefleet demo: {exc}")
        return 1
    except KeyboardInterrupt:
        print("\nedgefleet demo: interrupted while starting; stopping what it started")
        return 130
    finally:
        fleet.stop()
        if args.workdir is not None:
            print(f"edgefleet demo: configs, state and logs are in {args.workdir}")


async def _serve(fleet: Any, loads: Any, args: argparse.Namespace, stream: Any = None) -> Any:
    from edgefleet.demo.camera import StreamStats, run_camera, watch_results
    from edgefleet.demo.load import drive
    from edgefleet.demo.stats import TenantStats, render_streams, render_table, summarise
    from edgefleet.sdk import AsyncInferenceClient
    from edgefleet.zoo.inputs import sample_set

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    live = sys.stdout.isatty() and not args.plain
    stats = [TenantStats(t.spec.name, t.spec.model, t.runtime, t.spec.slo_ms, t.rate_rps) for t in loads]
    clients = [AsyncInferenceClient(fleet.client_settings(app_name(t.spec.name)), prefix=fleet.prefix,
                                    client_id=app_name(t.spec.name))  # with ACLs: client id = username
               for t in loads]
    placement: dict[str, str] = {}
    streams: list[StreamStats] = []
    watcher = AsyncInferenceClient(fleet.client_settings("app-stream"), prefix=fleet.prefix,
                                   client_id="app-stream") if stream is not None else None

    def refresh_placement() -> None:
        try:
            status = fleet.status()
        except Exception:  # the table keeps the last view; the next refresh tries again
            return
        placement.clear()
        placement.update({t.name: t.device_id or t.state for t in status.tenants})

    try:
        for c in clients:
            await c.open()
        start = time.monotonic()
        drivers = [asyncio.create_task(drive(c, t, sample_set(t.spec.model), s, stop, seed=i))
                   for i, (c, t, s) in enumerate(zip(clients, loads, stats, strict=True))]
        if stream is not None and watcher is not None:
            spec, source = stream
            await watcher.open()
            sub = await watcher.subscribe(spec.name)
            cam = StreamStats(spec.name, spec.model, spec.slo_ms, args.camera_fps)
            streams.append(cam)
            drivers.append(asyncio.create_task(watch_results(sub, cam, stop)))
            drivers.append(asyncio.create_task(run_camera(fleet.client_settings("camera"), "camera-door",
                                                          source, args.camera_fps, cam, stop)))
        loop.call_later(args.duration, stop.set)
        last_plain = -1e9
        last_placement = -1e9
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), args.refresh)
            now = time.monotonic()
            if now - last_placement >= 2.0:
                await loop.run_in_executor(None, refresh_placement)
                last_placement = now
            elapsed = now - start
            table = render_table([s.live(now, elapsed) for s in stats], elapsed_s=elapsed,
                                 duration_s=args.duration, placement=placement)
            if streams:
                table += "\n" + render_streams(streams, placement)
            if live:
                sys.stdout.write("\x1b[H\x1b[2J" + table + "\n")
                sys.stdout.flush()
            elif now - last_plain >= 10.0 or stop.is_set():
                print(table + "\n", flush=True)
                last_plain = now
        await asyncio.gather(*drivers)
        elapsed = time.monotonic() - start
    finally:
        for c in clients:
            await c.aclose()
        if watcher is not None:
            await watcher.aclose()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    await loop.run_in_executor(None, refresh_placement)
    devices: dict[str, list[str]] = {d.device_id: [] for d in fleet.agents}
    for tenant, device in placement.items():
        devices.setdefault(device, []).append(tenant)
    summary = summarise(stats, elapsed_s=elapsed, devices=devices)
    if streams:
        text = summary.text + "\nstream tenants (whole run; frame age from capture to the result at the app):\n"
        text += render_streams(streams, placement, recent=False)
        summary = type(summary)(text, summary.requests, summary.failed, summary.tenants_within_slo, summary.tenants)
    return summary
