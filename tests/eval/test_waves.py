"""The until-pass schedule and its pass@k estimate."""
import pytest

from budget_sampler.eval.waves import first_pass, next_wave, pass_at_k_from_first_pass, waves


def test_waves_double_and_cover_n():
    assert waves(32) == [range(0, 1), range(1, 2), range(2, 4), range(4, 8), range(8, 16), range(16, 32)]
    assert waves(6) == [range(0, 1), range(1, 2), range(2, 4), range(4, 6)] and waves(1) == [range(0, 1)]


def test_next_wave_stops_once_the_first_pass_is_known():
    assert next_wave(set(), [], 8) == [0]
    assert next_wave({0, 1}, [], 8) == [2, 3]
    assert next_wave({0, 1, 3}, [], 8) == [2]          # resumed: only the missing index of the wave
    assert next_wave({0, 1, 2, 3, 5}, [5], 8) == [4]   # a pass at 5 is not the first until 4 failed
    assert next_wave({0, 1, 2, 3, 4, 5}, [5], 8) == []
    assert next_wave(set(range(8)), [], 8) == []


def test_first_pass_needs_every_lower_index_tested():
    assert first_pass({0: False, 1: True}) == 1
    assert first_pass({0: False, 2: True}) is None
    assert first_pass({0: False, 1: False}) is None


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_the_first_pass_estimate_is_unbiased(p):
    """E[1[first < k]] = sum over first = i < k of (1 - p)^i p = 1 - (1 - p)^k = pass@k."""
    n = 8
    for k in (1, 3, 8):
        expected = sum((1 - p) ** i * p * pass_at_k_from_first_pass(i, k) for i in range(n)) \
            + (1 - p) ** n * pass_at_k_from_first_pass(None, k)
        assert expected == pytest.approx(1 - (1 - p) ** k)
