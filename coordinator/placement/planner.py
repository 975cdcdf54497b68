"""Per-device state for latency-aware placement, kept incrementally so that a fleet can be planned fast.

A ``Planner`` is built once from a fleet snapshot: per device, its free memory and, per processor, the
loads of the tenants it hosts with their current utilisation. Checking a device for a new tenant is one
sharing-model evaluation of that processor's loads plus the newcomer; committing appends the load and
updates memory and utilisation, never rebuilding anything else. A device fits when it is online, runs
the model's runtime, the book has a profile for the model on its kind, its memory holds the variant,
the processor's predicted utilisation stays at or under ``headroom`` (unless closed loops share it: they
fill what is free by design, so only the SLOs judge them), and every tenant on the processor,
the newcomer included, keeps its predicted p95 at or under its SLO. The score is the smallest relative
slack (SLO - p95) / SLO left on the processor: the higher, the safer.

Two searches. ``exhaustive`` checks every device and takes the best score (the reference; the reason
for each device that does not fit is reported). Otherwise devices are pooled by (kind, runtimes,
processor), each pool a heap ordered by utilisation, and in each pool the least used device that fits
speaks for it, trying at most ``probe`` devices; so a decision costs O(pools · probe · tenants per
device) plus heap operations, whatever the fleet size. Kinds are visited in decreasing order of the
newcomer's slack with a processor to itself, an upper bound of any device's score there, and the
search stops once the best score found reaches the next bound. A pool is passed over at once when even
its least used processor would go past the headroom with the newcomer's own demand. The reasons of a
NoFit are then given per pool.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping

from edgefleet.coordinator.fleet import DeviceSnapshot, FleetSnapshot, ModelFacts, mib
from edgefleet.coordinator.perf import Load, Outlook, PerfBook, Processor, predict
from edgefleet.coordinator.placement.seam import Decision, NoFit, Placed
from edgefleet.coordinator.scheduling.framework import Demand, Model
from edgefleet.coordinator.scheduling.plugins import fit, load_of, reported_kind
from edgefleet.wire import TenantSpec

PoolKey = tuple[str, frozenset[str], str]  # (device kind, runtimes, processor)
Chosen = tuple[str, str, Load, float]  # (device, processor, load, processor utilisation with it)


class _Proc:
    __slots__ = ("loads", "proc", "util", "version")

    def __init__(self, proc: Processor) -> None:
        self.proc = proc
        self.loads: list[Load] = []
        self.util = 0.0
        self.version = 0


class _Dev:
    __slots__ = ("blocked", "free", "procs", "snap", "tenants")

    def __init__(self, snap: DeviceSnapshot, procs: dict[str, _Proc]) -> None:
        self.snap = snap
        self.free = snap.free_bytes
        self.procs = procs
        self.tenants = len(snap.tenants)
        self.blocked = ""  # why nothing more can be predicted here (a resident the book cannot model)


def _own_demand(proc: Processor, load: Load) -> float:
    """The least utilisation ``load`` adds to ``proc`` (its own work, no slowdown, no reloads); a closed
    loop takes what is free, so it adds nothing it must have."""
    if load.closed:
        return 0.0
    work = load.rate_rps * load.service_ms / 1000.0
    return work / proc.servers if proc.kind == "cpu" else work


class Planner:
    def __init__(
        self,
        fleet: FleetSnapshot,
        book: PerfBook,
        *,
        demand: Mapping[str, Demand],
        default_rps: float,
        headroom: float,
        probe: int | None,
    ) -> None:
        self.book, self.demand, self.default_rps = book, demand, default_rps
        self.headroom, self.probe = headroom, probe
        self._model = Model(book=book, demand=demand, headroom=headroom, default_rps=default_rps)  # for load_of
        self.devices: dict[str, _Dev] = {}
        self.heaps: dict[PoolKey, list[tuple[float, int, str]]] = {}
        self._alone: dict[tuple[str, str, str, float, float, int, float], float] = {}
        for snap in fleet.devices:
            kind = book.kinds.get(reported_kind(snap))
            dev = _Dev(snap, {n: _Proc(p) for n, p in kind.processors.items()} if kind else {})
            self.devices[snap.device_id] = dev
            for t in snap.tenants:
                got = self._load(t.name, t.model, t.variant, reported_kind(snap))
                if isinstance(got, str):
                    dev.blocked = f"resident {t.name}: {got}"
                    break
                dev.procs[got[0]].loads.append(got[1])
            for st in dev.procs.values():
                st.util = predict(st.proc, st.loads).utilisation if st.loads else 0.0
            if snap.online and kind is not None and not dev.blocked:
                for name in dev.procs:
                    key = (reported_kind(snap), snap.runtimes, name)
                    self.heaps.setdefault(key, []).append((dev.procs[name].util, 0, snap.device_id))
        self.pools: dict[tuple[str, str], list[tuple[frozenset[str], list[tuple[float, int, str]]]]] = {}
        self.kinds_by_runtime: dict[str, list[str]] = {}
        for (kind_name, runtimes, pname), heap in sorted(
            self.heaps.items(), key=lambda kv: (kv[0][0], kv[0][2])
        ):
            heapq.heapify(heap)
            self.pools.setdefault((kind_name, pname), []).append((runtimes, heap))
            for rt in runtimes:
                if kind_name not in self.kinds_by_runtime.setdefault(rt, []):
                    self.kinds_by_runtime[rt].append(kind_name)

    def _load(
        self, tenant: str, model: str, variant: str, kind: str, slo_ms: float | None = None
    ) -> tuple[str, Load] | str:
        return load_of(self._model, tenant, model, variant, kind, slo_ms)

    # -- checking one device ----------------------------------------------------------------------
    def check(self, dev: _Dev, proc_name: str, load: Load, size: int) -> tuple[float, Outlook] | str:
        """(score, outlook with ``load`` added) or why ``load`` does not fit on ``dev`` (the memory, then
        the scheduling framework's ``fit`` on the processor as this planner holds it)."""
        if dev.free < size:
            return f"needs {mib(size)}, {mib(max(dev.free, 0))} free"
        if dev.blocked:
            return dev.blocked
        st = dev.procs[proc_name]
        return fit(st.proc, proc_name, [*st.loads, load], self.headroom)

    def _why_not(self, dev: _Dev, spec: TenantSpec, model: ModelFacts) -> tuple[str, Load] | str:
        snap = dev.snap
        if not snap.online:
            return "offline"
        if model.runtime not in snap.runtimes:
            return f"no runtime {model.runtime}"
        return self._load(spec.name, model.name, model.variant, reported_kind(snap), spec.slo_ms)

    # -- deciding ---------------------------------------------------------------------------------
    def decide(self, spec: TenantSpec, model: ModelFacts) -> tuple[Decision, Chosen | None]:
        """The decision and, when placed, what to commit: (device, processor, load, new utilisation)."""
        if not self.devices:
            return NoFit("no devices known"), None
        if self.probe is None:
            return self._exhaustive(spec, model)
        return self._probed(spec, model, self.probe)

    def _exhaustive(self, spec: TenantSpec, model: ModelFacts) -> tuple[Decision, Chosen | None]:
        best: tuple[float, int, str, str, Load, float] | None = None
        reasons: list[str] = []
        for did, dev in self.devices.items():
            got = self._why_not(dev, spec, model)
            r = got if isinstance(got, str) else self.check(dev, got[0], got[1], model.size_bytes)
            if isinstance(r, str):
                reasons.append(f"{did}: {r}")
            elif isinstance(got, tuple) and (
                best is None or (-r[0], dev.tenants, did) < (-best[0], best[1], best[2])
            ):
                best = (r[0], dev.tenants, did, got[0], got[1], r[1].utilisation)
        if best is None:
            return NoFit("; ".join(reasons)), None
        return self._placed(spec, best[2], best[3], best[4], best[0]), (best[2], best[3], best[4], best[5])

    def _alone_slack(self, kind: str, pname: str, load: Load) -> float:
        """The newcomer's slack with the processor to itself: no device of the pool can score higher."""
        key = (kind, pname, load.group, load.rate_rps, load.slo_ms, load.in_flight, load.think_ms)
        got = self._alone.get(key)
        if got is None:
            p95 = predict(self.book.kinds[kind].processors[pname], [load]).p95_ms[0]
            got = self._alone[key] = (load.slo_ms - p95) / load.slo_ms if load.slo_ms < math.inf else 1.0
        return got

    def _probed(self, spec: TenantSpec, model: ModelFacts, probe: int) -> tuple[Decision, Chosen | None]:
        reasons: list[str] = []
        options: list[tuple[float, str, str, Load]] = []  # (bound on the score, kind, processor, load)
        for kind in self.kinds_by_runtime.get(model.runtime, ()):
            got = self._load(spec.name, model.name, model.variant, kind, spec.slo_ms)
            if isinstance(got, str):
                reasons.append(f"{kind}: {got}")
                continue
            bound = self._alone_slack(kind, got[0], got[1])
            if bound < 0.0:
                reasons.append(f"{kind}: p95 alone above SLO {spec.slo_ms:g} ms")
                continue
            options.append((bound, kind, got[0], got[1]))
        options.sort(key=lambda o: -o[0])
        best: tuple[float, str, str, Load, float] | None = None
        for bound, kind, pname, load in options:
            if best is not None and best[0] >= bound:
                break  # no device of this kind or the ones after it can beat the best found
            floor = _own_demand(self.book.kinds[kind].processors[pname], load)
            for runtimes, heap in self.pools.get((kind, pname), ()):
                if model.runtime not in runtimes:
                    continue
                why = self._search(heap, pname, load, model.size_bytes, floor, probe)
                if isinstance(why, str):
                    reasons.append(f"{kind}/{pname}: {why}")
                elif best is None or (-why[0], why[1]) < (-best[0], best[1]):
                    best = (why[0], why[1], pname, load, why[2])
        if best is None:
            return NoFit("; ".join(reasons) or f"no online device runs {model.runtime}"), None
        return self._placed(spec, best[1], best[2], best[3], best[0]), (best[1], best[2], best[3], best[4])

    def _search(
        self, heap: list[tuple[float, int, str]], pname: str, load: Load, size: int, floor: float, probe: int
    ) -> tuple[float, str, float] | str:
        """(score, device, utilisation) of the least used device of a pool that fits, trying at most
        ``probe`` devices, or why none did."""
        popped: list[tuple[float, int, str]] = []
        why: tuple[float, str, float] | str = "no device left"
        while heap and len(popped) < probe:
            entry = heapq.heappop(heap)
            dev = self.devices[entry[2]]
            if dev.procs[pname].version != entry[1]:
                continue  # stale: the device changed since this entry was pushed
            popped.append(entry)
            if entry[0] + floor > self.headroom:
                why = f"least used {pname} at {entry[0]:.2f} + {floor:.2f} > headroom {self.headroom:.2f}"
                break
            r = self.check(dev, pname, load, size)
            if isinstance(r, str):
                why = f"{entry[2]}: {r}"
                continue
            why = (r[0], entry[2], r[1].utilisation)
            break
        for entry in popped:
            heapq.heappush(heap, entry)
        return why

    def _placed(self, spec: TenantSpec, did: str, pname: str, load: Load, score: float) -> Placed:
        kind = reported_kind(self.devices[did].snap)
        at = f"{load.rate_rps:g} req/s"
        if load.closed:  # its rate is an outcome: the throughput the model predicts for it there
            st = self.devices[did].procs[pname]
            at = f"{load.in_flight} in flight ({predict(st.proc, [*st.loads, load]).throughput_rps[-1]:.3g} req/s)"
        return Placed(did, score, f"predicted {spec.name} on {kind}/{pname}: min SLO slack {score:.0%} at {at}")

    def commit(self, device_id: str, proc_name: str, load: Load, util: float, size: int) -> None:
        """Hold ``load`` on the device's processor, whose utilisation becomes ``util``."""
        dev = self.devices[device_id]
        st = dev.procs[proc_name]
        st.loads.append(load)
        st.util = util
        st.version += 1
        dev.free -= size
        dev.tenants += 1
        key = (reported_kind(dev.snap), dev.snap.runtimes, proc_name)
        heapq.heappush(self.heaps[key], (st.util, st.version, device_id))

    def place(self, spec: TenantSpec, model: ModelFacts) -> Decision:
        """Decide and, when placed, commit: the planner then holds the tenant."""
        decision, chosen = self.decide(spec, model)
        if chosen is not None:
            self.commit(*chosen, model.size_bytes)
        return decision

    def predictions(self) -> dict[str, tuple[str, float]]:
        """tenant -> (device, predicted p95 ms) for every tenant the planner holds."""
        out: dict[str, tuple[str, float]] = {}
        for did, dev in self.devices.items():
            for st in dev.procs.values():
                if st.loads:
                    for ld, p95 in zip(st.loads, predict(st.proc, st.loads).p95_ms, strict=True):
                        out[ld.name] = (did, p95)
        return out
