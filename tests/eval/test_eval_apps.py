"""APPS: rows in codeparrot/apps' schema (tests/data/apps_rows.jsonl: standard-input and call-based
problems written in that schema, with a correct solution each, and one row without test cases)
become prompts in the format of APPS' generation code, and the sandboxed judge agrees with APPS'
testing_util: known-correct solutions pass, wrong, slow and crashing ones fail, and its lenient
output comparisons hold."""
import json
from pathlib import Path

import pytest

from budget_sampler.cli import main
from budget_sampler.errors import InvalidInput
from budget_sampler.eval import apps
from budget_sampler.eval.apps_judge import call_output_matches, stdout_matches
from budget_sampler.eval.execute import ExecutionPool
from budget_sampler.eval.tasks import load_benchmark

ROWS_PATH = Path(__file__).parents[1] / "data" / "apps_rows.jsonl"
ROWS = {r["problem_id"]: r for r in map(json.loads, ROWS_PATH.read_text().splitlines())}


@pytest.fixture(scope="module")
def problems():
    return {p["task_id"]: p for p in load_benchmark(f"apps:{ROWS_PATH}").problems}


@pytest.fixture(scope="module")
def pool():
    with ExecutionPool(workers=2, timeout=1.0) as pool:
        yield pool


def test_problems_with_test_cases_in_file_order(problems):
    bench = load_benchmark(f"apps:{ROWS_PATH}")
    assert list(problems) == ["APPS/0", "APPS/1", "APPS/2", "APPS/3", "APPS/4"]  # 5 has no test cases
    assert bench.stop == ["\nQUESTION", "\n---", "\nANSWER"] and bench.max_new_tokens == 256
    assert [p["task_id"] for p in load_benchmark(f"apps-interview:{ROWS_PATH}").problems] == ["APPS/1", "APPS/4"]
    assert [p["task_id"] for p in load_benchmark(f"apps-competition:{ROWS_PATH}").problems] == ["APPS/2"]


def test_prompt_is_apps_format(problems):
    stdin_row, call_row = ROWS[0], ROWS[3]
    assert problems["APPS/0"]["prompt"] == ("\nQUESTION:\n" + stdin_row["question"]
                                            + "\nUse Standard Input format\nANSWER:\n")
    assert problems["APPS/3"]["prompt"] == ("\nQUESTION:\n" + call_row["question"] + "\n" + call_row["starter_code"]
                                            + "\nUse Call-Based format\nANSWER:\n")


@pytest.mark.parametrize("problem_id", [0, 1, 2, 3, 4])
def test_reference_solutions_pass(problems, pool, problem_id):
    solution = json.loads(ROWS[problem_id]["solutions"])[0]
    assert pool.submit(problems[f"APPS/{problem_id}"], solution).result()["result"] == "passed"


@pytest.mark.parametrize("task_id, completion, result", [
    ("APPS/0", "print(3)\n", "failed: AssertionError: test 2 of 3: wrong answer"),
    ("APPS/0", "while True:\n    pass\n", "failed: AssertionError: test 1 of 3: timed out after 1 s"),
    ("APPS/0", "try:\n    while True:\n        pass\nexcept BaseException:\n    print(3)\n",
     "failed: AssertionError: test 1 of 3: timed out after 1 s"),  # swallowing the alarm does not help
    ("APPS/0", "x = int('z')\n", "failed: ValueError: invalid literal for int() with base 10: 'z'"),
    ("APPS/0", "The answer is a + b.\n", "failed: SyntaxError: invalid syntax"),
    ("APPS/3", "def count_vowels(s):\n    return len(s)\n", "failed: AssertionError: test 1 of 3: wrong answer"),
    ("APPS/3", "def count(s):\n    return 0\n", "failed: KeyError: 'count_vowels'"),
])
def test_wrong_slow_and_broken_solutions_fail(problems, pool, task_id, completion, result):
    assert pool.submit(problems[task_id], completion).result()["result"] == result


@pytest.mark.parametrize("completion", [
    "a, b = map(int, input().split())\nprint(a + b)\nexit()\n",  # exiting after the answer is finishing
    "print(sum(map(int, open(0).read().split())))\n",  # standard input as a file
    "import sys\nprint(sum(map(int, sys.stdin.buffer.readline().split())))\n",
    "import sys, threading\ndef main():\n    print(sum(map(int, input().split())))\n"
    "threading.Thread(target=main).start()\n",  # the answer printed by a thread
])
def test_standard_input_idioms_pass(problems, pool, completion):
    assert pool.submit(problems["APPS/0"], completion).result()["result"] == "passed"


