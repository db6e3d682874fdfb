"""`budget-sampler plan` on the real models' config.json copies in bench/configs (no weights)."""
import json
from pathlib import Path

import pytest
import torch

from budget_sampler.cli import main
from budget_sampler.plan import plan

CONFIGS = Path(__file__).resolve().parents[2] / "bench" / "configs"


@pytest.mark.parametrize("name", ["codellama-7b", "codellama-13b", "codellama-34b", "qwen2.5-coder-7b"])
def test_parameters_match_transformers(name):
    from transformers import AutoConfig, AutoModelForCausalLM
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(CONFIGS / name))
    p = plan(CONFIGS / name, 80 * 10 ** 9, torch.bfloat16, 300, 150, 512)
    assert p.parameters == sum(t.numel() for t in hf.parameters())
    assert p.weight_bytes == 2 * p.parameters


def test_paper_setting_fits_with_paging_not_static():
    """CodeLlama-7B on an 80 GB GPU, n=200, 512 max new tokens: 256 static slots of 512 tokens
    (0.5 MiB each per token) need 68.9 GB of the 59.9 GB left; paged KV holds all 200 samples."""
    p = plan(CONFIGS / "codellama-7b", 80 * 10 ** 9, torch.bfloat16, 300, 150, 512)
    assert p.kv_bytes_per_token == 32 * 32 * 128 * 2 * 2 == 2 ** 19
    assert p.static_bytes_needed > p.kv_cache_bytes
    assert p.paged_samples >= 200 and p.batch == 200
    assert p.step_seconds == pytest.approx(p.step_bytes / 3.35e12)
    tp = plan(CONFIGS / "codellama-7b", 80 * 10 ** 9, torch.bfloat16, 300, 150, 512, tensor_parallel=2)
    assert tp.weight_bytes == p.weight_bytes // 2 and tp.kv_bytes_per_token == p.kv_bytes_per_token // 2


def test_cli(capsys):
    assert main(["plan", "--model", str(CONFIGS / "codellama-13b"), "--gpu-memory", "80GB"]) == 0
    out = capsys.readouterr().out
    assert "-> out of memory" in out and "n=200 fits at once" in out
    assert main(["plan", "--model", str(CONFIGS / "qwen2.5-coder-7b"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_type"] == "qwen2"


@pytest.mark.parametrize("extra, match", [(["--gpu-memory", "0.9"], "not fractions"),
                                          (["--gpu-memory", "lots"], "memory size"),
                                          (["--mean-new-tokens", "600"], "exceeds --max-new-tokens"),
                                          (["--n", "0"], "--n=0")])
def test_bad_input_exits_2(extra, match, capsys):
    assert main(["plan", "--model", str(CONFIGS / "codellama-7b"), *extra]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1
