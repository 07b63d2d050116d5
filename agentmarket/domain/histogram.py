"""Duration histograms of the admin metrics (docs/api.md#admin-analytics).

The database keeps the replies' latency and time to first token per cell as one numeric whose
decimal digits, `DIGITS` per bucket from the right, are the bucket counts (migration
20261130190100_analytics_reply_cells.sql); summing cells is numeric addition. This module is the
other half: the bucket of a duration (`bucket`, the same rule as `private.analytics_bucket`), the
durations a bucket holds (`bounds`), the counts of a histogram's text (`counts`) and
`percentile_cont` estimated from them (`percentiles`).

Buckets are 1 ms wide below `EXACT_BELOW` ms, then `PER_DOUBLING` per doubling: a bucket is at
most 1/PER_DOUBLING of its lower bound wide, so an estimate is within `MAX_RELATIVE_ERROR` of the
exact percentile.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from typing import Final

__all__ = [
    "DIGITS",
    "EXACT_BELOW",
    "MAX_RELATIVE_ERROR",
    "PER_DOUBLING",
    "bounds",
    "bucket",
    "counts",
    "percentiles",
]

EXACT_BELOW: Final = 64  # ms: one bucket per millisecond below this
PER_DOUBLING: Final = 32  # buckets per doubling from EXACT_BELOW up
DIGITS: Final = 10  # decimal digits per bucket in the packed numeric
MAX_RELATIVE_ERROR: Final = 1 / PER_DOUBLING
_SHIFT: Final = EXACT_BELOW.bit_length() - 1  # 6: log2(EXACT_BELOW)
_SUB: Final = PER_DOUBLING.bit_length() - 1  # 5: log2(PER_DOUBLING)


def bucket(ms: int) -> int:
    """The bucket of a duration in whole milliseconds (negative counts as 0)."""
    if ms < EXACT_BELOW:
        return max(ms, 0)
    e = ms.bit_length() - 1
    return EXACT_BELOW + (e - _SHIFT) * PER_DOUBLING + (ms >> (e - _SUB)) - PER_DOUBLING


def bounds(b: int) -> tuple[int, int]:
    """The durations [low, high) in bucket `b`."""
    if b < EXACT_BELOW:
        return b, b + 1
    octave, step = divmod(b - EXACT_BELOW, PER_DOUBLING)
    e = octave + _SHIFT
    width = 1 << (e - _SUB)
    low = (PER_DOUBLING + step) * width
    return low, low + width


def counts(text: str | None) -> list[int]:
    """The bucket counts of a histogram's text, bucket 0 first."""
    digits = (text or "0").strip()
    if not digits.isdigit():
        raise ValueError("a histogram is a non-negative whole number")
    # The empty buckets below the lowest count are trailing zeros: not parsed one by one.
    significant = digits.rstrip("0")
    empty_below = (len(digits) - len(significant)) // DIGITS
    digits = digits[: len(digits) - empty_below * DIGITS]
    width = -(-len(digits) // DIGITS) * DIGITS
    digits = digits.rjust(width, "0")
    fields = [int(digits[start : start + DIGITS]) for start in range(0, width, DIGITS)]
    fields.reverse()
    return [0] * empty_below + fields if empty_below else fields


def _nth(cumulative: Sequence[int], histogram: Sequence[int], n: int) -> float:
    """An estimate of the n-th smallest value (0-based): the values of its bucket taken as evenly
    spread over the bucket's whole milliseconds (exact for a 1 ms bucket)."""
    b = bisect_right(cumulative, n)
    before = cumulative[b - 1] if b else 0
    inside = histogram[b]
    low, high = bounds(b)
    if inside == 1:
        return low + (high - 1 - low) / 2
    return low + (high - 1 - low) * (n - before) / (inside - 1)


def percentiles(histogram: Sequence[int], fractions: Sequence[float]) -> list[float | None]:
    """`percentile_cont` for each fraction, from bucket counts: the value at rank
    f·(n - 1), interpolated between the two values around it; None when the histogram is empty."""
    cumulative = list(accumulate(histogram))
    total = cumulative[-1] if cumulative else 0
    if total == 0:
        return [None for _ in fractions]
    out: list[float | None] = []
    for fraction in fractions:
        rank = fraction * (total - 1)
        below = int(rank)
        low = _nth(cumulative, histogram, below)
        if rank == below:
            out.append(low)
            continue
        high = _nth(cumulative, histogram, below + 1)
        out.append(low + (rank - below) * (high - low))
    return out
