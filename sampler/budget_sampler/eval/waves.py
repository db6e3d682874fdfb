"""The until-pass schedule: which sample indices of a problem to draw next, and the pass@k that the
index of its first passing sample estimates.

A problem's samples are released in waves of sample indices [0, 1), [1, 2), [2, 4), [4, 8), ...
(doubling, cut at n): a problem solved by its first sample costs one sample, an unsolved one all n,
in about log2(n) + 1 rounds; the eval loop interleaves the waves of all problems so that the engine
batch stays full. A wave starts only once every sample of the one before has been tested and none
passed, and a problem stops once its first passing index is known, i.e. every lower index was
tested and failed. So the indices drawn are a prefix of 0 .. n-1 (plus samples above the first
pass that finished before it was known), and sample i is the full run's sample i (the engine keys
randomness by (seed, sample index, step)).
"""
from __future__ import annotations

from typing import Container, Iterable, Optional


def waves(n: int) -> list[range]:
    """[0, 1), [1, 2), [2, 4), [4, 8), ... covering 0 .. n-1."""
    bounds = [0] + [2 ** j for j in range(n.bit_length()) if 2 ** j < n] + [n]
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


def next_wave(drawn: Container[int], passed: Iterable[int], n: int) -> list[int]:
    """The indices to draw next: the undrawn ones of the first wave that has any below the lowest
    passing index; [] once every index below it (or, with no pass, every index) is drawn."""
    stop = min(passed, default=n)
    for wave in waves(n):
        missing = [i for i in wave if i < stop and i not in drawn]
        if missing:
            return missing
    return []


def first_pass(results: dict[int, bool]) -> Optional[int]:
    """The lowest sample index that passed, if every lower index was tested and failed; else None."""
    i = 0
    while i in results:
        if results[i]:
            return i
        i += 1
    return None


def pass_at_k_from_first_pass(first: Optional[int], k: int) -> float:
    """Whether the first passing sample is among the first k (first: 0-based index, None: none of
    the n passed). With i.i.d. samples of pass rate p, the failures before the first pass X are
    geometric, P(X >= k) = (1 - p)^k, so 1[X < k] is an unbiased estimate of pass@k = 1 - (1 - p)^k
    for every k <= n (the UMVUE: X censored at n is complete sufficient). Noisier than Chen et
    al.'s estimator on n samples, which is the price of drawing fewer."""
    return float(first is not None and first < k)
