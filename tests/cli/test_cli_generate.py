"""`budget-sampler generate` end to end, and its error contract: one line, exit 2, no partial file."""
import json
import subprocess
import sys

import pytest

from budget_sampler.cli import main


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "budget_sampler.cli", *args], capture_output=True, text=True,
                          timeout=300, **kw)


def test_generate_writes_one_line_per_sample(tiny_llama, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "def add(a, b):"}\n{"prompt": "x = 1"}\n')
    out = tmp_path / "out.jsonl"
    r = run("generate", "--model", str(tiny_llama), "--prompts", str(prompts), "-n", "3", "--max-new-tokens", "5",
            "--seed", "1", "--stop", "\n\n", "--temperature", "0.8", "--top-p", "0.9", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["prompt_index"], r["sample_index"]) for r in rows] == [(p, s) for p in range(2) for s in range(3)]
    assert all(set(r) == {"prompt_index", "sample_index", "text", "num_tokens", "logprob", "finish_reason"}
               for r in rows)
    assert "tok/s" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["-n", "0"], "n=0"),
    (["--temperature", "-1"], "temperature"),
    (["--top-p", "0"], "top_p"),
    (["--top-k", "-2"], "top_k"),
    (["--min-p", "1"], "min_p"),
    (["--max-new-tokens", "0"], "max_new_tokens"),
    (["--max-new-tokens", "100000"], "context"),
    (["--stop", ""], "stop"),
])
def test_bad_input_exit_2_no_file(tiny_llama, tmp_path, capsys, args, message):
    out = tmp_path / "out.jsonl"
    assert main(["generate", "--model", str(tiny_llama), "--prompt", "x", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_bad_model_and_prompt_files(tmp_path):
    out = tmp_path / "out.jsonl"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{oops\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for args, message in ((["--model", str(tmp_path / "nope"), "--prompt", "x"], "not found"),
                          (["--model", str(tmp_path), "--prompt", "x"], "no config.json"),
                          (["--model", "toy-xs", "--prompts", str(bad)], "bad.jsonl:2"),
                          (["--model", "toy-xs", "--prompts", str(empty)], "no prompts"),
                          (["--model", "toy-xs", "--prompts", str(tmp_path / "missing.jsonl")], "no such file")):
        r = run("generate", *args, "--out", str(out))
        assert r.returncode == 2, r.stderr
        assert message in r.stderr and "Traceback" not in r.stderr
        assert not out.exists()
