"""The Google Coral Edge TPU behind the runtime seam (runtime name ``edgetpu``).

An Edge TPU runs only models compiled for it by ``edgetpu_compiler`` (files named ``*_edgetpu.tflite``);
anything else is refused before the vendor library sees it. Interpreters come from pycoral's
``make_interpreter`` where pycoral imports (Coral's apt package, Python <= 3.9 only), otherwise from
LiteRT with the ``libedgetpu.so.1`` delegate. Vendor failures (an ``OSError`` when libedgetpu is not
installed, a ``ValueError`` when no TPU answers) become edgefleet errors that say what to install.

The TPU caches a model's parameters in about 8 MB of on-chip SRAM; when the next invoke on a TPU is for a
different model, the parameters are loaded again (a swap). Each session counts the invokes on which its
model was switched in and times them, so that placement can see what sharing a TPU costs.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefleet.runtime.base import DEFAULT_OPTIONS, SessionOptions, measure_load
from edgefleet.runtime.errors import ModelLoadError, RuntimeMissing
from edgefleet.runtime.tflite import TFLiteSession

log = logging.getLogger(__name__)

NAME = "edgetpu"
LIBRARY = "libedgetpu.so.1"
COMPILED_SUFFIX = "_edgetpu.tflite"
DEVICE_ENV = "EDGEFLEET_EDGETPU_DEVICE"  # "usb", "usb:0", "pci:0", ":0"; unset: the first Edge TPU
SRAM_BYTES = 8 * 1024 * 1024
INSTALL_HINT = "install the Edge TPU runtime: sudo apt-get install libedgetpu1-std (see docs/devices.md)"


class EdgeTpuMissing(RuntimeMissing):
    """The Python packages import but the Edge TPU library or the TPU itself is not there."""

    def __init__(self, reason: str) -> None:
        super().__init__(NAME, "coral")
        message = f"the edgetpu runtime cannot run here: {reason}"
        self.args = (message,)
        self.msg = message  # what ImportError's str() shows


@dataclass(frozen=True)
class Backend:
    """How interpreters are made on this machine: ``kind`` is ``pycoral`` or ``litert``."""

    kind: str
    make: Callable[[Path, str | None, int], Any]  # (model path, device, threads) -> allocated interpreter
    probe: Callable[[str | None], None]  # raises EdgeTpuMissing unless a TPU answers


def _on(device: str | None) -> str:
    return f" {device}" if device else ""


def _pycoral_backend() -> Backend | None:
    try:
        from pycoral.utils.edgetpu import list_edge_tpus, make_interpreter
    except ImportError:
        return None

    def make(path: Path, device: str | None, threads: int) -> Any:
        interpreter = make_interpreter(str(path), device=device)
        interpreter.allocate_tensors()
        return interpreter

    def probe(device: str | None) -> None:
        try:
            tpus = list_edge_tpus()  # [{'type': 'usb' | 'pci', 'path': ...}, ...]
        except Exception as exc:  # a vendor failure means: no TPU usable here
            raise EdgeTpuMissing(f"pycoral could not list Edge TPUs: {exc}") from exc
        kind = (device or "").split(":")[0]
        if not any(not kind or t.get("type") == kind for t in tpus):
            raise EdgeTpuMissing(f"no Edge TPU{_on(device)} is attached (pycoral lists {tpus})")

    return Backend("pycoral", make, probe)


def _litert_backend() -> Backend | None:
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter, load_delegate
        except ImportError:
            return None

    def make(path: Path, device: str | None, threads: int) -> Any:
        delegate = load_delegate(LIBRARY, {"device": device} if device else None)
        interpreter = Interpreter(
            model_path=str(path), experimental_delegates=[delegate], num_threads=threads
        )
        interpreter.allocate_tensors()
        return interpreter

    def probe(device: str | None) -> None:
        if not library_loads():  # checked first: a failed load_delegate also prints noise from __del__
            raise EdgeTpuMissing(f"{LIBRARY} is not installed; {INSTALL_HINT}")
        try:
            load_delegate(LIBRARY, {"device": device} if device else None)
        except (OSError, ValueError, RuntimeError) as exc:
            raise EdgeTpuMissing(f"no Edge TPU{_on(device)} answers: {exc}") from exc

    return Backend("litert", make, probe)


def backend() -> Backend:
    """pycoral where it imports, else LiteRT with the delegate; :class:`RuntimeMissing` when neither."""
    found = _pycoral_backend() or _litert_backend()
    if found is None:
        raise RuntimeMissing(NAME, "coral")
    return found


def default_device() -> str | None:
    return os.environ.get(DEVICE_ENV) or None


def library_loads() -> bool:
    """Whether ``libedgetpu.so.1`` can be loaded by the dynamic linker."""
    try:
        ctypes.CDLL(LIBRARY)
    except OSError:
        return False
    return True


@functools.cache
def check_available(device: str | None) -> str:
    """Prove once per process that an Edge TPU answers (pycoral lists it, or the delegate loads) and return
    the backend kind; :class:`EdgeTpuMissing` says what is missing. ``check_available.cache_clear()``
    forgets the answer."""
    chosen = backend()
    chosen.probe(device)
    return chosen.kind


# -- model switches on one TPU ----------------------------------------------------------------------------
class _Tpu:
    """One physical TPU: a lock serialising invokes and the session whose model it holds."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.resident: int | None = None  # token of the session that invoked last


