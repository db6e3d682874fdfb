"""Checkpoint resolution and loading: hub ids through a Hugging Face cache the test builds (offline,
and with the hub unreachable), streamed shard-by-shard loading, and clear errors for what does not fit."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from budget_sampler import Sampler, SamplingParams
from budget_sampler.errors import InvalidInput

from checkpoints import make_checkpoint, make_config, make_tokenizer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: connection refused at once


def build_hub_cache(hf_home: Path, repo_id: str, checkpoint: Path) -> Path:
    """huggingface_hub's cache layout: blobs by hash, a snapshot of symlinks per commit, refs/main."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    for d in (repo / "blobs", repo / "refs", snapshot):
        d.mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for f in checkpoint.iterdir():
        blob = hashlib.sha256(f.read_bytes()).hexdigest()
        (repo / "blobs" / blob).write_bytes(f.read_bytes())
        (snapshot / f.name).symlink_to(Path("..", "..", "blobs", blob))
    return snapshot


def generate(hf_home: Path, *args, **env):
    """`budget-sampler generate` in a fresh process, so huggingface_hub reads this environment."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_OFFLINE"))}
    return subprocess.run([sys.executable, "-m", "budget_sampler.cli", "generate", "--prompt", "def add(a, b):",
                           "--temperature", "0", "--max-new-tokens", "4", *args], capture_output=True, text=True,
                          timeout=300, env={**environ, "HF_HOME": str(hf_home), **env})


@pytest.fixture(scope="module")
def hub(tmp_path_factory, tiny_llama):
    home = tmp_path_factory.mktemp("hf-home")
    build_hub_cache(home, "org/tiny", tiny_llama)
    return home


@pytest.mark.parametrize("args, env", [
    ([], {"HF_HUB_OFFLINE": "1"}),
    (["--revision", COMMIT], {"HF_HUB_OFFLINE": "1"}),
    ([], {"HF_ENDPOINT": UNREACHABLE}),
], ids=["offline", "offline-commit", "hub-unreachable"])
def test_hub_id_loads_from_the_cache(hub, tiny_llama, args, env):
    r = generate(hub, "--model", "org/tiny", *args, **env)
    assert r.returncode == 0, r.stderr
    want = Sampler.from_pretrained(str(tiny_llama)).generate(
        ["def add(a, b):"], SamplingParams(temperature=0, max_new_tokens=4))[0][0].text
    assert json.loads(r.stdout)["text"] == want


@pytest.mark.parametrize("model, args, env", [
    ("org/missing", [], {"HF_ENDPOINT": UNREACHABLE}),
    ("org/missing", [], {"HF_HUB_OFFLINE": "1"}),
    ("org/tiny", ["--revision", "v2"], {"HF_HUB_OFFLINE": "1"}),
], ids=["unreachable-not-cached", "offline-not-cached", "revision-not-cached"])
def test_hub_id_not_cached_and_not_downloadable_is_one_line(hub, model, args, env):
    r = generate(hub, "--model", model, *args, **env)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"model {model!r}" in lines[0]
    assert "could not be downloaded or found in the Hugging Face cache" in lines[0]


def test_four_shards_stream_into_the_same_model(tmp_path, tiny_llama):
    """Shards split layers across files, so parts of a fused matrix come from different shards."""
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    Sampler.from_pretrained(str(tiny_llama)).tokenizer.save_pretrained(tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) >= 4
    ours = Sampler.from_pretrained(str(tmp_path)).model.state_dict()
    want = Sampler.from_pretrained(str(tiny_llama)).model.state_dict()
    assert ours.keys() == want.keys() and all(torch.equal(ours[k], want[k]) for k in want)


def _rewrite_weights(path: Path, edit) -> None:
    from safetensors.torch import load_file, save_file
    weights = load_file(str(path / "model.safetensors"))
    edit(weights)
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize("edit, message", [
    (lambda w: w.pop("model.layers.1.self_attn.k_proj.weight"), r"weights missing .*layers\.1\.self_attn\.qkv_proj"),
    (lambda w: w.update({"model.layers.0.mlp.extra.weight": torch.zeros(2)}), r"unexpected weight .*mlp\.extra"),
    (lambda w: w.update({"model.norm.weight": torch.zeros(3)}), r"'model.norm.weight' has shape \(3,\)"),
], ids=["missing", "unexpected", "wrong-shape"])
def test_weights_that_do_not_fit_the_config_are_one_clear_error(tmp_path, edit, message):
    path = make_checkpoint(tmp_path, "llama", seed=2)
    _rewrite_weights(path, edit)
    with pytest.raises(InvalidInput, match=message):
        Sampler.from_pretrained(str(path))


@pytest.mark.parametrize("model_type, message", [
    ("deepseek_v3", r"'deepseek_v3' is not supported; supported: llama, .*, mixtral, gemma2, gemma3_text, phi3, "
                    r"granite, olmo2, gemma3$"),
    ("gpt2", r"'gpt2' is not supported; supported: llama, mistral, qwen2, qwen3, starcoder2, gemma, qwen3_moe, "
             r"mixtral"),
])
def test_families_that_do_not_fit_name_the_supported_ones(tmp_path, model_type, message):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    with pytest.raises(InvalidInput, match=message):
        Sampler.from_pretrained(str(tmp_path))


def test_a_toy_name_without_weights_is_one_clear_error(monkeypatch, tmp_path):
    """Whoever resolves the name (from_pretrained, eval, plan) gets an InvalidInput: exit 2, one line."""
    from budget_sampler.models import resolve_model_path
    monkeypatch.setenv("BUDGET_SAMPLER_TOY_WEIGHTS", str(tmp_path))
    with pytest.raises(InvalidInput, match="model 'toy-s': toy model 'toy-s' has no checkpoint at .*retrain"):
        resolve_model_path("toy-s")


def test_multimodal_gemma3_loads_its_language_model(tmp_path):
    """A `gemma3` checkpoint (vision tower, projector, nested text_config) loads its text model only:
    teacher-forced log-probs equal Hugging Face's multimodal model on text (1e-4, float32)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration
    text = make_config("gemma3_text", sliding_window=6)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                  patch_size=14)
    config = Gemma3Config(text_config=text.to_dict(), vision_config=vision, mm_tokens_per_image=4,
                          boi_token_index=2, eoi_token_index=3, image_token_index=299)
    torch.manual_seed(0)
    hf = Gemma3ForConditionalGeneration(config).eval()
    hf.save_pretrained(tmp_path)
    make_tokenizer(text.vocab_size).save_pretrained(tmp_path)
    ours = Sampler.from_pretrained(str(tmp_path))
    assert ours.model.cfg.model_type == "gemma3_text"
    ids = ours.encode("def add(a, b):\n    return a + b")
    with torch.no_grad():
        ref = torch.log_softmax(hf(input_ids=torch.tensor([ids])).logits[0].double(), dim=-1)
    want = ref[1:-1].gather(1, torch.tensor(ids[2:]).unsqueeze(1)).squeeze(1)
    got = torch.tensor(ours.score_ids(ids[:2], [ids[2:]])[0], dtype=torch.float64)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_longrope_context_is_its_original_length():
    """LongRoPE runs its short factors, which Hugging Face uses up to original_max_position_embeddings."""
    from budget_sampler.models import ModelConfig
    rope = {"rope_type": "longrope", "rope_theta": 1e4, "original_max_position_embeddings": 64,
            "short_factor": [1.0] * 8, "long_factor": [2.0] * 8}
    cfg = ModelConfig.from_hf(make_config("phi3", rope_parameters=rope, original_max_position_embeddings=64))
    assert cfg.max_context == 64 and cfg.rope["attention_factor"] > 1.0
