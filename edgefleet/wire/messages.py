"""Typed, versioned control messages: device status, telemetry, commands, acks, operator calls and the
coordinator's report on its performance model.

Every control message is a JSON object with a ``type`` tag and a schema version ``v``. Messages are
frozen msgspec Structs, so decoding validates types and ranges and says where a payload is wrong.
Units are in the field names (``_ms``, ``_bytes``, ``_rps``); times are Unix seconds (float).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import msgspec

from edgefleet.wire.names import NAME_RE
from edgefleet.wire.streams import StreamSpec

VARIANTS = ("fp32", "fp16", "int8")
# Integers are signed 64-bit on the wire: what SQLite stores and every JSON peer can hold (msgspec alone
# would accept a thousand digits, which no database column or size arithmetic downstream survives).
Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


def _name(kind: str, value: str) -> None:
    if not NAME_RE.fullmatch(value):  # not match(): '$' also matches before a trailing newline
        raise ValueError(f"invalid {kind} {value!r}: must match {NAME_RE.pattern}")


class _Msg(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    v: int = 1


class _Plain(msgspec.Struct, frozen=True, kw_only=True):
    pass


# -- tenants -------------------------------------------------------------------------------------
MAX_DEMAND_RPS = 1e6  # a declared rate or frame rate beyond this is a typo, not a tenant
MAX_IN_FLIGHT = 4096  # requests one closed loop may keep in flight
MAX_THINK_MS = 3_600_000.0  # an hour between a reply and the next request


class Poisson(_Plain, frozen=True, tag_field="kind", tag="poisson"):
    """Independent requests at ``rate_rps`` on average (an open loop: apps, events)."""

    rate_rps: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate_rps) and 0.0 < self.rate_rps <= MAX_DEMAND_RPS):
            raise ValueError(f"rate_rps must be in (0, {MAX_DEMAND_RPS:g}], got {self.rate_rps}")


class Periodic(_Plain, frozen=True, tag_field="kind", tag="periodic"):
    """A stream of one request every 1/``fps`` seconds (a camera), each sent up to a random offset from
    its slot: ``jitter_ms`` is the standard deviation of that offset (0: a strict clock)."""

    fps: float
    jitter_ms: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fps) and 0.0 < self.fps <= MAX_DEMAND_RPS):
            raise ValueError(f"fps must be in (0, {MAX_DEMAND_RPS:g}], got {self.fps}")
        if not (math.isfinite(self.jitter_ms) and 0.0 <= self.jitter_ms <= MAX_THINK_MS):
            raise ValueError(f"jitter_ms must be in [0, {MAX_THINK_MS:.0f}], got {self.jitter_ms}")


class Closed(_Plain, frozen=True, tag_field="kind", tag="closed"):
    """A closed loop: ``in_flight`` requests outstanding at all times, each sent ``think_ms`` after the
    reply to the one before it (0: back to back, a video pipeline)."""

    in_flight: Int
    think_ms: float = 0.0

    def __post_init__(self) -> None:
        if not (1 <= self.in_flight <= MAX_IN_FLIGHT):
            raise ValueError(f"in_flight must be in [1, {MAX_IN_FLIGHT}], got {self.in_flight}")
        if not (math.isfinite(self.think_ms) and 0.0 <= self.think_ms <= MAX_THINK_MS):
            raise ValueError(f"think_ms must be in [0, {MAX_THINK_MS:.0f}], got {self.think_ms}")


DemandSpec = Poisson | Periodic | Closed  # how a tenant's requests arrive, tagged by ``kind``


class TenantSpec(_Plain, frozen=True):
    """What an operator asks for: a named tenant running one zoo model under a latency objective."""

    name: str
    model: str
    slo_ms: float  # p95 latency objective, milliseconds, end to end at the device
    variant: str = "fp32"  # fp32 | fp16 | int8
    min_fidelity: float = 0.0  # lowest fidelity vs fp32 the tenant accepts, in [0, 1]
    max_batch: int = 8  # largest batch the device may form for this tenant
    # how its requests arrive, as the operator declares it (the performance model's prior; what the
    # devices measure takes over); None: not declared, taken as Poisson at the measured rate
    demand: Poisson | Periodic | Closed | None = None
    # a stream tenant: the device subscribes to these sources and publishes results and events
    # (edgefleet.wire.streams); None: a request tenant, called on its infer topic
    stream: StreamSpec | None = None

    def __post_init__(self) -> None:
        _name("tenant name", self.name)
        _name("model name", self.model)
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if not (0.0 < self.slo_ms <= 600_000.0):
            raise ValueError(f"slo_ms must be in (0, 600000], got {self.slo_ms}")
        if not (0.0 <= self.min_fidelity <= 1.0):
            raise ValueError(f"min_fidelity must be in [0, 1], got {self.min_fidelity}")
        if not (1 <= self.max_batch <= 1024):
            raise ValueError(f"max_batch must be in [1, 1024], got {self.max_batch}")


# -- device status (retained on {prefix}/v1/devices/{id}/status) -----------------------------------
class Capabilities(_Plain, frozen=True):
    device_kind: str  # e.g. "x86-cpu", "jetson-orin-nano", "coral-usb"
    runtimes: list[str]  # runtimes that import and run here: "onnxruntime", "litert", ...
    accelerators: list[str]  # "cpu", "cuda:0", "edgetpu:usb:0", ...
    cpu_count: Int
    memory_total_bytes: Int
    memory_budget_bytes: Int  # bytes the agent may spend on resident models
    max_payload_bytes: Int  # largest inference request accepted
    cached_models: list[str]  # "name:variant" available on local disk
    arch: str = ""
    python: str = ""


class Birth(_Msg, frozen=True, tag="birth"):
    device_id: str
    boot_id: str  # changes at every agent start
    capabilities: Capabilities
    tenants: list[str]  # tenants hosted right now
    agent_version: str
    ts: float

    def __post_init__(self) -> None:
        _name("device id", self.device_id)


class Death(_Msg, frozen=True, tag="death"):
    device_id: str
    reason: Literal["lost", "shutdown"]  # "lost" is the broker-sent last will
    boot_id: str = ""
    ts: float = 0.0

    def __post_init__(self) -> None:
        _name("device id", self.device_id)


Status = Birth | Death


# -- telemetry -----------------------------------------------------------------------------------
class TenantWindow(_Plain, frozen=True):
    """One tenant's counters and latency quantiles over one telemetry window."""

    tenant: str
    model: str
    variant: str
    slo_ms: float
    arrivals: Int = 0
    completions: Int = 0
    errors: Int = 0  # answered with an error other than shed/deadline
    shed: Int = 0  # refused at admission (overloaded)
    deadline_misses: Int = 0  # answered deadline_exceeded
    slo_misses: Int = 0  # completed later than slo_ms
    warm_starts: Int = 0
    cold_starts: Int = 0
    batches: Int = 0
    batch_size_mean: float = 0.0
    service_ms_mean: float = 0.0  # runtime time per batch
    service_scv: float = 0.0  # squared coefficient of variation of one-row batches' time (0: fewer than 2)
    queue_ms_mean: float = 0.0  # receipt to start of service
    latency_p50_ms: float = 0.0  # receipt to reply
    latency_p95_ms: float = 0.0
    latency_p99_ms: float = 0.0
    arrival_rps: float = 0.0
    arrival_scv: float = 0.0  # squared coefficient of variation of inter-arrival times (0: fewer than 2)
    service_ms_by_batch: dict[Int, float] = msgspec.field(default_factory=dict)  # rows -> mean ms per batch
    batches_by_size: dict[Int, Int] = msgspec.field(default_factory=dict)  # rows -> batches run
    colocated: list[str] = msgspec.field(default_factory=list)  # other tenants resident in the window
    resident: bool = True  # the model was resident at the end of the window
    # stream tenants (arrivals are frames in, completions results out): frames replaced by a newer one
    # of their source before they ran, and the frames' age at result time (capture or receipt -> result)
    frames_skipped: Int = 0
    frame_age_p50_ms: float = 0.0
    frame_age_p95_ms: float = 0.0


