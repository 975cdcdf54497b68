"""Plain-text tables for terminals: left-aligned columns two spaces apart, no trailing blanks."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """``rows`` (the first one usually the header) as aligned lines; every row has the same length."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
