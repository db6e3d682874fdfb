"""`budget-sampler plan` on the real models' config.json copies in bench/configs (no weights)."""
import json
from pathlib import Path

import pytest
import torch

from budget_sampler.cli import main
from budget_sampler.plan import plan

CONFIGS = Path(__file__).resolve().parents[2] / "bench" / "configs"


@pytest.mark.parametrize("name", ["codellama-7b", "codellama-13b", "codellama-34b", "qwen2.5-coder-7b",
                                  "qwen3-coder-30b-a3b", "mixtral-8x7b", "gemma-2-9b", "gemma-3-12b", "phi-4",
                                  "granite-3.1-8b"])
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


def test_windowed_layers_count_their_window_only():
    """Gemma 2 9B (every other layer attends to the last 4096 positions): FLOPs against a count of the
    keys each position sees, and a decode step's bytes (prompt 5000, 16 samples at suffix 100: a
    window layer reads the prompt's last 3996 positions and each suffix)."""
    from budget_sampler.models import load_hf_config
    from budget_sampler.models.shape import ModelShape
    from budget_sampler.plan import decode_step_bytes
    config = load_hf_config(CONFIGS / "gemma-2-9b")
    shape = ModelShape.from_config(config)
    assert shape.layer_windows == (4096, None) * 21

    def flops(positions):  # 2 x matmul parameters per token, 4 x width per key seen per layer
        keys = sum(min(t + 1, w or t + 1) for t in positions for w in shape.layer_windows)
        return 2.0 * shape.matmul_parameters * len(positions) + 4.0 * shape.attention_width * keys

    assert shape.prefill_flops(5000) == pytest.approx(flops(range(5000)), rel=1e-12)
    assert shape.decode_flops(5000, 300) == pytest.approx(flops(range(5000, 5300)), rel=1e-12)
    per_layer_token = 2 * 8 * 256 * 2  # K and V, 8 KV heads x 256, bf16
    kv = per_layer_token * (21 * (5000 + 16 * 100) + 21 * (3996 + 16 * 100))
    want = 2 * shape.matmul_parameters + kv + 2 * 16 * 256000 * 2
    assert decode_step_bytes(config, torch.bfloat16, 16, 5000, 100) == want


@pytest.mark.parametrize("name, experts, top_k, width, paper", [
    ("qwen3-coder-30b-a3b", 128, 8, 768, 7.787e11),
    ("mixtral-8x7b", 8, 2, 14336, 3.264e12),
])
def test_mixture_of_experts_costs(name, experts, top_k, width, paper):
    """FLOPs count the active matmul parameters (transformers' model less the embedding and the experts
    outside the top-k); weight memory every expert; a step's bytes the experts B tokens touch."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from budget_sampler.models.shape import PAPER_TOKENS, ModelShape
    from budget_sampler.plan import decode_step_bytes
    config = AutoConfig.from_pretrained(CONFIGS / name)
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(config)
    layers, hidden = config.num_hidden_layers, config.hidden_size
    idle = layers * (experts - top_k) * 3 * hidden * width
    matmul = sum(t.numel() for n, t in hf.named_parameters() if "embed_tokens" not in n)
    shape = ModelShape.from_config(config)
    assert shape.active_matmul_parameters == matmul - idle
    assert shape.paper_flops() == 2 * (matmul - idle) * PAPER_TOKENS == pytest.approx(paper, rel=1e-3)
    for batch in (1, 64):
        touched = experts * (1 - (1 - top_k / experts) ** batch)
        weights = int(matmul - layers * (experts - touched) * 3 * hidden * width) * 2
        kv = 2 * config.num_key_value_heads * 128 * layers * 2 * (100 + batch * 10)
        logits = 2 * batch * config.vocab_size * 2
        assert decode_step_bytes(config, torch.bfloat16, batch, 100, 10) == weights + kv + logits
    p = plan(CONFIGS / name, 80 * 10 ** 9, torch.bfloat16, 300, 150, 512, tensor_parallel=1 if experts > 8 else 2)
    assert p.weight_bytes == 2 * shape.parameters // (1 if experts > 8 else 2) and p.paged_samples >= 200


def test_cli(capsys):
    assert main(["plan", "--model", str(CONFIGS / "codellama-13b"), "--gpu-memory", "80GB"]) == 0
    out = capsys.readouterr().out
    assert "-> out of memory" in out and "n=200 fits at once" in out
    assert main(["plan", "--model", str(CONFIGS / "qwen2.5-coder-7b"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_type"] == "qwen2"
    assert main(["plan", "--model", str(CONFIGS / "qwen3-coder-30b-a3b")]) == 0
    assert "30.53B parameters (3.35B active per token)" in capsys.readouterr().out


@pytest.mark.parametrize("extra, match", [(["--gpu-memory", "0.9"], "not fractions"),
                                          (["--gpu-memory", "lots"], "memory size"),
                                          (["--mean-new-tokens", "600"], "exceeds --max-new-tokens"),
                                          (["--n", "0"], "--n=0")])
def test_bad_input_exits_2(extra, match, capsys):
    assert main(["plan", "--model", str(CONFIGS / "codellama-7b"), *extra]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1
