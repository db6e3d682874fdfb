"""The bootstrap over problems: against the normal approximation, degenerate cases, seeds, pairing."""
import math

import numpy as np
import pytest

from budget_sampler.eval.intervals import Bootstrap
from budget_sampler.eval.report import _winners


def test_mean_of_bernoulli_outcomes_matches_the_normal_approximation():
    problems, passed = 400, 120
    values = [1.0] * passed + [0.0] * (problems - passed)
    p = passed / problems
    half = 1.959964 * math.sqrt(p * (1 - p) / problems)  # the Wald interval, 0.0449
    lo, hi = Bootstrap(problems).interval(values)
    assert lo == pytest.approx(p - half, abs=0.006) and hi == pytest.approx(p + half, abs=0.006)


def test_equal_problems_give_a_zero_width_interval():
    assert Bootstrap(37).interval([0.25] * 37) == pytest.approx([0.25, 0.25])
    a = np.linspace(0, 1, 37)
    assert Bootstrap(37).difference(a, a) == [0.0, 0.0]


def test_the_same_seed_gives_the_same_intervals():
    values = np.random.default_rng(5).random(60)
    assert Bootstrap(60).interval(values) == Bootstrap(60).interval(values)
    assert Bootstrap(60, seed=1).interval(values) != Bootstrap(60).interval(values)


def test_a_winner_only_when_the_paired_difference_excludes_zero():
    rng = np.random.default_rng(0)
    base = (rng.random(60) < 0.4).astype(float)
    better = np.maximum(base, rng.random(60) < 0.5)  # solves all base solves and more: clearly better
    slightly = base.copy()
    slightly[np.flatnonzero(base == 0)[:2]] = 1  # better on two problems only: 13% of resamples miss both
    boot = Bootstrap(60)
    assert _winners({"a": base, "b": better, "c": None}, boot) == ["b"]
    assert _winners({"a": base, "b": slightly}, boot) == ["b", "a"]
    assert _winners({"a": base, "b": base.copy()}, boot) == ["a", "b"]  # equal means: the first listed leads
