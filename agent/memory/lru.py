"""The baseline: keep each tenant's preferred variant, load on demand, evict the least recently used."""

from __future__ import annotations

from collections.abc import Mapping


def lru_admit(
    tenant: str,
    size_bytes: int,
    resident: Mapping[str, int],
    last_used: Mapping[str, float],
    budget_bytes: int,
    pinned: frozenset[str] = frozenset(),
) -> list[str] | None:
    """Tenants to evict (oldest use first) so that ``tenant`` fits; None if it cannot fit at all.
    Example: budget 10, resident {a: 4, b: 4}, a used at t=1, b at t=2; admitting c of 5 needs 3 more
    bytes -> evict a (oldest) -> 4 + 5 = 9 <= 10."""
    used = sum(size for t, size in resident.items() if t != tenant)
    if used + size_bytes <= budget_bytes:
        return []
    victims: list[str] = []
    for t in sorted(
        (t for t in resident if t != tenant and t not in pinned), key=lambda t: last_used.get(t, 0.0)
    ):
        victims.append(t)
        used -= resident[t]
        if used + size_bytes <= budget_bytes:
            return victims
    return None
