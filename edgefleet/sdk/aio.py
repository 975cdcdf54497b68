"""The asyncio client: the same calls as InferenceClient, awaited, with thousands in flight on one loop.

Each call is an asyncio future in the pending table plus one loop timer for its timeout; no thread and
no task per call. Replies arrive on the data link's network thread, which hands them to the loop: the
replies read together are appended to one hand-off list and the loop is woken once for them
(``call_soon_threadsafe``: a write to its self-pipe) rather than once per reply; the loop resolves the
futures and each awaiting coroutine decodes its frame. Requests go the other way the same way: the
calls made in one pass of the loop are published together, with one write, when the pass ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Mapping
from types import TracebackType

import numpy as np

from edgefleet.mqtt import Inbound, MqttSettings
from edgefleet.sdk._core import ClientCore, Prepared, Result, closed_error, parse_reply, prepare
from edgefleet.sdk.errors import ClientClosed, NoReply
from edgefleet.sdk.stream import AsyncSubscription
from edgefleet.wire import validate_tenant_name


class AsyncInferenceClient(ClientCore["asyncio.Future[Inbound | None]"]):
    """Asyncio client for a fleet's tenants. Use as ``async with AsyncInferenceClient(settings) as c:``.

    Arguments as for InferenceClient. All calls must be made from the event loop that opened it.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        prefix: str = "ef",
        client_id: str | None = None,
        qos: int = 1,
        connect_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(
            settings, prefix=prefix, client_id=client_id, qos=qos, connect_timeout_s=connect_timeout_s
        )
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop that opened the client
        # replies waiting for the loop; a drain is scheduled whenever this goes from empty to not
        self._handoff: list[tuple[asyncio.Future[Inbound | None], Inbound]] = []
        self._handoff_lock = threading.Lock()
        # requests made in this pass of the loop, published together when it ends (``_flush``)
        self._outbox: list[tuple[Prepared, bytes, asyncio.Future[Inbound | None]]] = []

    # -- lifecycle ------------------------------------------------------------------------------
    async def open(self) -> AsyncInferenceClient:
        """Connect and subscribe to the reply topic; raise BrokerUnavailable after the connect timeout."""
        link = self._start_link()
        loop = asyncio.get_running_loop()
        self._loop = loop
        if not await loop.run_in_executor(None, link.wait_connected, self.connect_timeout_s):
            await self.aclose()
            raise self._unreachable(f"no connection within {self.connect_timeout_s:g} s")
        return self

    async def aclose(self) -> None:
        """Disconnect. Calls still waiting raise ClientClosed."""
        await asyncio.get_running_loop().run_in_executor(None, self._stop_link)

    async def __aenter__(self) -> AsyncInferenceClient:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- stream tenants ---------------------------------------------------------------------------
    async def subscribe(self, tenant: str, *, events: bool = True, max_pending: int = 1000) -> AsyncSubscription:
        """Results (and, with ``events``, events) of the stream tenant ``tenant`` as an async iterator
        (``async for update in await client.subscribe("cam-doorbell")``); the retained latest result comes
        first when there is one. ``aclose()`` it (or use ``async with``) to unsubscribe."""
        validate_tenant_name(tenant)
        loop = asyncio.get_running_loop()
        feed = self._stream_feed(tenant, events)
        return await loop.run_in_executor(None, lambda: AsyncSubscription(tenant, feed, loop, max_pending))

    # -- calls ----------------------------------------------------------------------------------
    async def infer(
        self,
        tenant: str,
        inputs: Mapping[str, np.ndarray] | bytes,
        *,
        timeout_s: float = 1.0,
        min_fidelity: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run ``tenant``'s model on ``inputs`` and return its outputs by name (see InferenceClient)."""
        result = await self.infer_with_meta(tenant, inputs, timeout_s=timeout_s, min_fidelity=min_fidelity)
        return result.outputs

    async def infer_with_meta(
        self,
        tenant: str,
        inputs: Mapping[str, np.ndarray] | bytes,
        *,
        timeout_s: float = 1.0,
        min_fidelity: float | None = None,
    ) -> Result:
        """Like ``infer``, and also say which device and variant answered and how long it took."""
        prepared = prepare(self.topics, tenant, inputs, timeout_s=timeout_s, min_fidelity=min_fidelity)
        link = self._require_link()
        loop = asyncio.get_running_loop()
        if not link.connected:
            wait_s = min(self.connect_timeout_s, prepared.timeout_s)
            if not await loop.run_in_executor(None, link.wait_connected, wait_s):
                raise self._unreachable("not connected")
        fut: asyncio.Future[Inbound | None] = loop.create_future()
        cid = self._register(fut)
        timer = loop.call_later(prepared.wait_s, self._expire, cid, fut, prepared)
        sent_at = time.monotonic()
        try:
            self._send_soon(prepared, cid, fut)
            reply = await fut
        finally:
            timer.cancel()
            self._forget(cid)  # a no-op unless the caller was cancelled or publishing failed
        if reply is None:
            raise closed_error()
        return parse_reply(reply, prepared.tenant, sent_at)

    def _send_soon(self, prepared: Prepared, cid: bytes, fut: asyncio.Future[Inbound | None]) -> None:
        """Queue the request; the calls made in one pass of the loop go out together, in one write,
        once the pass ends (a batch of replies resumes many callers at once, and each sends its next)."""
        self._outbox.append((prepared, cid, fut))
        if len(self._outbox) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """On the loop: publish the queued requests; a failure fails each caller that still waits."""
        items, self._outbox = self._outbox, []
        items = [item for item in items if not item[2].done()]  # a caller cancelled meanwhile sends nothing
        if not items:
            return
        try:
            self._publish_all([(p, cid) for p, cid, _ in items])
        except Exception as exc:
            for _, cid, fut in items:
                if self._forget(cid) and not fut.done():
                    fut.set_exception(exc if isinstance(exc, ClientClosed) else
                                      self._unreachable(f"the request could not be published: {exc}"))
            return

    def _expire(self, cid: bytes, fut: asyncio.Future[Inbound | None], prepared: Prepared) -> None:
        # If the reply was already taken off the table it is on its way through call_soon_threadsafe.
        if self._forget(cid) and not fut.done():
            fut.set_exception(NoReply(prepared.tenant, prepared.timeout_s))

    # -- hand-offs from paho's thread -------------------------------------------------------------
    def _deliver(self, pending: asyncio.Future[Inbound | None], msg: Inbound) -> None:
        loop = pending.get_loop()
        if loop is not self._loop:  # a call from another loop (not supported, but never lost)
            try:
                loop.call_soon_threadsafe(self._resolve, pending, msg)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                self._count_late()
            return
        with self._handoff_lock:
            self._handoff.append((pending, msg))
            if len(self._handoff) > 1:
                return  # the drain already scheduled takes this one too
        try:
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            with self._handoff_lock:
                dropped, self._handoff = len(self._handoff), []
            for _ in range(dropped):
                self._count_late()

    def _drain(self) -> None:
        """On the loop: resolve every reply handed over since the last drain."""
        with self._handoff_lock:
            items, self._handoff = self._handoff, []
        for fut, msg in items:
            self._resolve(fut, msg)

    def _abandon(self, pending: asyncio.Future[Inbound | None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            pending.get_loop().call_soon_threadsafe(self._resolve, pending, None)

    def _resolve(self, fut: asyncio.Future[Inbound | None], msg: Inbound | None) -> None:
        if fut.done():  # the caller was cancelled between the pop and now
            if msg is not None:
                self._count_late()
            return
        fut.set_result(msg)
