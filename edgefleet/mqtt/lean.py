"""A lean MQTT 5 client for the data path: a socket, the ``mqtt5`` codec, one reader thread.

Why not paho for requests and replies: measured on the request path, paho's pure-Python packet code
(MQTT 5 properties built and parsed attribute by attribute, a socket-pair wake-up of its network thread
for every publish from another thread, and large payloads assembled by repeated ``bytes +=``) costs
several times what the rest of a request costs. Here the ``mqtt5`` codec (Rust, sans-I/O) parses and
validates every packet and builds every packet we send; this module owns only the socket loop:
connect (TCP_NODELAY, TLS, username/password), keepalive pings, QoS 0 and QoS 1 in both directions
(PUBACKs for what we receive; in-flight publishes bounded by the broker's Receive Maximum and ours),
subscriptions (``$share`` included) re-made on every reconnect, reconnect with back-off.

Threads: the ``ef-lean-*`` reader thread reads, parses and calls the handlers (which must return
quickly: they hand work on). ``publish`` may be called from any thread: a packet is written straight
to the socket under a lock, with no hand-off to the reader. On TLS sockets reads take the same lock
(OpenSSL connections are not safe for concurrent reads and writes), after ``select`` says data waits.

It offers the subset of ``MqttLink`` the data path uses (``subscribe``, ``unsubscribe``, ``publish``,
``start``, ``stop``, ``wait_connected``) with the same ``Inbound`` messages; paho stays for the control
plane (births, wills, commands, telemetry), where its maturity matters more than its cost.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import mqtt5

from edgefleet.mqtt.link import Handler, Inbound, MqttSettings, Outgoing, _strip_share

log = logging.getLogger(__name__)

LARGE_PACKET = 1 << 16  # packets at least this large are read straight into their own buffer
# bytes asked of the socket per read: no more than LARGE_PACKET, so that a large packet always spans reads
# and the rest of it goes straight into its own buffer (whose payload can then be handed over as a view)
READ_CHUNK = LARGE_PACKET
BACKLOG_MAX = 10_000  # QoS 1 publishes the reader thread may park while the in-flight window is full
INLINE_PAYLOAD_BYTES = 4096  # payloads below this go into their packet's buffer (a copy is cheaper than a gathered write)
_QOS = (mqtt5.QoS.AT_MOST_ONCE, mqtt5.QoS.AT_LEAST_ONCE, mqtt5.QoS.AT_LEAST_ONCE)
_PINGREQ = mqtt5.PingReqPacket().write()


def varint(value: int) -> bytes:
    """MQTT's variable byte integer."""
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def with_payload_length(head: bytes, payload_bytes: int) -> bytes:
    """A PUBLISH written with an empty payload, its remaining length grown by ``payload_bytes``: the
    payload can then follow on the socket without being copied into the packet."""
    found = remaining_length(head, 0)
    assert found is not None
    size, remaining = found
    return head[:1] + varint(remaining + payload_bytes) + head[size:]


def _nbytes(part: bytes | bytearray | memoryview) -> int:
    return part.nbytes if isinstance(part, memoryview) else len(part)


def _publish_parts(
    topic: str,
    payload: bytes | bytearray | memoryview,
    *,
    qos: int,
    pid: int | None,
    retain: bool = False,
    response_topic: str | None = None,
    correlation_data: bytes | None = None,
    content_type: str | None = None,
    expiry_s: int | None = None,
    user_properties: Sequence[tuple[str, str]] | None = None,
) -> list[Any]:
    """One PUBLISH as the buffers to write: a small payload inside the packet the codec writes, a larger
    one beside the codec's headers, as it is (not copied)."""
    size = _nbytes(payload)
    inline = size < INLINE_PAYLOAD_BYTES
    head = mqtt5.PublishPacket(
        topic,
        bytes(payload) if inline else b"",
        qos=_QOS[qos],
        retain=retain,
        packet_id=pid,
        response_topic=response_topic,
        correlation_data=correlation_data,
        content_type=content_type,
        message_expiry_interval=int(expiry_s) if expiry_s else None,
        user_properties=list(user_properties) if user_properties else None,
    ).write()
    return [head] if inline else [with_payload_length(head, size), payload]


