"""95% confidence intervals for means over problems, by a paired, seeded bootstrap.

The problems are a sample from a larger population of problems; the interval says how much a mean
over them (pass@k, rank-score@k) would move with other problems of the same kind. Every mean in a
report is resampled with the SAME resampled problem sets (one weight matrix for the whole report),
so two models' means are paired and their difference has its own, narrower, interval (Efron &
Tibshirani 1993, ch. 13: percentile interval).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95


class Bootstrap:
    """Resamples of `problems` problems with replacement, drawn once from a fixed seed: row r of
    `weights` counts how often each problem is in resample r (a multinomial draw), so the resampled
    means of any per-problem values are one matrix product."""

    def __init__(self, problems: int, resamples: int = RESAMPLES, seed: int = SEED):
        rng = np.random.default_rng(seed)
        self.weights = rng.multinomial(problems, np.full(problems, 1.0 / problems), size=resamples) / problems

    def means(self, values: Sequence[float]) -> np.ndarray:
        """The mean of per-problem `values` in each resample: [resamples]."""
        return self.weights @ np.asarray(values, dtype=float)

    def interval(self, values: Sequence[float]) -> list[float]:
        """Percentile interval [lo, hi] of the mean of per-problem `values`."""
        return percentiles(self.means(values))

    def difference(self, a: Sequence[float], b: Sequence[float]) -> list[float]:
        """Percentile interval of mean(a) - mean(b), a and b paired by problem."""
        return percentiles(self.means(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)))


def percentiles(means: np.ndarray) -> list[float]:
    """The 95% percentile interval [lo, hi] of a statistic's values over the resamples."""
    tail = (1 - LEVEL) / 2
    return [float(x) for x in np.quantile(means, [tail, 1 - tail])]
