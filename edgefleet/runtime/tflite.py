"""One session for every TFLite interpreter: LiteRT on the CPU and LiteRT/pycoral on an Edge TPU.

Both run the same loop: fixed shapes, usually a batch of one, an interpreter that is not re-entrant.
``run`` validates the feeds, takes the session's lock (the Edge TPU's lock is shared by every session on
one TPU), and when a caller sends more rows than the model's batch of one, invokes the rows one by one
and stacks the outputs, so the scheduler treats every model the same way. Subclasses say how an
interpreter is made and may wrap ``invoke`` (the Edge TPU times model switches).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.runtime.base import TFLITE_CAPABILITIES, Feeds, Outputs, TensorSpec, check_feeds
from edgefleet.runtime.errors import InferenceFailed, SessionClosed


def tensor_spec(detail: dict[str, Any]) -> TensorSpec:
    """A TFLite tensor detail as a spec; a ``-1`` in the shape signature is a dynamic dimension."""
    signature = detail.get("shape_signature")
    dims = signature if signature is not None and len(signature) else detail["shape"]
    shape = tuple(int(d) if int(d) >= 0 else None for d in dims)
    return TensorSpec(name=str(detail["name"]), dtype=np.dtype(detail["dtype"]).name, shape=shape)


class TFLiteSession:
    """A loaded, allocated TFLite interpreter. Subclasses set ``runtime`` and call ``_attach``."""

    runtime = "tflite"
    capabilities = TFLITE_CAPABILITIES
    failure = "TFLite"  # how failures name the runtime

    path: Path
    memory_bytes: int

    def _attach(self, interpreter: Any, lock: threading.Lock) -> None:
        """Read the interpreter's tensors; ``lock`` serialises invokes (per session, or per device)."""
        self._interp = interpreter
        in_details = interpreter.get_input_details()
        out_details = interpreter.get_output_details()
        self.inputs = tuple(tensor_spec(d) for d in in_details)
        self.outputs = tuple(tensor_spec(d) for d in out_details)
        self._in_index = {str(d["name"]): int(d["index"]) for d in in_details}
        self._out_index = [(str(d["name"]), int(d["index"])) for d in out_details]
        self._row_inputs = frozenset(s.name for s in self.inputs if s.shape[:1] == (1,))
        self._lock = lock
        self._closed = False

    def _invoke_interpreter(self) -> None:
        self._interp.invoke()

    def _invoke(self, feeds: Feeds) -> Outputs:
        for name, value in feeds.items():
            self._interp.set_tensor(self._in_index[name], np.ascontiguousarray(value))
        self._invoke_interpreter()
        # get_tensor returns a copy of the output already (tensor() would be the view): no second copy
        return {name: np.asarray(self._interp.get_tensor(index)) for name, index in self._out_index}

    def run(self, feeds: Feeds) -> Outputs:
        batch = check_feeds(self.inputs, feeds, loose_batch=True)
        rowed = self._row_inputs
        with self._lock:
            if self._closed:
                raise SessionClosed(f"session for {self.path.name} is closed")
            try:
                if batch == 1:
                    return self._invoke(feeds)
                rows = [
                    self._invoke({k: (v[i : i + 1] if k in rowed else v) for k, v in feeds.items()})
                    for i in range(batch)
                ]
            except (ValueError, RuntimeError) as exc:
                raise InferenceFailed(f"{self.failure} failed running {self.path.name}: {exc}") from exc
        return {name: np.concatenate([r[name] for r in rows], axis=0) for name, _ in self._out_index}

    def _release(self) -> None:
        """Called under the lock when closing."""

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._interp = None
            self._release()
