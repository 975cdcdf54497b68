"""Where benchmark results live and how docs/benchmarks.md is written from them, so every figure in the
docs can be traced to one run.

A full run of ``edgefleet bench NAME`` writes ``docs/results/NAME.json`` and ``NAME.png`` (a ``--quick``
run writes under ``.bench/``: quick figures are never quoted). Every JSON carries a ``provenance`` block:
the commit it ran on (and whether the tree had uncommitted changes), the machine, the UTC start and end
and the load average at both ends (the box is shared; a figure taken under load says so).

``edgefleet bench report`` rewrites the table between the two markers of docs/benchmarks.md from those
files. A figure is shown against its goal from the file's own ``goal`` block; a goal value is either a
number (the direction is read from the figure's name: times, errors and losses are "at most", the rest
"at least") or ``{"at_least": x}`` / ``{"at_most": x}``. A registered benchmark with no file shows
"not run"; a file with no registered benchmark (another team's) is shown all the same.
"""

from __future__ import annotations

import ast
import datetime as _dt
import importlib.util
import json
import math
import os
import platform
import re
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from edgefleet.bench.metrics import goal_met

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "docs" / "results"
DOC = REPO / "docs" / "benchmarks.md"
BEGIN = "<!-- edgefleet bench report: begin (generated from docs/results; do not edit by hand) -->"
END = "<!-- edgefleet bench report: end -->"

_started: dict[str, Any] = {}


def default_path(name: str, *, quick: bool) -> Path:
    """docs/results/NAME.json for a full run (it is the one to commit), .bench/NAME.json for a quick one."""
    return (Path(".bench") if quick else RESULTS_DIR) / f"{name}.json"


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def mark_start() -> None:
    """Remember when (and under what load) the run began; :func:`provenance` reports it."""
    _started.update(utc=_utc_now(), loadavg=_loadavg(), monotonic=time.monotonic())


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def provenance() -> dict[str, Any]:
    """Commit, machine, date and load of the run being written."""
    # result files written by earlier runs are not changes to the code that measured
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)docs/results")
    return {
        "commit": _git("rev-parse", "HEAD"),
        "tree_dirty": bool(status) if status is not None else None,
        "machine": {
            "hostname": platform.node(),
            "cpu": _cpu_model(),
            "cpus": os.cpu_count(),
            "arch": platform.machine(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "started_utc": _started.get("utc"),
        "finished_utc": _utc_now(),
        "loadavg_start": _started.get("loadavg"),
        "loadavg_end": _loadavg(),
    }


# ---- the report ---------------------------------------------------------------------------------------

_LOWER_IS_BETTER = re.compile(
    r"(seconds|_s$|_ms|mape|error|violation|lost|duplicat|crash|recovery|unanswered)", re.IGNORECASE
)


def goal_direction(key: str, goal: Any) -> tuple[float, bool] | None:
    """(threshold, higher_is_better) for one goal entry, or None when it is not a numeric goal."""
    if isinstance(goal, Mapping):
        if "at_least" in goal:
            return float(goal["at_least"]), True
        if "at_most" in goal:
            return float(goal["at_most"]), False
        return None
    if isinstance(goal, bool) or not isinstance(goal, (int, float)):
        return None
    return float(goal), not _LOWER_IS_BETTER.search(key)


def _fmt(x: Any) -> str:
    if x is None:
        return "none"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf"
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"
    return str(x)


def figures_vs_goals(data: Mapping[str, Any]) -> list[str]:
    """One phrase per goal of a result file: "`key` **measured** (goal >= x: met|missed|not measured)"."""
    out = []
    for key, goal in (data.get("goal") or {}).items():
        how = goal_direction(key, goal)
        if how is None:
            continue
        threshold, higher = how
        measured = data.get(key)
        sign = "≥" if higher else "≤"
        figure = measured if isinstance(measured, (int, float)) and not isinstance(measured, bool) else None
        met = goal_met(figure, threshold, higher_is_better=higher)
        verdict = "not measured" if met is None else "met" if met else "**missed**"
        out.append(f"`{key}` **{_fmt(measured)}** (goal {sign} {_fmt(threshold)}: {verdict})")
    return out


def describe(name: str) -> str:
    """The first sentence of bench/NAME.py's docstring, without its command prefix ("" when none)."""
    module = name.replace("-", "_")
    spec = importlib.util.find_spec(f"edgefleet.bench.{module}") if (REPO / "bench" / f"{module}.py").exists() else None
    if spec is None or spec.origin is None:
        return ""
    doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text())) or ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    sentence = re.split(r"(?<=[a-z0-9)])\. ", paragraph)[0]
    return re.sub(r"^``edgefleet bench [\w-]+``:\s*", "", sentence).rstrip(".")


def row(name: str, data: Mapping[str, Any] | None, file: str, description: str) -> str:
    """One table row for benchmark ``name`` from its result file's content (None: never run)."""
    desc = description.replace("|", "\\|")
    if data is None:
        return f"| `{name}` | {desc} | not run | — |"
    figs = "; ".join(figures_vs_goals(data)) or "no goal in the file"
    prov = data.get("provenance") or {}
    commit = (prov.get("commit") or "unknown")[:10]
    if prov.get("tree_dirty"):
        commit += " (+ uncommitted changes)"
    date = prov.get("finished_utc") or "unknown date"
    load = prov.get("loadavg_start")
    load_txt = f", load {load[0]:.2f}" if isinstance(load, list) and load else ""
    quick = " (**quick run**)" if data.get("quick") else ""
    source = f"[{file}]({file}){quick}, commit {commit}, {date}{load_txt}"
    return f"| `{name}` | {desc} | {figs} | {source} |"


def render_table(entries: Iterable[tuple[str, Mapping[str, Any] | None, str, str]]) -> str:
    """The markdown table for (name, data or None, relative file, description) entries, in that order."""
    lines = [
        "| benchmark | what it measures | figure vs goal | result file |",
        "| --- | --- | --- | --- |",
    ]
    lines += [row(*e) for e in entries]
    return "\n".join(lines)


def splice(doc: str, table: str) -> str:
    """Replace what lies between the markers of ``doc`` with ``table`` (markers appended if absent)."""
    block = f"{BEGIN}\n{table}\n{END}"
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        return head + block + tail
    return doc.rstrip("\n") + "\n\n" + block + "\n"


def load_results(results_dir: Path) -> dict[str, dict[str, Any]]:
    """name -> JSON content of each docs/results/*.json (unreadable files are reported, not skipped)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(results_dir.glob("*.json")):
        try:
            out[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            out[path.stem] = {"goal": {}, "error": f"unreadable: {exc}"}
    return out


def write_report(registered: Iterable[str], *, results_dir: Path = RESULTS_DIR, doc: Path = DOC) -> str:
    """Rewrite the table of ``doc`` from ``results_dir``; returns the table."""
    found = load_results(results_dir)
    names = list(dict.fromkeys([*registered, *sorted(found)]))
    rel = os.path.relpath(results_dir, doc.parent)
    entries = [(n, found.get(n), f"{rel}/{n}.json", describe(n)) for n in names]
    table = render_table(entries)
    doc.write_text(splice(doc.read_text() if doc.exists() else "# Benchmarks\n", table))
    return table
