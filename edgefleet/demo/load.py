"""The demo's apps: one asyncio task per tenant issuing Poisson arrivals through the SDK.

Arrivals follow their schedule whatever the answers do (open loop), so a slow device shows up as
latency and errors rather than as a politely lower rate. Each tenant has its own client (its own MQTT
connection), as separate apps would. In-flight requests are bounded per tenant; an arrival beyond the
bound is counted as ``client_backlog`` instead of piling up. Runs on one event loop: the SDK's asyncio
client hands replies from paho's thread to the loop, so no lock guards the stats.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from edgefleet.demo.plan import TenantLoad
from edgefleet.demo.stats import TenantStats
from edgefleet.sdk import AsyncInferenceClient, BrokerUnavailable, ClientClosed, InferenceError
from edgefleet.zoo.inputs import Feeds

MAX_IN_FLIGHT = 64


async def _one(client: AsyncInferenceClient, load: TenantLoad, feeds: Feeds, stats: TenantStats,
               clock: Callable[[], float]) -> None:
    try:
        result = await client.infer_with_meta(load.spec.name, feeds, timeout_s=load.timeout_s)
    except InferenceError as exc:
        stats.record_error(clock(), exc.code.value)
    except (BrokerUnavailable, ClientClosed) as exc:
        stats.record_error(clock(), type(exc).__name__)
    else:
        stats.record_ok(clock(), result.latency_ms, result.device)


async def open_loop(rate_rps: float, call: Callable[[], Coroutine[Any, Any, None]], stop: asyncio.Event, *,
                    rng: random.Random, backlog: Callable[[], None],
                    clock: Callable[[], float] = time.monotonic, max_in_flight: int = MAX_IN_FLIGHT) -> None:
    """Start ``call()`` at Poisson arrivals of ``rate_rps`` until ``stop`` is set, whatever the answers
    do; an arrival while ``max_in_flight`` calls are pending runs ``backlog()`` instead. Then wait for
    the calls already started (each has its own timeout)."""
    pending: set[asyncio.Task[None]] = set()
    next_at = clock()
    while not stop.is_set():
        next_at += rng.expovariate(rate_rps)
        delay = next_at - clock()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                break
            except asyncio.TimeoutError:
                pass
        if len(pending) >= max_in_flight:
            backlog()
            continue
        task = asyncio.create_task(call())
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending)


async def drive(client: AsyncInferenceClient, load: TenantLoad, samples: list[Feeds], stats: TenantStats,
                stop: asyncio.Event, *, seed: int, clock: Callable[[], float] = time.monotonic) -> None:
    """Issue requests until ``stop`` is set, then wait for those already sent (each has a timeout)."""
    inputs = itertools.cycle(samples)
    await open_loop(load.rate_rps, lambda: _one(client, load, next(inputs), stats, clock), stop,
                    rng=random.Random(seed), backlog=lambda: stats.record_error(clock(), "client_backlog"),
                    clock=clock)
