"""The one TOML writer for every config edgefleet writes itself (the local fleet's agent and coordinator
configs, the security bundle's client files, the benchmarks' and tests' configs).

Text pasted together with f-strings breaks on a quote, a backslash or a Windows path; tomli-w quotes and
escapes every string. Configs are built as tables of keys, and a caller's own tables are merged in
(``merge_tables``) rather than appended as text. Reading stays with tomllib (``edgefleet.config``). This
module imports nothing of edgefleet, so the security bundle can use it without pulling in a transport.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import tomli_w

__all__ = ["dump_toml", "merge_tables"]


def dump_toml(data: Mapping[str, Any]) -> str:
    """``data`` (tables of keys) as TOML text, written by tomli-w: strings are quoted and escaped whatever
    they hold (quotes, backslashes, Windows paths, any Unicode), and paths are written as strings."""
    return tomli_w.dumps(_plain(data))


def merge_tables(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in: a table merges key by key (recursively), any other value replaces."""
    out = dict(base)
    for key, value in extra.items():
        old = out.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = merge_tables(old, value)
        else:
            out[key] = value
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    return value
