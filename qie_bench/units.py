"""How measurements are shown to people (results keep raw values in base units)."""

from __future__ import annotations


def fmt_bytes(n: float | None) -> str:
    """Binary units, '—' for an absent measurement (never '0 B')."""
    if n is None:
        return "—"
    a = abs(n)
    if a >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    if a >= 2**20:
        return f"{n / 2**20:.1f} MiB"
    if a >= 2**10:
        return f"{n / 2**10:.1f} KiB"
    return f"{n:.0f} B"
