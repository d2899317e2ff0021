"""Fractions of a batch: validation and unbiased integer splitting."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

__all__ = ["check_fracs", "split_counts"]


def check_fracs(fracs: Mapping, known: Sequence[str]) -> dict[str, float]:
    """Validates named batch fractions: known names, finite, >= 0, summing to 1 (within 1e-6).

    Example:
        >>> check_fracs({"uniform": 1, "curious": "0"}, ["uniform", "curious"])
        {'uniform': 1.0, 'curious': 0.0}
        >>> check_fracs({"uniform": 0.5}, ["uniform", "curious"])
        Traceback (most recent call last):
        ...
        ValueError: fracs must sum to 1, got {'uniform': 0.5} (sum 0.5)
    """
    out = {}
    for name, value in dict(fracs).items():
        name = str(name)
        if name not in known:
            raise ValueError(f"fracs names an unknown sampler {name!r}; known: {list(known)}")
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"fracs[{name!r}] must be a finite number >= 0, got {value}")
        out[name] = value
    if not out:
        raise ValueError("fracs must name at least one sampler")
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"fracs must sum to 1, got {out} (sum {total})")
    return out


def split_counts(n: int, fracs: Sequence[float], generator: torch.Generator | None = None
                 ) -> list[int]:
    """Splits ``n`` items into integer counts with ``E[count_i] = n * fracs[i]`` exactly.

    Each share gets ``floor(n * f_i)``; the ``r`` items left over go to shares chosen by
    systematic sampling on the fractional parts (one uniform draw), so share ``i`` gets an extra
    item with probability equal to its fractional part, and the counts always sum to ``n``.

    Example:
        >>> split_counts(10, [0.2, 0.8])          # exact shares need no draw
        [2, 8]
        >>> sum(split_counts(10, [0.25, 0.75]))   # 2.5 / 7.5: one of them gets the extra item
        10
    """
    f = [float(x) for x in fracs]
    total = sum(f)
    if not total > 0:
        raise ValueError(f"fractions must have a positive sum, got {list(fracs)}")
    expected = [n * x / total for x in f]
    counts = [math.floor(e) for e in expected]
    rest = n - sum(counts)
    if rest > 0:
        # plain floats: a handful of shares, called once per batch (torch ops cost more here)
        parts = [e - c for e, c in zip(expected, counts)]
        scale = rest / sum(parts)  # exact sum despite round-off
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        edge, point, i = 0.0, u, 0
        for i, part in enumerate(parts):
            edge += part * scale
            while point < edge and point < rest:  # share i gets one per point in its interval
                counts[i] += 1
                point += 1.0
        while point < rest:  # round-off left a point past the last edge
            counts[len(parts) - 1] += 1
            point += 1.0
    return counts