def _send_all(sock: socket.socket, parts: list[Any]) -> None:
    """``sendall`` for several buffers (one gathered write per system call)."""
    views = [memoryview(p).cast("B") for p in parts]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= views[0].nbytes:
            sent -= views[0].nbytes
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]


def split_large_publish(buf: bytearray) -> tuple[Any, memoryview] | None:
    """A whole PUBLISH in ``buf`` parsed without copying its payload: the codec parses and validates the
    fixed and variable headers (topic, packet id, properties), written as a PUBLISH with an empty payload,
    and the payload is returned as a view of ``buf``. None when ``buf`` holds no PUBLISH, or one whose
    payload the codec must check itself (a UTF-8 payload format indicator): parse it whole then. A
    malformed header raises, as the codec does for a whole packet."""
    first = buf[0]
    if first >> 4 != 3:
        return None
    found = remaining_length(buf, 0)
    if found is None:
        raise ValueError("truncated PUBLISH")
    size, remaining = found
    if size + remaining != len(buf):
        raise ValueError("PUBLISH length differs from its buffer")
    pos = size + 2 + int.from_bytes(buf[size : size + 2], "big")  # the topic
    if (first >> 1) & 3:
        pos += 2  # the packet id
    props = remaining_length(buf, pos - 1)  # a variable byte integer, read as a remaining length is
    if props is None:
        raise ValueError("truncated PUBLISH properties")
    pos += props[0] - 1 + props[1]
    if pos > len(buf):
        raise ValueError("PUBLISH properties run past the packet")
    with memoryview(buf) as view:
        head = bytes(view[:1]) + varint(pos - size) + bytes(view[size:pos])
    packet, _ = mqtt5.read(memoryview(head))
    if not isinstance(packet, mqtt5.PublishPacket) or packet.payload_format_indicator:
        return None
    return packet, memoryview(buf)[pos:]


class LinkDown(ConnectionError):
    """The connection is not up (or went down while a publish waited for room in flight)."""