class DeviceWindow(_Plain, frozen=True):
    cpu_percent: float
    memory_used_bytes: Int  # the agent process's resident memory
    memory_budget_bytes: Int
    model_memory_bytes: Int  # what resident model sessions take
    gpu_percent: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None


class Telemetry(_Msg, frozen=True, tag="telemetry"):
    device_id: str
    boot_id: str
    seq: Int  # increases by one per window within a boot; (device_id, boot_id, seq) is unique
    window_start: float
    window_end: float
    device: DeviceWindow
    tenants: list[TenantWindow]

    def __post_init__(self) -> None:
        _name("device id", self.device_id)
        if self.seq < 0 or self.window_end < self.window_start:
            raise ValueError("seq must be >= 0 and window_end >= window_start")


# -- commands (coordinator -> agent) and acks -------------------------------------------------------
class Deploy(_Msg, frozen=True, tag="deploy"):
    command_id: str
    device_id: str
    tenant: TenantSpec
    issued_at: float = 0.0


class Undeploy(_Msg, frozen=True, tag="undeploy"):
    command_id: str
    device_id: str
    tenant: str
    issued_at: float = 0.0

    def __post_init__(self) -> None:
        _name("tenant name", self.tenant)


class Configure(_Msg, frozen=True, tag="configure"):
    """Change a tenant the device already hosts, in place: ``tenant`` is its new spec (same name and
    model; a new ``variant``, ``max_batch``, ``slo_ms`` or ``min_fidelity``). The inference topic stays
    subscribed throughout; a new variant is loaded and warmed before the old one is dropped when the
    memory budget holds both (dispatch pauses only for the batches already running on the old one);
    otherwise the old one is dropped first and requests that arrive meanwhile wait in the tenant's queue
    for the new one (answered ``deadline_exceeded`` only if the load outlasts their deadline). A device that does not host the tenant, or a
    spec naming another model, is answered ``failed`` with code ``unknown_tenant`` / ``bad_request``;
    on any failure the tenant keeps serving with its previous spec."""

    command_id: str
    device_id: str
    tenant: TenantSpec
    issued_at: float = 0.0


