"""Per-problem scores computed from n samples: pass@k, rank-score@k, and their means over problems.

Pure arithmetic on pass/fail flags and ranking scores; running programs and models lives elsewhere.
"""
from __future__ import annotations

from typing import Optional, Sequence

from ..errors import InvalidInput


def parse_ks(text: str, n: Optional[int] = None) -> list[int]:
    """--k: comma-separated k for pass@k, sorted, each >= 1 (and <= n, the samples per problem,
    where that is known before the samples are)."""
    try:
        ks = sorted({int(k) for k in text.split(",")})
    except ValueError:
        raise InvalidInput(f"--k {text!r} is invalid: give comma-separated integers") from None
    for k in ks:
        if k < 1 or (n is not None and k > n):
            allowed = ("every k must be >= 1" if n is None else
                       f"must be between 1 and n={n} (the samples drawn per problem)")
            raise InvalidInput(f"k={k} is invalid: {allowed}")
    return ks


def _check_k(n: int, k: int) -> None:
    if not 1 <= k <= n:
        raise InvalidInput(f"k={k} is invalid: must be between 1 and the number of samples n={n}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c pass (Chen et al. 2021, Eq. 1):

        pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n - c + 1}^{n} (1 - k / i)

    The product form (their Figure 3) avoids the huge binomials.
    """
    _check_k(n, k)
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def pass_at_k_per_task(counts: Sequence[tuple[int, int]], k: int) -> list[float]:
    """pass@k of each task from its (samples, passed) counts; a benchmark's pass@k is their mean."""
    return [pass_at_k(n, c, k) for n, c in counts]


def rank_score_at_k(scores: Sequence, passed: Sequence[bool], k: int) -> float:
    """Expected pass of the top-ranked sample among k drawn without replacement from the n samples
    (Hassid et al. 2024, Eq. 4). With the samples sorted by score, best first (ties: lower sample
    position first; scores may be tuples, compared in order), sample i (1-based) is the top of a
    random k-subset with probability

        C(n - i, k - 1) / C(n, k),

    computed as a running product: w_1 = k / n, w_{i+1} = w_i (n - i - k + 1) / (n - i).
    """
    n = len(scores)
    if len(passed) != n:
        raise ValueError(f"{n} scores but {len(passed)} pass flags")
    _check_k(n, k)
    order = sorted(range(n), key=scores.__getitem__, reverse=True)  # stable: ties keep their order
    total, weight = 0.0, k / n
    for i, j in enumerate(order, start=1):
        if i > n - k + 1:
            break
        total += weight * bool(passed[j])
        if i < n:
            weight *= (n - i - k + 1) / (n - i)
    return total