def test_apps_tolerances_in_the_sandbox(problems, pool):
    mean = "n = int(input())\na = list(map(int, input().split()))\nprint(sum(a) / n)\n"  # 2.3333333333333335
    assert pool.submit(problems["APPS/1"], mean).result()["passed"]
    as_tuple = ("class Solution:\n    def twoSum(self, nums, target):\n"
                "        return (0, 1) if target == 9 else (1, 2)\n")  # right for 2 tests, as a tuple
    assert pool.submit(problems["APPS/4"], as_tuple).result()["result"] == \
        "failed: AssertionError: test 3 of 3: wrong answer"
    uses_header = "def count_vowels(s):\n    return sum(Counter(s.lower())[c] for c in 'aeiou')\n"  # APPS' imports
    assert pool.submit(problems["APPS/3"], uses_header).result()["passed"]


@pytest.mark.parametrize("output, expected, same", [
    ("3\n", "3\n", True),
    ("3   \n\n", "  3\n", True),                       # surrounding whitespace
    ("1 2 \n3\n", "1 2\n 3\n", True),                  # each line stripped
    ("1\n\n2\n", "1\n2\n", True),                      # empty lines dropped
    ("2.3333333333333335\n", "2.3333333333\n", True),  # numbers within allclose's tolerance
    ("2.34\n", "2.3333333333\n", False),
    ("2 1\n3\n", "3\n1 2\n", True),                    # APPS: lines and tokens as sets
    ("0.12341 7\n", "7 0.12339\n", True),              # APPS: rounded to 3 decimals, as sets
    ("4\n", "3\n", False),
    ("YES\n", "NO\n", False),
    ("", "0\n", False),
    ("1\n2\n", ["1", "2"], True),                      # expected output given as lines
])
def test_stdout_comparison_is_apps(output, expected, same):
    assert stdout_matches(output, expected) is same


@pytest.mark.parametrize("output, expected, same", [
    (2, [2], True),                  # the expected output wrapped in a list of one
    (2, 2, True),
    ((0, 1), [0, 1], True),          # a tuple is a list
    ([(1, 2), (3, 4)], [[[1, 2], [3, 4]]], True),
    ([0, 1], [[1, 0]], False),
    ("2", [2], False),
    (None, [0], False),
])
def test_call_comparison_is_apps(output, expected, same):
    assert call_output_matches(output, expected) is same


def test_hub_copy_is_the_repositorys_test_file(monkeypatch):
    import huggingface_hub
    calls = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda *args, **kwargs: calls.append((args, kwargs)) or str(ROWS_PATH))
    assert len(load_benchmark("apps-introductory").problems) == 2
    assert calls == [(("codeparrot/apps", "test.jsonl"), {"repo_type": "dataset"})]

    def offline(*args, **kwargs):
        raise OSError("cannot reach the Hub")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(InvalidInput, match=r"codeparrot/apps.*cannot reach the Hub.*apps:PATH"):
        load_benchmark("apps")


@pytest.mark.parametrize("change, message", [
    (None, r"missing\.jsonl: no such file"),
    ({"input_output": "{not json"}, r"row 1 \(problem_id 0\): 'input_output' is not a JSON string"),
    ({"input_output": json.dumps({"inputs": ["1"], "outputs": []})}, r"lists 'inputs' and 'outputs' of one length"),
    ({"problem_id": "0"}, r"row 1 has no integer 'problem_id'"),
    ({"question": ""}, r"row 1 \(problem_id 0\) has no 'question'"),
    ({"input_output": ""}, r"no APPS problems with test cases in it"),
])
def test_bad_files_are_one_clear_error(tmp_path, change, message):
    path = tmp_path / "missing.jsonl"
    if change is not None:
        path.write_text(json.dumps({**ROWS[0], **change}) + "\n")
    with pytest.raises(InvalidInput, match=message):
        load_benchmark(f"apps:{path}")


def test_cli_bad_file_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["eval", "--benchmark", f"apps-interview:{tmp_path / 'nope.json'}", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.json: no such file" in err[0]
    assert not out.exists()


def test_judge_program_is_self_contained(problems):
    """The program carries the judge's source: nothing of this package is imported inside."""
    program = apps.judge_program(problems["APPS/0"], "print(3)\n", 2.0)
    assert "import sampler" not in program and "from budget_sampler" not in program
    assert program.endswith(f"judge('print(3)\\n', {problems['APPS/0']['test']!r}, 2.0)\n")
