"""Builds a performance book from ``calibration.json``: measured x86 figures scaled by public ratios.

Only x86 was measured here, so the other kinds are derived, by rules kept in code so that each number
in the book can be traced to the table rows it came from (the JSON tags every input as measured here,
public or assumed):

- batch curve (x86): s(1) measured; s(8) = 8·s(1)/gain8, so c = (s(8) - s(1))/7 and a = s(1) - c.
- Arm cores: ``arm`` = median over the Coral table's rows of embedded-CPU ms / desktop-CPU ms.
- Edge TPU: least-squares line ms_tpu = t0 + r·ms_desktop over the same rows (USB Accelerator column),
  applied to the x86 curve (a' = t0 + r·a, c' = r·c); parameter reload = int8 parameter bytes / USB
  transfer rate.
- GPU: Arm curve times the GPU/CPU ratio of the nearest model in the OpenCV Zoo Jetson Nano table.
- The agent's request path (its Python work per request outside the model, a single server under the
  interpreter lock): measured here on x86 as a fixed part plus a part per MB of request; on every CPU
  processor of an Arm kind the same times the Arm factor. Only CPU processors model it.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from edgefleet.coordinator.perf.book import KindSpec, PerfBook, Profile
from edgefleet.coordinator.perf.curve import ServiceCurve
from edgefleet.coordinator.perf.sharing import Processor

CALIBRATION = Path(__file__).with_name("calibration.json")
VARIANT = "fp32"  # the measured variant; other variants get profiles when they are measured


def read(path: Path = CALIBRATION) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _line(points: list[tuple[float, float]]) -> tuple[float, float]:
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    r = sum((x - mx) * (y - my) for x, y in points) / sxx
    return my - r * mx, r


def derive(data: dict[str, Any]) -> dict[str, Any]:
    """The derived numbers, each from its rule (see the module docstring)."""
    coral = data["sources"]["coral"]["rows"].values()
    arm = statistics.median(row[2] / row[0] for row in coral)
    t0, r = _line([(row[0], row[1]) for row in coral])
    zoo = data["sources"]["opencv_zoo"]["rows"]
    gpu = {
        m: (zoo[row][1] / zoo[row][0] if row else 1.0)
        for m, row in data["gpu_analogue"].items()
        if not m.startswith("_")
    }
    per_ms = data["sources"]["edgetpu_transfer"]["mb_per_s"] * 1e6 / 1e3  # bytes per ms
    int8 = data["tpu"]["int8_bytes_per_fp32_byte"]
    models = {m: v for m, v in data["models"].items() if not m.startswith("_")}
    switch = {m: v["size_bytes"] * int8 / per_ms for m, v in models.items()}
    return {"arm_factor": arm, "tpu_fixed_ms": t0, "tpu_ratio": r, "gpu_ratio": gpu, "tpu_switch_ms": switch}


def x86_curve(entry: dict[str, Any]) -> ServiceCurve:
    s1 = float(entry["batch1_ms"])
    gain = float(entry["batch8_gain"] or 1.0)
    c = (8.0 * s1 / gain - s1) / 7.0
    return ServiceCurve(s1 - c, c)


def _scaled(rule: str, model: str, base: ServiceCurve, d: dict[str, Any]) -> tuple[ServiceCurve, float]:
    """(curve, reload ms) of ``model`` on a processor whose speed rule is ``rule``."""
    if rule == "reference":
        return base, 0.0
    if rule == "arm":
        return base.scaled(d["arm_factor"]), 0.0
    if rule == "gpu":
        return base.scaled(d["arm_factor"] * d["gpu_ratio"].get(model, 1.0)), 0.0
    if rule == "tpu":
        r = d["tpu_ratio"]
        return ServiceCurve(d["tpu_fixed_ms"] + r * base.fixed_ms, r * base.per_row_ms), d["tpu_switch_ms"][
            model
        ]
    raise ValueError(f"unknown speed rule {rule!r}")


def _processor(p: dict[str, Any], contention: float, path: tuple[float, ...], d: dict[str, Any]) -> Processor:
    """A processor of the book; a CPU's request path (ms, ms per MB, dispatch, hold) scaled to its speed."""
    if p["kind"] != "cpu":
        return Processor(p["kind"], int(p["servers"]))
    scale = 1.0 if p["speed"] == "reference" else float(d["arm_factor"])
    ms, per_mb, dispatch, hold = (x * scale for x in path)
    return Processor("cpu", int(p["servers"]), contention, ms, per_mb, dispatch_ms=dispatch, hold_ms=hold)


def build_book(path: Path = CALIBRATION) -> PerfBook:
    """The book for every kind in the calibration file and every model whose runtime the kind has."""
    data = read(path)
    d = derive(data)
    contention = float(data["cpu_contention"]["value"])
    req = data.get("cpu_request_path", {})
    request_path = tuple(float(req.get(k, 0.0)) for k in ("ms", "ms_per_mb", "dispatch_ms", "hold_ms"))
    scv = float(data["service_scv"]["value"])
    kinds: dict[str, KindSpec] = {}
    profiles: dict[tuple[str, str, str], Profile] = {}
    for kind, spec in data["kinds"].items():
        if kind.startswith("_"):
            continue
        procs = {name: _processor(p, contention, request_path, d) for name, p in spec["processors"].items()}
        kinds[kind] = KindSpec(kind, procs, dict(spec["runtimes"]))
        for model, entry in data["models"].items():
            if model.startswith("_") or entry["runtime"] not in spec["runtimes"]:
                continue
            rule = spec["processors"][spec["runtimes"][entry["runtime"]]]["speed"]
            curve, switch = _scaled(rule, model, x86_curve(entry), d)
            mb = float(entry.get("request_bytes", 0)) / 1e6
            profiles[(model, VARIANT, kind)] = Profile(curve, entry["runtime"], scv, switch, mb)
    return PerfBook(kinds, profiles)