_tpus: dict[str, _Tpu] = {}
_tpus_lock = threading.Lock()
_tokens = itertools.count(1)


def _tpu(device: str | None) -> _Tpu:
    with _tpus_lock:
        return _tpus.setdefault(device or ":0", _Tpu())


class EdgeTpuSession(TFLiteSession):
    """One compiled model on one Edge TPU (the run loop is ``TFLiteSession``'s, under the TPU's lock).

    ``switches`` counts the invokes that found another session's model on the TPU (the first invoke
    included); ``last_switch_s`` and ``switch_s_total`` time those invokes, parameter reload included.
    """

    runtime = NAME
    failure = "the Edge TPU"

    def __init__(self, path: Path, options: SessionOptions, *, device: str | None, made_by: Backend) -> None:
        if not path.name.endswith(COMPILED_SUFFIX):
            raise ModelLoadError(
                f"{path.name} is not compiled for the Edge TPU: the edgetpu runtime runs only models "
                f"compiled by edgetpu_compiler, named *{COMPILED_SUFFIX}"
            )
        if not path.is_file():
            raise ModelLoadError(f"cannot load {path}: no such file")
        self.path = path
        self.device = device
        self.backend = made_by.kind
        try:
            interp, self.memory_bytes = measure_load(path, lambda: made_by.make(path, device, options.threads))
        except OSError as exc:  # libedgetpu missing: LiteRT's load_delegate raises OSError, not ValueError
            raise ModelLoadError(f"cannot open the Edge TPU for {path.name}: {exc}; {INSTALL_HINT}") from exc
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(
                f"the Edge TPU{_on(device)} could not load {path.name}: {exc} (is the TPU plugged in, and "
                f"is this process in the plugdev group?)"
            ) from exc
        if path.stat().st_size > SRAM_BYTES:
            log.info(
                "%s is larger than the Edge TPU's on-chip cache; parameters stream from host memory",
                path.name,
            )
        self._tpu = _tpu(device)
        self._token = next(_tokens)
        self.invokes = 0
        self.switches = 0
        self.last_switch_s: float | None = None
        self.switch_s_total = 0.0
        self._attach(interp, self._tpu.lock)

    def _invoke_interpreter(self) -> None:
        switching = self._tpu.resident != self._token
        t0 = time.perf_counter()
        self._interp.invoke()
        elapsed = time.perf_counter() - t0
        self._tpu.resident = self._token
        self.invokes += 1
        if switching:
            self.switches += 1
            self.last_switch_s = elapsed
            self.switch_s_total += elapsed

    def swap_stats(self) -> dict[str, float]:
        """Invokes, model switches and their time, for telemetry and benchmarks."""
        return {
            "invokes": float(self.invokes),
            "switches": float(self.switches),
            "last_switch_s": self.last_switch_s or 0.0,
            "switch_s_total": self.switch_s_total,
        }

    def _release(self) -> None:
        if self._tpu.resident == self._token:
            self._tpu.resident = None


class EdgeTpuRuntime:
    """Opens ``*_edgetpu.tflite`` files on an Edge TPU (``device`` as libedgetpu names it, e.g. ``usb:0``)."""

    name = NAME

    def __init__(self, device: str | None = None) -> None:
        self.device = device if device is not None else default_device()
        self.backend = backend()
        # EdgeTpuMissing here keeps edgetpu out of available_runtimes() where no TPU answers
        check_available(self.device)

    def open(self, path: Path, options: SessionOptions = DEFAULT_OPTIONS) -> EdgeTpuSession:
        return EdgeTpuSession(Path(path), options, device=self.device, made_by=self.backend)
