"""Where the batch dimension is, per tensor, so that requests of one tenant can be run as one batch.

An input's batch axis is its first dynamic dimension (``None`` in the model's spec): axis 0 for most
models, axis 1 for a recurrent state such as VAD's ``state[2, N, 128]``. Inputs with no dynamic
dimension (VAD's scalar sample rate) are shared: requests batch together only if those are equal.
Output batch axes are learned once at deploy by running the model on one row and on two rows and
seeing which axis doubled; a model whose outputs do not split that way is never batched.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from edgefleet.runtime import TensorSpec

Feeds = Mapping[str, np.ndarray]
Axes = dict[str, int | None]


def input_axes(specs: Sequence[TensorSpec]) -> Axes:
    return {s.name: next((i for i, d in enumerate(s.shape) if d is None), None) for s in specs}


def request_layout(axes: Axes, tensors: Feeds) -> tuple[int, object]:
    """(rows, batch key) of one request; key None means it can only run alone."""
    rows: set[int] = set()
    key: list[object] = []
    for name in sorted(tensors):
        arr = tensors[name]
        axis = axes.get(name)
        if axis is None or axis >= arr.ndim:
            key.append(
                (name, arr.dtype.str, arr.shape, hashlib.blake2b(arr.tobytes(), digest_size=8).digest())
            )
            continue
        rows.add(int(arr.shape[axis]))
        key.append((name, arr.dtype.str, arr.shape[:axis] + arr.shape[axis + 1 :]))
    if len(rows) != 1 or not any(a is not None for a in axes.values()):
        n = min(rows) if rows else 1
        return max(1, n), None
    (n,) = rows
    if n < 1:
        return 1, None
    return n, tuple(key)


def content_free(axes: Axes, tensors: Feeds) -> bool:
    """Whether ``request_layout`` of these tensors depends only on their names, dtypes and shapes (every
    tensor has a batch axis within its rank; a shared input's bytes are part of the batch key)."""
    for name, arr in tensors.items():
        axis = axes.get(name)
        if axis is None or axis >= arr.ndim:
            return False
    return True


def stack(axes: Axes, requests: Sequence[Feeds]) -> dict[str, np.ndarray]:
    first = requests[0]
    out: dict[str, np.ndarray] = {}
    for name, value in first.items():
        axis = axes.get(name)
        out[name] = value if axis is None else np.concatenate([r[name] for r in requests], axis=axis)
    return out


def split(
    outs: Mapping[str, np.ndarray], out_axes: Mapping[str, int], rows: Sequence[int]
) -> list[dict[str, np.ndarray]]:
    bounds = [0, *itertools.accumulate(rows)]
    parts: list[dict[str, np.ndarray]] = [{} for _ in rows]
    for name, value in outs.items():
        axis = out_axes[name]
        if axis == 0:
            for i, part in enumerate(parts):
                part[name] = value[bounds[i] : bounds[i + 1]]
            continue
        for i, part in enumerate(parts):
            index = [slice(None)] * value.ndim
            index[axis] = slice(bounds[i], bounds[i + 1])
            part[name] = value[tuple(index)]
    return parts


def learn_output_axes(
    run: Callable[[Feeds], Mapping[str, np.ndarray]], axes: Axes, one: Feeds
) -> dict[str, int] | None:
    """Run ``one`` (a single-row request) and two copies of it stacked; return each output's batch axis,
    or None when the model cannot be batched (it failed, or an output did not double on one axis)."""
    if not any(a is not None for a in axes.values()):
        return None
    try:
        single = run(one)
        double = run(stack(axes, [one, one]))
    except Exception:
        return None
    found: dict[str, int] = {}
    for name, a in single.items():
        b = double.get(name)
        if b is None or a.ndim != b.ndim:
            return None
        diff = [i for i in range(a.ndim) if a.shape[i] != b.shape[i]]
        if len(diff) != 1 or b.shape[diff[0]] != 2 * a.shape[diff[0]]:
            return None
        found[name] = diff[0]
    return found
