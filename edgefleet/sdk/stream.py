"""Subscribing to stream tenants: the results and events a device publishes for each frame.

``InferenceClient.subscribe(tenant)`` returns a ``Subscription`` (a blocking iterator) and
``AsyncInferenceClient.subscribe(tenant)`` an ``AsyncSubscription`` (an async iterator). Both yield
``StreamUpdate`` values: a result (JSON ``stream.result``, or an EFT1 result frame with the model's
tensors) or an event. The first update may be the retained latest result (``retained`` is True).
Neither builds an unbounded backlog: a subscriber that falls ``max_pending`` updates behind drops the
oldest ones (newest wins, as on the device) and counts them in ``dropped``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgefleet.mqtt import Inbound
from edgefleet.wire import (
    ErrorCode,
    FrameId,
    ResultFrame,
    StreamEvent,
    StreamResult,
    WireError,
    decode_frame,
    decode_stream_message,
)
from edgefleet.wire.tensors import MAGIC

DEFAULT_MAX_PENDING = 1000


@dataclass(frozen=True)
class StreamUpdate:
    """One message of a stream tenant. ``kind`` is "result" or "event"; for a result, ``result`` holds the
    fields (for EFT1 results, taken from the frame's meta) and ``outputs`` the tensors (empty for JSON
    results); for an event, ``event``."""

    kind: str
    tenant: str
    frame: FrameId
    result: StreamResult | None = None
    event: StreamEvent | None = None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    retained: bool = False


def parse_update(msg: Inbound, tenant: str) -> StreamUpdate:
    """A stream message as an update; raises WireError for anything else."""
    if msg.payload[:4] == MAGIC:
        frame = decode_frame(msg.payload)
        if not isinstance(frame, ResultFrame):
            raise WireError(ErrorCode.BAD_REQUEST, "expected a result frame")
        meta: dict[str, Any] = frame.meta
        ident = meta.get("frame") or {}
        frame_id = FrameId(topic=str(ident.get("topic", "")), seq=ident.get("seq"), ts=ident.get("ts"))
        result = StreamResult(
            tenant=str(meta.get("tenant", tenant)), device=str(meta.get("device", "")), frame=frame_id,
            age_ms=float(meta.get("age_ms", 0.0)), service_ms=float(meta.get("service_ms", 0.0)),
            values={str(k): float(v) for k, v in (meta.get("values") or {}).items()},
            decoded=dict(meta.get("decoded") or {}), skipped=int(meta.get("skipped", 0)),
            ts=float(meta.get("ts", 0.0)),
        )
        return StreamUpdate("result", tenant, frame_id, result=result, outputs=dict(frame.tensors),
                            retained=msg.retain)
    message = decode_stream_message(msg.payload)
    if isinstance(message, StreamResult):
        return StreamUpdate("result", tenant, message.frame, result=message, retained=msg.retain)
    if isinstance(message, StreamEvent):
        return StreamUpdate("event", tenant, message.frame, event=message, retained=msg.retain)
    raise WireError(ErrorCode.BAD_REQUEST, f"unexpected {type(message).__name__} on a stream tenant's topic")


class _Feed:
    """What subscribing needs from a client: attach a handler to a filter, and detach it."""

    def __init__(self, attach: Callable[[str, int, Callable[[Inbound], None]], None],
                 detach: Callable[[str, Callable[[Inbound], None]], None], filters: list[tuple[str, int]]) -> None:
        self._attach, self._detach, self._filters = attach, detach, filters

    def start(self, handler: Callable[[Inbound], None]) -> None:
        for f, qos in self._filters:
            self._attach(f, qos, handler)

    def stop(self, handler: Callable[[Inbound], None]) -> None:
        for f, _ in self._filters:
            self._detach(f, handler)


class Subscription:
    """A blocking iterator of a stream tenant's updates: ``for update in sub: ...`` or ``sub.get(timeout)``."""

    def __init__(self, tenant: str, feed: _Feed, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.tenant = tenant
        self.dropped = 0  # updates dropped because the subscriber fell max_pending behind
        self.malformed = 0  # messages on the tenant's topics that were not stream messages
        self._queue: collections.deque[StreamUpdate] = collections.deque()
        self._max = max_pending
        self._cond = threading.Condition()
        self._closed = False
        self._feed = feed
        feed.start(self._on_message)

    def _on_message(self, msg: Inbound) -> None:
        try:
            update = parse_update(msg, self.tenant)
        except (WireError, ValueError, TypeError):
            self.malformed += 1
            return
        with self._cond:
            if len(self._queue) >= self._max:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(update)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> StreamUpdate | None:
        """The next update, waiting up to ``timeout`` seconds (None: for ever); None on timeout or close."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            return self._queue.popleft()

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> StreamUpdate:
        update = self.get()
        if update is None:
            raise StopIteration
        return update

    def close(self) -> None:
        """Unsubscribe; a waiting ``get`` returns None and iteration ends."""
        if self._closed:
            return
        self._feed.stop(self._on_message)
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSubscription:
    """An async iterator of a stream tenant's updates: ``async for update in sub: ...``."""

    def __init__(self, tenant: str, feed: _Feed, loop: asyncio.AbstractEventLoop,
                 max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.tenant = tenant
        self.dropped = 0
        self.malformed = 0
        self._queue: collections.deque[StreamUpdate] = collections.deque()
        self._max = max_pending
        self._loop = loop
        self._ready = asyncio.Event()
        self._closed = False
        self._feed = feed
        feed.start(self._on_message)

    def _on_message(self, msg: Inbound) -> None:  # the link's thread
        try:
            update = parse_update(msg, self.tenant)
        except (WireError, ValueError, TypeError):
            self.malformed += 1
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._loop.call_soon_threadsafe(self._put, update)

    def _put(self, update: StreamUpdate) -> None:
        if len(self._queue) >= self._max:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(update)
        self._ready.set()

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> StreamUpdate:
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    async def get(self, timeout: float | None = None) -> StreamUpdate | None:
        """The next update within ``timeout`` seconds; None on timeout or when closed."""
        try:
            return await asyncio.wait_for(self.__anext__(), timeout)
        except (asyncio.TimeoutError, StopAsyncIteration):
            return None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, self._feed.stop, self._on_message)
        self._ready.set()

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
