"""Coverage fits: pass@k beyond the samples drawn, from the distribution of per-problem pass rates.

A problem solved with probability p by one sample is solved by k with probability 1 - (1 - p)^k; how
the mean over problems grows with k is decided by how the p_i are spread, and a Beta(a, b) spread
makes -log pass@k a power law in k for large k (Schaeffer et al., ICML 2025; Brown et al. 2024,
arXiv 2407.21787, fit coverage directly as an exponentiated power law). Under p ~ Beta(a, b)

    pass@k = 1 - E[(1 - p)^k] = 1 - B(a, b + k) / B(a, b),

and a, b are fitted by maximum likelihood of the pass counts c_i of n_i samples (beta-binomial):

    log L(a, b) = sum_i log B(a + c_i, b + n_i - c_i) - log B(a, b) + const,
    log B(a + c, b + m - c) - log B(a, b) = sum_{j<c} log(a + j) + sum_{j<m-c} log(b + j) - sum_{j<m} log(a + b + j).

The maximum is taken on a grid of log a and log b, so that the fits of all bootstrap resamples (the
report's paired problem resamples, intervals.py) are one matrix product of their weights with the
per-problem log-likelihoods.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from .intervals import Bootstrap, percentiles

GRID = np.exp(np.arange(math.log(1e-2), math.log(1e2) + 1e-9, 0.1))  # a and b: 0.01 to 100, 10% apart
EXTRAPOLATE = (2, 4, 8, 16)  # fitted pass@k at these multiples of the samples drawn
HELD_OUT = 4  # the held-out check fits the first n / HELD_OUT samples of each problem
CHUNK = 250  # bootstrap resamples per matrix product


def _log_rising(x: np.ndarray, ms: Sequence[int]) -> dict[int, np.ndarray]:
    """log Gamma(x + m) / Gamma(x) = sum_{j<m} log(x + j) for each m in ms, elementwise over x."""
    wanted, out, total = set(ms), {}, np.zeros_like(x)
    for j in range(max(wanted) + 1):
        if j in wanted:
            out[j] = total.copy()
        total += np.log(x + j)
    return out


def log_likelihoods(counts: Sequence[tuple[int, int]]) -> np.ndarray:
    """Per problem (n_i samples, c_i passed), its beta-binomial log-likelihood (less its constant) at
    every (a, b) of the grid: [problems, len(GRID) ** 2], a major."""
    a, b = np.meshgrid(GRID, GRID, indexing="ij")
    a, b = a.ravel(), b.ravel()
    ra = _log_rising(a, [c for _, c in counts])
    rb = _log_rising(b, [n - c for n, c in counts])
    rab = _log_rising(a + b, [n for n, _ in counts])
    return np.stack([ra[c] + rb[n - c] - rab[n] for n, c in counts])


def fit_beta(counts: Sequence[tuple[int, int]], weights: Optional[np.ndarray] = None) -> np.ndarray:
    """The maximum-likelihood (a, b) of the pass counts: [2], or with `weights` (resamples x problems)
    one fit per resample: [resamples, 2]."""
    pairs, which = np.unique(np.asarray(counts, dtype=np.int64).reshape(-1, 2), axis=0, return_inverse=True)
    ll = log_likelihoods([(int(n), int(c)) for n, c in pairs])  # problems with equal counts share a row
    w = np.full((1, len(counts)), 1.0 / len(counts)) if weights is None else weights
    w = w @ (which.ravel()[:, None] == np.arange(len(pairs))[None, :])  # resamples x distinct counts
    best = np.concatenate([np.argmax(w[i:i + CHUNK] @ ll, axis=1) for i in range(0, len(w), CHUNK)])
    fits = np.stack([GRID[best // len(GRID)], GRID[best % len(GRID)]], axis=1)
    return fits[0] if weights is None else fits


def beta_pass_at_k(a: float, b: float, k: int) -> float:
    """1 - B(a, b + k) / B(a, b): mean pass@k over problems whose pass rates are Beta(a, b)."""
    return 1.0 - math.exp(math.lgamma(b + k) - math.lgamma(a + b + k) - math.lgamma(b) + math.lgamma(a + b))


def coverage(counts: Sequence[tuple[int, int]], first: Sequence[tuple[int, int]], measured: dict[int, float],
             boot: Bootstrap) -> dict:
    """One model's fit: (a, b) with 95% intervals; fitted pass@k at the measured k and, marked
    extrapolated, at EXTRAPOLATE x n with intervals (every resample refitted); and the held-out check:
    a fit of `first` (each problem's counts among its first n / HELD_OUT samples) against the pass@k
    `measured` from all n, at the measured k above n / HELD_OUT."""
    n = min(m for m, _ in counts)
    a, b = fit_beta(counts)
    fits = fit_beta(counts, boot.weights)
    out = {"distribution": "beta", "a": float(a), "b": float(b),
           "a_ci95": percentiles(fits[:, 0]), "b_ci95": percentiles(fits[:, 1]),
           "fitted": {str(k): beta_pass_at_k(a, b, k) for k in measured}, "extrapolated": {}}
    for k in (x * n for x in EXTRAPOLATE):
        out["extrapolated"][str(k)] = {"pass": beta_pass_at_k(a, b, k),
                                       "pass_ci95": percentiles(np.array([beta_pass_at_k(*f, k) for f in fits]))}
    m = min(m for m, _ in first)
    held = {k: v for k, v in measured.items() if k > m}
    if held:
        a, b = fit_beta(first)
        errors = {k: beta_pass_at_k(a, b, k) - v for k, v in held.items()}
        out["held_out"] = {"fit_samples": m, "error": {str(k): e for k, e in errors.items()},
                           "mean_abs_error": float(np.mean(np.abs(list(errors.values()))))}
    return out