Command = Deploy | Undeploy | Configure


class TelemetryAck(_Msg, frozen=True, tag="telemetry.ack"):
    """The coordinator has stored these windows of ``boot_id`` (sent on the device's command topic after
    the database commit); the agent may now drop them from its outbox. Not a command: no Ack."""

    device_id: str
    boot_id: str
    seqs: list[Int]

    def __post_init__(self) -> None:
        _name("device id", self.device_id)
        if len(self.seqs) > 10_000 or any(s < 0 for s in self.seqs):
            raise ValueError("seqs must be at most 10000 non-negative window numbers")


ToDevice = Deploy | Undeploy | Configure | TelemetryAck  # everything on a device's command topic


MAX_PROFILE_BATCH = 1024  # the largest batch a tenant may form (TenantSpec.max_batch)
MAX_PROFILE_POINTS = 16  # batch sizes one profile may carry
MAX_PROFILE_MS = 3_600_000.0  # an hour: no warm-up run takes longer


class ServiceProfile(_Plain, frozen=True):
    """What a device measured when it warmed up a model variant: the runtime's time for one batch, by
    batch size (rows -> milliseconds; the median of a few runs after the first), alone on the device."""

    model: str
    variant: str
    ms_by_batch: dict[Int, float]  # rows -> ms per batch; always holds 1

    def __post_init__(self) -> None:
        _name("model name", self.model)
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if not (1 <= len(self.ms_by_batch) <= MAX_PROFILE_POINTS) or 1 not in self.ms_by_batch:
            raise ValueError(f"ms_by_batch must hold batch 1 and at most {MAX_PROFILE_POINTS} batch sizes")
        for rows, ms in self.ms_by_batch.items():
            if not (1 <= rows <= MAX_PROFILE_BATCH):
                raise ValueError(f"ms_by_batch: batch size must be in [1, {MAX_PROFILE_BATCH}], got {rows}")
            if not (math.isfinite(ms) and 0.0 < ms <= MAX_PROFILE_MS):
                raise ValueError(f"ms_by_batch: time must be a finite number in (0, {MAX_PROFILE_MS:.0f}], got {ms}")


class Ack(_Msg, frozen=True, tag="ack"):
    command_id: str
    device_id: str
    ok: bool
    result: Literal["applied", "duplicate", "failed", "rejected"]
    code: str = ""  # an ErrorCode value or a load failure class when not ok
    message: str = ""
    ts: float = 0.0
    # an applied Deploy or Configure: the service time the device measured warming up the variant it
    # now serves (None: nothing was loaded, or the warm-up could not measure it)
    profile: ServiceProfile | None = None


# -- operator calls (edgefleet deploy|undeploy|status -> coordinator) ----------------------------
class OpDeploy(_Msg, frozen=True, tag="op.deploy"):
    tenant: TenantSpec
    device_id: str | None = None  # pin to a device; otherwise placement chooses


class OpUndeploy(_Msg, frozen=True, tag="op.undeploy"):
    tenant: str


class OpStatus(_Msg, frozen=True, tag="op.status"):
    pass


class OpMigrate(_Msg, frozen=True, tag="op.migrate"):
    """Move a running tenant, make-before-break: the new replica is loaded, warm and subscribed before
    the old one leaves. ``device_id`` is the target; None lets placement choose among the others."""

    tenant: str
    device_id: str | None = None


