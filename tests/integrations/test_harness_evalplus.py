"""evalplus's own command lines, offline, on a local HumanEval-format dataset
(HUMANEVAL_OVERRIDE_PATH): `evalplus.codegen --backend openai --base_url` against the server (chat
completions; evalplus always asks for 768 new tokens, hence --clip-max-tokens), then
`evalplus.evaluate` scores what it wrote. Both run as subprocesses with a timeout, because
evalplus's request loop retries a failing request forever."""
import json
import os
import subprocess
import sys

from budget_sampler import Sampler
from budget_sampler.server.protocol import Limits

from serving import serving

PROBLEMS = [
    {"task_id": "HumanEval/0", "prompt": "def add(a, b):\n    \"\"\"Return a + b.\"\"\"\n",
     "entry_point": "add", "canonical_solution": "    return a + b\n",
     "base_input": [[1, 2], [3, 4]], "plus_input": [[-1, 1]], "atol": 0, "contract": ""},
    {"task_id": "HumanEval/1", "prompt": "def neg(x):\n    \"\"\"Return -x.\"\"\"\n",
     "entry_point": "neg", "canonical_solution": "    return -x\n",
     "base_input": [[1], [0]], "plus_input": [[-5]], "atol": 0, "contract": ""},
]
N_SAMPLES = 2


def evalplus(module: str, *args, env: dict, cwd) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", module, *map(str, args)], env=env, cwd=cwd,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


def test_evalplus_codegen_through_the_server_then_evaluate(tiny_chat, tmp_path):
    dataset = tmp_path / "HumanEvalLocal.jsonl"
    dataset.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    env = {**os.environ, "HUMANEVAL_OVERRIDE_PATH": str(dataset), "OPENAI_API_KEY": "unused",
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    sampler = Sampler.from_pretrained(str(tiny_chat), max_batch_size=16)
    with serving(sampler, Limits(clip_max_tokens=True), model_id="tiny") as url:
        evalplus("evalplus.codegen", "--model", "tiny", "--backend", "openai", "--base_url",
                 f"{url}/v1", "--dataset", "humaneval", "--root", tmp_path / "results",
                 "--n_samples", N_SAMPLES, "--temperature", 0.8, env=env, cwd=tmp_path)
    samples = tmp_path / "results" / "humaneval" / "tiny_openai_temp_0.8.jsonl"
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert sorted(r["task_id"] for r in rows) == sorted([p["task_id"] for p in PROBLEMS] * N_SAMPLES)
    evalplus("evalplus.evaluate", "--dataset", "humaneval", "--samples", samples, "--parallel", 2,
             env=env, cwd=tmp_path)
    results = json.loads((tmp_path / "results" / "humaneval" /
                          "tiny_openai_temp_0.8_eval_results.json").read_text())
    assert sorted(results["eval"]) == sorted(p["task_id"] for p in PROBLEMS)
    assert all(len(results["eval"][p["task_id"]]) == N_SAMPLES for p in PROBLEMS)
