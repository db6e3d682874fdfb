"""MBPP: rows in the dataset's own schema (tests/data/mbpp_rows.jsonl: tasks 2, 3, 4, 11, 12 as
published) become 3-shot prompts in Code Llama's format, and the sandbox judges the whole-program
completions as the reference does (setup code, then the asserts of test_list)."""
import json
import sys
from pathlib import Path

import pytest

from budget_sampler.cli import main
from budget_sampler.errors import InvalidInput
from budget_sampler.eval import mbpp
from budget_sampler.eval.execute import ExecutionPool, check_program, run_program
from budget_sampler.eval.tasks import load_benchmark

ROWS_PATH = Path(__file__).parents[1] / "data" / "mbpp_rows.jsonl"
ROWS = {r["task_id"]: r for r in map(json.loads, ROWS_PATH.read_text().splitlines())}
WRONG = {  # plausible but wrong: each fails one of its task's asserts
    11: "def remove_Occ(s, ch):\n    return s.replace(ch, '', 1)\n",
    12: "def sort_matrix(M):\n    return sorted(M, key=max)\n",
}


@pytest.fixture(scope="module")
def problems():
    return {p["task_id"]: p for p in load_benchmark(f"mbpp:{ROWS_PATH}").problems}


def test_only_the_test_problems_in_task_id_order(problems):
    bench = load_benchmark(f"mbpp:{ROWS_PATH}")
    assert [p["task_id"] for p in bench.problems] == ["MBPP/11", "MBPP/12"]  # 2, 3, 4 are shots
    assert bench.stop == ["[DONE]"] and bench.max_new_tokens == 256
    assert all(p["entry_point"] is None for p in bench.problems)


def test_bundled_shots_are_tasks_2_3_4_as_published():
    for shot, task_id in zip(mbpp.SHOTS, (2, 3, 4)):
        row = ROWS[task_id]
        assert shot == {"text": row["text"], "code": row["code"].replace("\r\n", "\n"),
                        "test_list": row["test_list"]}


def test_prompt_is_code_llamas_3_shot_format(problems):
    header = "You are an expert Python programmer, and here is your task: {} Your code should pass these tests:\n\n"
    shots = "".join(header.format(ROWS[t]["text"]) + "\n".join(ROWS[t]["test_list"]) + "\n[BEGIN]\n"
                    + ROWS[t]["code"].replace("\r\n", "\n") + "\n[DONE]\n" for t in (2, 3, 4))
    row = ROWS[11]
    assert problems["MBPP/11"]["prompt"] == (shots + header.format(row["text"]) + "\n".join(row["test_list"])
                                             + "\n[BEGIN]\n")
    assert problems["MBPP/11"]["test"] == "\n" + "\n".join(row["test_list"]) + "\n"


@pytest.mark.parametrize("task_id", [11, 12])
def test_reference_solutions_pass_and_wrong_ones_fail(problems, task_id):
    problem = problems[f"MBPP/{task_id}"]
    generated = ROWS[task_id]["code"] + "\n"  # as sampled: the code, then the newline before [DONE]
    assert run_program(check_program(problem, generated)) == {"passed": True, "result": "passed", "output": ""}
    wrong = run_program(check_program(problem, WRONG[task_id]))
    assert not wrong["passed"] and wrong["result"] == "failed: AssertionError"
    prose = run_program(check_program(problem, "The answer is to loop over the string.\n"))
    assert not prose["passed"] and "SyntaxError" in prose["result"]


def test_setup_code_runs_before_the_asserts(tmp_path):
    row = {**ROWS[12], "task_id": 13, "test_setup_code": "import math\nN = 3",
           "test_list": ["assert f() == N", "assert math.isclose(f(), 3.0)"]}
    path = tmp_path / "setup.jsonl"
    path.write_text(json.dumps(row) + "\n")
    [problem] = load_benchmark(f"mbpp:{path}").problems
    with ExecutionPool(workers=2) as pool:  # the evaluation path: results cached by program
        assert pool.submit(problem, "def f():\n    return 3\n").result()["passed"]
        assert pool.submit(problem, "def f():\n    return 4\n").result()["result"] == "failed: AssertionError"


@pytest.mark.parametrize("fmt", ["json-list", "json-lines", "parquet"])
def test_other_file_formats(tmp_path, fmt):
    rows = list(ROWS.values())
    if fmt == "parquet":
        pq = pytest.importorskip("pyarrow.parquet")
        import pyarrow
        path = tmp_path / "mbpp.parquet"
        pq.write_table(pyarrow.Table.from_pylist(rows), path)
    else:
        path = tmp_path / "mbpp.json"
        path.write_text(json.dumps(rows) if fmt == "json-list" else "".join(json.dumps(r) + "\n" for r in rows))
    assert [p["task_id"] for p in load_benchmark(f"mbpp:{path}").problems] == ["MBPP/11", "MBPP/12"]


@pytest.mark.parametrize("content, message", [
    (None, r"missing\.jsonl: no such file"),
    ('{"task_id": 11\n', r":1: not valid JSON"),
    (json.dumps({**ROWS[11], "test_list": []}), r"row 1 \(task_id 11\): 'test_list' must be a non-empty list"),
    (json.dumps({**ROWS[11], "task_id": "11"}), r"row 1 has no integer 'task_id'"),
    (json.dumps({k: v for k, v in ROWS[11].items() if k != "text"}), r"row 1 \(task_id 11\) has no 'text'"),
    (json.dumps(ROWS[2]), r"no MBPP test problems \(task ids 11-510\)"),
])
def test_bad_files_are_one_clear_error(tmp_path, content, message):
    path = tmp_path / "missing.jsonl"
    if content is not None:
        path.write_text(content + "\n")
    with pytest.raises(InvalidInput, match=message):
        load_benchmark(f"mbpp:{path}")


def test_hub_without_datasets_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(InvalidInput, match=r"pip install 'budget-sampler\[datasets\]'.*mbpp:PATH"):
        load_benchmark("mbpp")


def test_cli_bad_file_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["eval", "--benchmark", f"mbpp:{tmp_path / 'nope.parquet'}", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.parquet: no such file" in err[0]
    assert not out.exists()
