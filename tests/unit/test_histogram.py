"""The duration histograms of the admin metrics (agentmarket.domain.histogram): buckets tile the
durations without gaps, a histogram's text decodes to its counts, and percentiles read from it
are within MAX_RELATIVE_ERROR of the exact `percentile_cont` (and exact below 64 ms)."""

from __future__ import annotations

import random

import pytest

from agentmarket.domain import histogram

FRACTIONS = (0.5, 0.95, 0.99)


def percentile_cont(values: list[int], fraction: float) -> float:
    """PostgreSQL's percentile_cont: the value at rank f·(n - 1), interpolated."""
    ordered = sorted(values)
    rank = fraction * (len(ordered) - 1)
    below = int(rank)
    if below + 1 >= len(ordered):
        return float(ordered[below])
    return ordered[below] + (rank - below) * (ordered[below + 1] - ordered[below])


def encode(values: list[int]) -> str:
    """A histogram's text for these durations, as the database's sum of cells writes it."""
    tally: list[int] = []
    for value in values:
        b = histogram.bucket(value)
        tally.extend([0] * (b + 1 - len(tally)))
        tally[b] += 1
    text = "".join(f"{count:0{histogram.DIGITS}d}" for count in reversed(tally)).lstrip("0")
    return text or "0"


def test_buckets_tile_the_durations_in_order() -> None:
    previous = -1
    for ms in range(0, 300_000):
        b = histogram.bucket(ms)
        low, high = histogram.bounds(b)
        assert low <= ms < high, ms
        assert b in (previous, previous + 1), ms
        previous = b
    for b in range(histogram.bucket(2**31 - 1)):
        assert histogram.bounds(b)[1] == histogram.bounds(b + 1)[0]


def test_a_bucket_is_at_most_a_32nd_of_its_lower_bound_wide() -> None:
    for b in range(histogram.bucket(2**31 - 1) + 1):
        low, high = histogram.bounds(b)
        if low < histogram.EXACT_BELOW:
            assert high - low == 1
        else:
            assert (high - low) / low <= histogram.MAX_RELATIVE_ERROR


def test_text_decodes_to_the_counts() -> None:
    values = [0, 1, 1, 63, 64, 64, 65, 100, 5000, 5001, 5100, 2**31 - 1]
    counts = histogram.counts(encode(values))
    assert sum(counts) == len(values)
    for value in set(values):
        assert counts[histogram.bucket(value)] == sum(
            1 for v in values if histogram.bucket(v) == histogram.bucket(value)
        )
    assert histogram.counts("0") == [0]
    assert histogram.percentiles(histogram.counts("0"), FRACTIONS) == [None, None, None]
    with pytest.raises(ValueError, match="non-negative whole number"):
        histogram.counts("-10")


def test_percentiles_below_64_ms_are_exact() -> None:
    values = [3, 7, 7, 12, 40, 41, 63, 0, 19]
    got = histogram.percentiles(histogram.counts(encode(values)), FRACTIONS)
    assert got == [percentile_cont(values, f) for f in FRACTIONS]
    single = histogram.percentiles(histogram.counts(encode([42])), FRACTIONS)
    assert single == [42.0, 42.0, 42.0]


@pytest.mark.parametrize("seed", range(6))
def test_percentiles_are_within_the_bound_of_the_exact_ones(seed: int) -> None:
    rng = random.Random(seed)  # noqa: S311 (test data, not secrets)
    size = rng.choice([1, 2, 5, 50, 2_000, 40_000])
    values = [int(rng.lognormvariate(7.3, 0.6)) + rng.randint(0, 3) for _ in range(size)]
    got = histogram.percentiles(histogram.counts(encode(values)), FRACTIONS)
    for fraction, estimate in zip(FRACTIONS, got, strict=True):
        exact = percentile_cont(values, fraction)
        assert estimate is not None
        assert abs(estimate - exact) <= exact * histogram.MAX_RELATIVE_ERROR, (fraction, size)
