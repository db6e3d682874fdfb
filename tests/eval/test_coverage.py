"""Coverage fits: the Beta fit of per-problem pass counts recovers a known Beta from synthetic draws,
and its extrapolated pass@k is the closed form's."""
import numpy as np
import pytest

from budget_sampler.eval.coverage import beta_pass_at_k, coverage, fit_beta
from budget_sampler.eval.intervals import Bootstrap
from budget_sampler.eval.metrics import pass_at_k_per_task


def test_beta_pass_at_k_closed_form():
    for k in (1, 5, 1000):  # Beta(1, 1): 1 - 1 / (k + 1)
        assert beta_pass_at_k(1.0, 1.0, k) == pytest.approx(k / (k + 1))
    p = np.random.default_rng(0).beta(0.5, 3.0, size=400_000)
    assert beta_pass_at_k(0.5, 3.0, 10) == pytest.approx(np.mean(1 - (1 - p) ** 10), abs=2e-3)


@pytest.mark.parametrize("a, b", [(0.3, 2.0), (2.0, 0.5)])
def test_the_fit_recovers_a_known_beta(a, b):
    rng = np.random.default_rng(1)
    p = rng.beta(a, b, size=3000)
    counts = [(40, int(c)) for c in rng.binomial(40, p)]
    fit_a, fit_b = fit_beta(counts)
    assert fit_a == pytest.approx(a, rel=0.15) and fit_b == pytest.approx(b, rel=0.15)


def test_extrapolation_and_held_out_check():
    rng = np.random.default_rng(2)
    a, b, n = 0.3, 2.0, 16
    p = rng.beta(a, b, size=300)
    draws = rng.random((300, n)) < p[:, None]
    counts = [(n, int(d.sum())) for d in draws]
    first = [(n // 4, int(d[:n // 4].sum())) for d in draws]
    measured = {k: float(np.mean(pass_at_k_per_task(counts, k))) for k in (1, 2, 4, 8, 16)}
    fit = coverage(counts, first, measured, Bootstrap(300, resamples=200))
    assert list(fit["extrapolated"]) == ["32", "64", "128", "256"]
    for k, cell in fit["extrapolated"].items():  # the truth lies in the interval
        assert cell["pass_ci95"][0] <= beta_pass_at_k(a, b, int(k)) <= cell["pass_ci95"][1]
        assert cell["pass_ci95"][0] <= cell["pass"] <= cell["pass_ci95"][1]
    assert all(abs(fit["fitted"][str(k)] - v) < 0.03 for k, v in measured.items())
    held = fit["held_out"]
    assert held["fit_samples"] == 4 and list(held["error"]) == ["8", "16"] and held["mean_abs_error"] < 0.05
