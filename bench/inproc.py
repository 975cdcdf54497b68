"""An agent's serving core without MQTT: the real host, scheduler, batcher and runtimes, driven by an
open-loop Poisson load generator that calls the request handler directly.

Used where the question is about scheduling and batching, not the broker: through MQTT, the load
generator's own client tops out at a few thousand messages per second on this class of machine,
below what the fastest zoo models serve.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgefleet.agent.batching import BatchPolicy
from edgefleet.agent.host import ModelHost, ZooResolver
from edgefleet.agent.memory.manager import MemoryManager
from edgefleet.agent.scheduler import Scheduler
from edgefleet.agent.serving import Server
from edgefleet.agent.slots import Slots
from edgefleet.agent.telemetry import WindowStats
from edgefleet.wire import ErrorFrame, TenantSpec, Topics, decode_frame, encode_request


@dataclass
class Sample:
    sent: float
    done: float = 0.0
    ok: bool = False
    code: str = ""
    batch: int = 0


@dataclass
class Core:
    host: ModelHost
    scheduler: Scheduler
    server: Server
    memory: MemoryManager
    topics: Topics
    samples: dict[bytes, Sample] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, topic: str, payload: bytes, **kw: Any) -> None:
        now = time.perf_counter()
        corr = kw.get("correlation_data") or b""
        frame = decode_frame(payload)
        with self.lock:
            s = self.samples.get(corr)
        if s is None:
            return
        s.done = now
        if isinstance(frame, ErrorFrame):
            s.code = frame.code.value
        else:
            s.ok = True
            s.batch = int(frame.meta.get("batch", 1))

    def stop(self) -> None:
        self.server.stop()
        self.host.close()


def build_core(
    specs: list[TenantSpec],
    *,
    policy: str = "adaptive",
    workers: int = 2,
    threads: int = 1,
    budget_bytes: int = 1 << 30,
) -> Core:
    slots = Slots()
    host = ModelHost([ZooResolver()], budget_bytes=budget_bytes, threads=threads, slots=slots)
    scheduler = Scheduler(
        workers=workers, max_queue=100_000, policy=BatchPolicy.parse(policy), clock=time.perf_counter,
        slots=slots,
    )
    memory = MemoryManager(host, scheduler, policy="static")
    topics = Topics("bench")
    holder: dict[str, Core] = {}

    def publish(topic: str, payload: bytes, **kw: Any) -> None:
        holder["core"].publish(topic, payload, **kw)

    server = Server(
        device_id="bench",
        topics=topics,
        host=host,
        memory=memory,
        scheduler=scheduler,
        stats=WindowStats(),
        publish=publish,
        max_payload_bytes=64 << 20,
        default_timeout_ms=0,
        clock=time.perf_counter,
    )
    core = Core(host, scheduler, server, memory, topics)
    holder["core"] = core
    for spec in specs:
        memory.assign(spec)
    server.start(workers)
    return core


def poisson_load(
    core: Core,
    tenant: str,
    feeds: Mapping[str, np.ndarray],
    *,
    rate_rps: float,
    duration_s: float,
    timeout_ms: float,
    seed: int = 1,
) -> list[Sample]:
    """Open loop: requests at exponential inter-arrival times, whatever the replies do."""
    payload = encode_request(feeds, timeout_ms=timeout_ms)
    topic = core.topics.infer(tenant)
    rng = random.Random(seed)
    out: list[Sample] = []
    start = time.perf_counter()
    next_at = start
    i = 0
    while True:
        next_at += rng.expovariate(rate_rps)
        if next_at - start > duration_s:
            break
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        corr = i.to_bytes(8, "little") + tenant.encode()
        i += 1
        s = Sample(sent=time.perf_counter())
        with core.lock:
            core.samples[corr] = s
        out.append(s)
        core.server.on_request(topic, payload, "r", corr, 0, received=s.sent)
    end = time.perf_counter() + 5.0
    while time.perf_counter() < end and any(x.done == 0.0 for x in out[-50:]):
        time.sleep(0.01)
    return out