def topic_matches(filter_: str, topic: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest; ``$`` topics only by literal)."""
    if filter_ == topic:
        return True
    if topic.startswith("$") and not filter_.startswith("$"):
        return False
    fs, ts = filter_.split("/"), topic.split("/")
    for i, f in enumerate(fs):
        if f == "#":
            return True
        if i >= len(ts) or (f != "+" and f != ts[i]):
            return False
    return len(fs) == len(ts)


def remaining_length(buf: memoryview | bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """(header bytes, remaining length) of the packet at ``pos``, or None if its fixed header is not
    complete yet. Raises ValueError for a length of more than four bytes (malformed)."""
    mult, value = 1, 0
    for i in range(1, 5):
        if pos + i >= len(buf):
            return None
        byte = buf[pos + i]
        value += (byte & 0x7F) * mult
        if not byte & 0x80:
            return i + 1, value
        mult *= 128
    raise ValueError("malformed remaining length")


class LeanLink:
    """One MQTT 5 connection for requests and replies. ``receive_max`` (0: the protocol's 65535) is how
    many unacknowledged QoS 1 messages the broker may send us at once."""

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        *,
        receive_max: int = 0,
        on_connect: Callable[[LeanLink], None] | None = None,
        payload_views: bool = False,
    ) -> None:
        self.settings = settings
        # a large PUBLISH's payload handed to handlers as a memoryview of the buffer it was read into
        # (no copy); off by default: handlers must then accept any bytes-like payload
        self.payload_views = payload_views
        self.client_id = client_id
        self.receive_max = receive_max
        self._on_connect_hook = on_connect
        self._routes: dict[str, tuple[str, Handler, int]] = {}  # filter -> (match filter, handler, qos)
        self._by_topic: dict[str, list[Handler]] = {}  # topic -> handlers (cache, cleared on change)
        self._lock = threading.Lock()  # routes, packet ids, in flight
        # the socket's writes (and, with TLS, its reads); re-entrant because the reader thread, holding it
        # for a TLS read, dispatches what it read, and that writes PUBACKs
        self._wlock = threading.RLock()
        self._room = threading.Condition(self._lock)  # in-flight publishes
        self._sock: socket.socket | None = None
        self._tls = False
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_id = 0
        self._inflight: set[int] = set()  # our QoS 1 publishes awaiting PUBACK
        # QoS 1 publishes made on the reader thread while the window was full: it cannot wait for room,
        # since only it reads the PUBACKs that make room; they are sent as PUBACKs free the window
        self._backlog: deque[tuple[str, bytes | bytearray | memoryview, dict[str, Any]]] = deque()
        self._max_inflight = max(1, settings.max_inflight)
        self._waiters: dict[int, threading.Event] = {}  # SUBACK / UNSUBACK by packet id
        self._last_out = 0.0
        self._ping_sent = 0.0  # monotonic time of the unanswered PINGREQ (0: none)
        self._buf = bytearray()  # received bytes not parsed yet
        self._big: bytearray | None = None  # a large packet being read whole
        self._deferred: list[Any] | None = None  # the reader thread's writes while it handles one read
        self._big_have = 0
        self.handler_errors = 0
        self.connects = 0
        self.disconnects = 0
        self.dropped_publishes = 0  # QoS 1 publishes lost with a connection (their PUBACK never came)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background; reconnects until ``stop``."""
        self._thread = threading.Thread(target=self._run, name=f"ef-lean-{self.client_id}", daemon=True)
        self._thread.start()

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until connected and every subscription made so far is acknowledged by the broker."""
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def stop(self, *, final: tuple[str, bytes, bool] | None = None, timeout: float = 2.0) -> None:
        """Disconnect cleanly. ``final`` (topic, payload, retain) is published first, at QoS 0."""
        self._stopping.set()
        sock = self._sock
        if sock is not None and self._connected.is_set():
            with contextlib.suppress(Exception):
                if final is not None:
                    self._write_parts([mqtt5.PublishPacket(final[0], final[1], retain=final[2]).write()])
                self._write_parts([mqtt5.DisconnectPacket().write()])
        self._close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._connected.clear()

    # -- subscriptions ----------------------------------------------------------------------------
    def subscribe(self, filter_: str, handler: Handler, qos: int = 1, *, wait_s: float = 0.0) -> bool:
        """Route ``filter_`` to ``handler``; kept across reconnects. With ``wait_s`` > 0, wait that long
        for the broker's SUBACK and return whether it came (False also when offline)."""
        with self._lock:
            self._routes[filter_] = (_strip_share(filter_), handler, qos)
            self._by_topic.clear()
        if not self._connected.is_set():
            return False
        return self._request_ack(lambda pid: mqtt5.SubscribePacket(pid, [_filter(filter_, qos)]).write(), wait_s)

    def unsubscribe(self, filter_: str, *, wait_s: float = 0.0, linger_s: float = 0.0) -> bool:
        """Stop routing ``filter_``. With ``wait_s`` > 0, wait that long for the UNSUBACK and keep the
        route ``linger_s`` longer (deliveries the broker had started still reach the handler)."""
        acked = False
        if self._connected.is_set():
            acked = self._request_ack(lambda pid: mqtt5.UnsubscribePacket(pid, [filter_]).write(), wait_s)
            if acked and linger_s > 0:
                time.sleep(linger_s)
        with self._lock:
            self._routes.pop(filter_, None)
            self._by_topic.clear()
        return acked

    def _request_ack(self, packet: Callable[[int], bytes], wait_s: float) -> bool:
        event = threading.Event()
        with self._lock:
            pid = self._packet_id()
            self._waiters[pid] = event
        try:
            self._write_parts([packet(pid)])
        except OSError:
            with self._lock:
                self._waiters.pop(pid, None)
            return False
        if wait_s <= 0:
            return True
        ok = event.wait(wait_s)
        with self._lock:
            self._waiters.pop(pid, None)
        return ok

    def _packet_id(self) -> int:
        """A packet id not in use (under ``_lock``)."""
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._inflight and self._next_id not in self._waiters:
                return self._next_id
        raise LinkDown("no free packet id")

    # -- publishing --------------------------------------------------------------------------------
    def publish(
        self,
        topic: str,
        payload: bytes | bytearray | memoryview,
        *,
        qos: int = 0,
        retain: bool = False,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        content_type: str | None = None,
        expiry_s: int | None = None,
        user_properties: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        """Write one PUBLISH to the socket now (QoS 1: waits while the in-flight window is full).
        Raises LinkDown when not connected."""
        if not self._connected.is_set():
            raise LinkDown(f"{self.client_id} is not connected")
        props: dict[str, Any] = {
            "retain": retain, "response_topic": response_topic, "correlation_data": correlation_data,
            "content_type": content_type, "expiry_s": expiry_s, "user_properties": user_properties,
        }
        pid = None
        if qos and threading.current_thread() is self._thread:
            with self._room:  # waiting here would wait for ourselves: park it until a PUBACK makes room
                if len(self._inflight) >= self._max_inflight or self._backlog:
                    if len(self._backlog) >= BACKLOG_MAX:
                        self.dropped_publishes += 1
                        raise LinkDown(f"{self.client_id}: {BACKLOG_MAX} publishes wait for room in flight")
                    self._backlog.append((topic, bytes(payload), props))  # the caller may reuse its buffer
                    return
                pid = self._packet_id()
                self._inflight.add(pid)
        elif qos:
            pid = self._reserve()
        self._send_publish(topic, payload, qos, pid, props)

    def _send_publish(
        self, topic: str, payload: bytes | bytearray | memoryview, qos: int, pid: int | None, props: dict[str, Any]
    ) -> None:
        self._write_parts(_publish_parts(topic, payload, qos=qos, pid=pid, **props))

    def _send_backlog(self) -> None:
        """Send parked QoS 1 publishes while the in-flight window has room (reader thread)."""
        while True:
            with self._room:
                if not self._backlog or len(self._inflight) >= self._max_inflight:
                    if not self._backlog:
                        self._room.notify_all()  # publishers on other threads waited behind the backlog
                    return
                topic, payload, props = self._backlog.popleft()
                pid = self._packet_id()
                self._inflight.add(pid)
            self._send_publish(topic, payload, 1, pid, props)

    def publish_many(self, messages: Sequence[Outgoing]) -> None:
        """Write several PUBLISHes with one system call (a batch's replies): each as ``publish`` would.
        From the reader thread (which must never wait for PUBACKs it alone reads) they go one by one."""
        if threading.current_thread() is self._thread:
            for m in messages:
                self.publish(m.topic, m.payload, qos=m.qos, correlation_data=m.correlation_data,
                             content_type=m.content_type, user_properties=m.user_properties,
                             response_topic=m.response_topic, expiry_s=m.expiry_s)
            return
        if not self._connected.is_set():
            raise LinkDown(f"{self.client_id} is not connected")
        parts: list[Any] = []
        for m in messages:
            pid = None
            if m.qos:
                pid = self._try_reserve()
                if pid is None:  # the window is full: what is built goes out first (its PUBACKs make room)
                    self._write_parts(parts)
                    parts = []
                    pid = self._reserve()
            parts += _publish_parts(m.topic, m.payload, qos=m.qos, pid=pid, response_topic=m.response_topic,
                                   correlation_data=m.correlation_data, content_type=m.content_type,
                                   expiry_s=m.expiry_s, user_properties=m.user_properties)
        self._write_parts(parts)

    def _write_parts(self, parts: list[Any]) -> None:
        """Write buffers as one stream of bytes, with one system call where the socket takes them all (the
        one place the link writes). On the reader thread, while it handles one read, what is small joins
        that read's one write (``_dispatch``)."""
        if not parts:
            return
        deferred = self._deferred
        if deferred is not None and threading.current_thread() is self._thread:
            if sum(_nbytes(p) for p in parts) < LARGE_PACKET:
                deferred.append(b"".join(parts))  # a copy: the caller may reuse its buffer
                return
            self._deferred = None  # a large one goes now, after what was deferred before it
            try:
                self._write_parts(deferred)
            finally:
                deferred.clear()
                self._deferred = deferred
        sock = self._sock
        if sock is None:
            raise LinkDown(f"{self.client_id} is not connected")
        with self._wlock:
            try:
                if len(parts) == 1:
                    sock.sendall(parts[0])
                elif self._tls or sum(_nbytes(p) for p in parts) < INLINE_PAYLOAD_BYTES * 16:
                    sock.sendall(b"".join(parts))  # small: one copy is cheaper than a gathered write
                else:
                    _send_all(sock, parts)
            except OSError as exc:  # the reader closed the socket under us (a reconnect): the link is down
                raise LinkDown(f"{self.client_id}: {exc}") from exc
            self._last_out = time.monotonic()

    def _try_reserve(self) -> int | None:
        """A packet id for a QoS 1 publish when the in-flight window has room now, else None."""
        with self._room:
            if len(self._inflight) >= self._max_inflight or self._backlog:
                return None
            pid = self._packet_id()
            self._inflight.add(pid)
            return pid

    def _reserve(self) -> int:
        """A packet id for a QoS 1 publish, waiting while the in-flight window is full or publishes are
        parked before it (not on the reader thread: see ``publish``)."""
        with self._room:
            end = time.monotonic() + self.settings.keepalive_s
            while len(self._inflight) >= self._max_inflight or self._backlog:
                left = end - time.monotonic()
                if left <= 0 or not self._connected.is_set():
                    raise LinkDown(f"{self.client_id}: no PUBACK came for {len(self._inflight)} publishes")
                self._room.wait(min(left, 0.5))
            pid = self._packet_id()
            self._inflight.add(pid)
            return pid

    # -- the reader thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        delay = self.settings.reconnect_min_s
        while not self._stopping.is_set():
            try:
                self._connect()
                delay = self.settings.reconnect_min_s
                self._read_loop()
            except Exception as exc:  # any failure ends this connection; the next one starts clean
                if not self._stopping.is_set():
                    log.info("%s: connection ended (%s); reconnecting", self.client_id, exc)
            finally:
                was_up = self._connected.is_set()
                self._close()
                if was_up:
                    self.disconnects += 1
            if self._stopping.wait(delay):
                return
            delay = min(self.settings.reconnect_max_s, delay * 2)

    def _connect(self) -> None:
        s = self.settings
        raw = socket.create_connection((s.host, s.port), timeout=max(2.0, s.keepalive_s))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(OSError, struct.error):  # bounds a whole-packet read (see _receive)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", max(1, int(s.keepalive_s)), 0))
        sock: socket.socket = raw
        if s.tls_ca is not None:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=s.tls_ca)
            if s.tls_cert is not None:
                ctx.load_cert_chain(s.tls_cert, s.tls_key)
            sock = ctx.wrap_socket(raw, server_hostname=s.host)
        self._tls = s.tls_ca is not None
        connect = mqtt5.ConnectPacket(
            self.client_id,
            username=s.username,
            password=s.password.encode() if s.password is not None else None,
            clean_start=True,
            keep_alive=s.keepalive_s,
            receive_max=self.receive_max or 65535,
        )
        sock.sendall(connect.write())
        self._buf = bytearray()
        self._big = None
        ack = self._read_packet(sock)
        if not isinstance(ack, mqtt5.ConnAckPacket):
            raise ConnectionError(f"expected CONNACK, got {type(ack).__name__}")
        if ack.reason_code != mqtt5.ConnAckReasonCode.SUCCESS:
            raise ConnectionError(f"broker refused the connection: {ack.reason_code.name}")
        sock.settimeout(None)
        with self._lock:
            self._max_inflight = max(1, min(self.settings.max_inflight, ack.receive_max))
            self._inflight.clear()
            self._waiters.clear()
            routes = [(f, q) for f, (_, _, q) in self._routes.items()]
        self._sock = sock
        self._last_out = time.monotonic()
        self._ping_sent = 0.0
        if routes:  # re-made on every (re)connect, acknowledged before we say we are connected
            pid = 0
            with self._lock:
                pid = self._packet_id()
            sock.sendall(mqtt5.SubscribePacket(pid, [_filter(f, q) for f, q in routes]).write())
            sock.settimeout(max(2.0, s.keepalive_s))
            while True:
                packet = self._read_packet(sock)
                if isinstance(packet, mqtt5.SubAckPacket) and packet.packet_id == pid:
                    failed = [str(rc) for rc in packet.reason_codes if int(rc) >= 0x80]
                    if failed:
                        log.warning("%s: broker refused a subscription: %s", self.client_id, ", ".join(failed))
                    break
                self._dispatch([packet])
            sock.settimeout(None)
        self.connects += 1
        if self.connects == 1:  # once each, at INFO: what went right
            log.info("%s: connected to the MQTT broker at %s:%d", self.client_id, s.host, s.port)
        else:
            log.info("%s: reconnected to the MQTT broker at %s:%d (connection %d)", self.client_id, s.host, s.port,
                     self.connects)
        if routes:
            log.info("%s: subscribed to %s", self.client_id, ", ".join(f for f, _ in routes))
        self._connected.set()
        if self._on_connect_hook is not None:
            try:
                self._on_connect_hook(self)
            except Exception:
                self.handler_errors += 1
                log.exception("%s: on_connect hook failed", self.client_id)

    def _read_packet(self, sock: socket.socket) -> Any:
        """Block for one whole packet (used while connecting)."""
        while True:
            packets = self._parse()
            if packets:
                first, rest = packets[0], packets[1:]
                if rest:
                    self._dispatch(rest)
                return first
            data = sock.recv(READ_CHUNK)
            if not data:
                raise ConnectionError("the broker closed the connection")
            self._buf += data

    def _parse(self, limit: int = 1 << 30) -> list[Any]:
        """Every whole packet at the front of the buffer (and remove them)."""
        buf = self._buf
        out: list[Any] = []
        pos = 0
        with memoryview(buf) as view:
            while len(out) < limit:
                head = remaining_length(view, pos)
                if head is None:
                    break
                total = head[0] + head[1]
                if len(buf) - pos < total:
                    break
                packet, n = mqtt5.read(view[pos : pos + total])
                out.append(packet)
                pos += n
        if pos:
            del buf[:pos]
        return out

    def _read_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        keepalive = float(self.settings.keepalive_s)
        tick = min(1.0, keepalive / 4)
        while not self._stopping.is_set():
            pending = self._tls and isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            if not pending:
                ready, _, _ = select.select([sock], [], [], tick)
                if not ready:
                    self._keepalive(keepalive)
                    continue
            if self._tls:
                with self._wlock:
                    data = self._receive(sock)
            else:
                data = self._receive(sock)
            if data is None:
                continue
            self._dispatch(self._parse())
            self._keepalive(keepalive)

    def _receive(self, sock: socket.socket) -> bool | None:
        """Read what waits into the buffer. A large packet is read straight into a buffer of its own size
        (one copy from the kernel), then parsed alone. None when nothing could be read yet."""
        big = self._big
        if big is None:
            buf = self._buf
            head = remaining_length(buf, 0) if buf else None
            if head is not None and head[0] + head[1] >= LARGE_PACKET and len(buf) < head[0] + head[1]:
                big = self._big = bytearray(head[0] + head[1])
                big[: len(buf)] = buf
                self._big_have = len(buf)
                buf.clear()
        if big is not None:
            with memoryview(big) as view:
                try:
                    # the rest of the packet in one call where the socket allows it (plain TCP: the
                    # kernel gathers the segments; SO_RCVTIMEO bounds the wait), not a select and a
                    # read per segment
                    rest = view[self._big_have :]
                    if self._tls:  # TLS: no flags; what OpenSSL has decrypted so far
                        got = sock.recv_into(rest, len(rest))
                    else:
                        got = sock.recv_into(rest, len(rest), socket.MSG_WAITALL)
                except (ssl.SSLWantReadError, BlockingIOError, TimeoutError):
                    return None
            if got == 0:
                raise ConnectionError("the broker closed the connection")
            self._big_have += got
            if self._big_have == len(big):
                self._big = None
                split = split_large_publish(big) if self.payload_views else None
                if split is not None:
                    self._dispatch([split[0]], split[1])
                else:
                    with memoryview(big) as view:
                        packet, _ = mqtt5.read(view)
                    self._dispatch([packet])
            return True
        try:
            data = sock.recv(READ_CHUNK)
        except ssl.SSLWantReadError:
            return None
        if not data:
            raise ConnectionError("the broker closed the connection")
        self._buf += data
        return True

    def _keepalive(self, keepalive: float) -> None:
        now = time.monotonic()
        if self._ping_sent and now - self._ping_sent > keepalive:
            raise ConnectionError(f"no PINGRESP within {keepalive:g} s")
        if not self._ping_sent and now - self._last_out >= keepalive / 2:
            self._ping_sent = now
            self._write_parts([_PINGREQ])

    def _dispatch(self, packets: list[Any], payload: memoryview | None = None) -> None:
        """Act on parsed packets. ``payload``: the payload of a lone PUBLISH parsed without it. What the
        handlers publish meanwhile on this thread (an error reply, an echo) and the PUBACKs leave together,
        in one write, once the packets of this read are handled."""
        acks: list[bytes] = []
        deferred: list[Any] = []
        self._deferred = deferred
        try:
            self._act(packets, payload, acks)
        finally:
            self._deferred = None
        if acks or deferred:
            self._write_parts(acks + deferred)

    def _act(self, packets: list[Any], payload: memoryview | None, acks: list[bytes]) -> None:
        for packet in packets:
            if isinstance(packet, mqtt5.PublishPacket):
                self._deliver(packet, payload)
                if packet.qos == mqtt5.QoS.AT_LEAST_ONCE and packet.packet_id is not None:
                    acks.append(mqtt5.PubAckPacket(packet.packet_id).write())
            elif isinstance(packet, mqtt5.PubAckPacket):
                with self._room:
                    self._inflight.discard(packet.packet_id)
                    if not self._backlog:
                        self._room.notify()
                if self._backlog:
                    self._send_backlog()
            elif isinstance(packet, mqtt5.PingRespPacket):
                self._ping_sent = 0.0
            elif isinstance(packet, (mqtt5.SubAckPacket, mqtt5.UnsubAckPacket)):
                if isinstance(packet, mqtt5.SubAckPacket):
                    failed = [str(rc) for rc in packet.reason_codes if int(rc) >= 0x80]
                    if failed:
                        log.warning("%s: broker refused a subscription: %s", self.client_id, ", ".join(failed))
                with self._lock:
                    waiter = self._waiters.get(packet.packet_id)
                if waiter is not None:
                    waiter.set()
            elif isinstance(packet, mqtt5.DisconnectPacket):
                raise ConnectionError(f"the broker disconnected us: {packet.reason_code.name}")
            elif isinstance(packet, mqtt5.PubRelPacket):  # QoS 2 is never subscribed; complete it anyway
                acks.append(mqtt5.PubCompPacket(packet.packet_id).write())

    def _deliver(self, packet: mqtt5.PublishPacket, payload: memoryview | None = None) -> None:
        topic = packet.topic
        handlers = self._by_topic.get(topic)
        if handlers is None:
            with self._lock:
                handlers = [h for match, h, _ in self._routes.values() if topic_matches(match, topic)]
                if len(self._by_topic) > 4096:
                    self._by_topic.clear()
                self._by_topic[topic] = handlers
        if not handlers:
            return
        inbound = Inbound(
            topic,
            packet.payload if payload is None else payload,  # type: ignore[arg-type]  # bytes-like by opt-in
            int(packet.qos),
            packet.retain,
            packet.response_topic,
            packet.correlation_data,
            packet.content_type,
            tuple(packet.user_properties),
            time.monotonic(),
        )
        for handler in handlers:
            try:
                handler(inbound)
            except Exception:
                self.handler_errors += 1
                log.exception("handler failed on topic %r", topic)

    def _close(self) -> None:
        self._connected.clear()
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        with self._room:
            self.dropped_publishes += len(self._inflight) + len(self._backlog)
            self._inflight.clear()
            self._backlog.clear()
            self._room.notify_all()
            self._waiters.clear()  # their callers time out: the ack cannot come


def _filter(filter_: str, qos: int) -> mqtt5.TopicFilter:
    # retain_as_published off (the MQTT 5 default, and paho's): a live message arrives with retain unset,
    # so a subscriber can tell the retained state it gets on subscribing from what is published now
    return mqtt5.TopicFilter(filter_, max_qos=_QOS[min(qos, 1)], retain_as_published=False)