class OpPlan(_Msg, frozen=True, tag="op.plan"):
    """Would ``tenant`` fit, where, and with what margin, at ``rate_rps`` requests per second? Nothing is
    deployed; the answer is the placement's decision on the fleet as the coordinator sees it now."""

    tenant: TenantSpec
    rate_rps: float = 1.0

    def __post_init__(self) -> None:
        if not (0.0 < self.rate_rps < 1e6):
            raise ValueError(f"rate_rps must be in (0, 1e6), got {self.rate_rps}")


Op = OpDeploy | OpUndeploy | OpStatus | OpMigrate | OpPlan


class DeviceView(_Plain, frozen=True):
    device_id: str
    online: bool
    device_kind: str
    runtimes: list[str]
    memory_budget_bytes: Int
    memory_used_bytes: Int  # model memory the device reported last
    tenants: list[str]
    last_seen: float


class TenantView(_Plain, frozen=True):
    name: str
    model: str
    variant: str
    slo_ms: float
    state: str  # pending | deploying | running | moving | unplaced | removing
    device_id: str | None
    arrival_rps: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    errors: Int = 0
    detail: str = ""
    max_batch: Int = 8  # the largest batch it runs with
    # The operator's spec, only when what runs differs from it (the rebalancer changed variant or
    # max_batch with a Configure); None: it runs as deployed. A redeploy of this spec is idempotent.
    requested: TenantSpec | None = None


class FleetStatus(_Plain, frozen=True):
    devices: list[DeviceView]
    tenants: list[TenantView]
    ts: float
    model: ModelReport | None = None  # the performance model's report as of ``ts`` (None: no model placement)


class OpReply(_Msg, frozen=True, tag="op.reply"):
    ok: bool
    code: str = ""
    message: str = ""
    device_id: str | None = None
    status: FleetStatus | None = None


# -- the coordinator's performance model (retained on {prefix}/v1/coordinator/model) ---------------
class TenantModelError(_Plain, frozen=True):
    """How well the coordinator's performance model predicted one tenant's p95, as of the last window of
    the tenant it scored. Ratios are fractions of the observed p95 (0.1 is 10 %)."""

    tenant: str
    device_id: str  # the device that served the window
    device_kind: str  # the model's kind the prediction used: x86-cpu, arm-cpu, jetson-gpu, coral-tpu
    model: str
    variant: str
    predicted_p95_ms: float  # the model's p95 for that device, co-location and rate
    observed_p95_ms: float  # the p95 the agent measured in the window
    arrival_rps: float  # the arrival rate the prediction was made for (the window's)
    ape_ratio: float  # EWMA of |predicted - observed| / observed over the tenant's windows
    bias_ratio: float  # EWMA of (predicted - observed) / observed: < 0 optimistic, > 0 pessimistic
    windows: Int  # windows scored

    def __post_init__(self) -> None:
        _name("tenant name", self.tenant)
        _name("device id", self.device_id)
        _name("model name", self.model)
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        figures = (self.predicted_p95_ms, self.observed_p95_ms, self.arrival_rps, self.ape_ratio, self.bias_ratio)
        if not all(math.isfinite(f) for f in figures):
            raise ValueError("predicted_p95_ms, observed_p95_ms, arrival_rps, ape_ratio, bias_ratio must be finite")
        if self.predicted_p95_ms < 0 or self.observed_p95_ms <= 0 or self.arrival_rps < 0 or self.ape_ratio < 0:
            raise ValueError("p95s, arrival_rps and ape_ratio must be >= 0 (observed_p95_ms > 0)")
        if self.windows < 1:
            raise ValueError(f"windows must be >= 1, got {self.windows}")


class ModelReport(_Msg, frozen=True, tag="model.report"):
    """The performance model's own prediction error, per tenant, published by the coordinator."""

    tenants: list[TenantModelError]  # one entry per tenant scored, by tenant name
    mean_ape_ratio: float | None = None  # mean of the tenants' ape_ratio; None when no tenant was scored
    ts: float = 0.0

    def __post_init__(self) -> None:
        names = [t.tenant for t in self.tenants]
        if len(set(names)) != len(names):
            raise ValueError("a tenant appears twice in the model report")
        if self.mean_ape_ratio is not None and not (math.isfinite(self.mean_ape_ratio) and self.mean_ape_ratio >= 0):
            raise ValueError(f"mean_ape_ratio must be a finite number >= 0, got {self.mean_ape_ratio}")
