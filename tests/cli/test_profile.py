"""`budget-sampler profile` on CPU: its JSON's numbers agree with each other and with sampler.plan, and
bad input is one line and exit 2, with nothing written."""
import json

import pytest
import torch

from budget_sampler.cli import main
from budget_sampler.models import load_hf_config, resolve_model_path
from budget_sampler.plan import decode_step_bytes, decode_step_flops


def test_profile_numbers_are_consistent(tmp_path, capsys):
    assert main(["profile", "--model", "toy-xs", "--n", "2", "8", "--new-tokens", "24", "--repeats", "7",
                 "--peak-tflops", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "profile.json").read_text())
    assert (tmp_path / "profile.png").read_bytes()[:4] == b"\x89PNG"
    config = load_hf_config(resolve_model_path("toy-xs"))
    assert [r["n"] for r in result["results"]] == [2, 8]
    for r in result["results"]:
        assert r["batch"] == r["n"] and 0 < r["floor_ms"] <= r["step_ms"]
        assert r["step_bytes"] == decode_step_bytes(config, torch.float32, r["n"], result["prompt_tokens"],
                                                    r["suffix_tokens"])
        assert r["step_flops"] == decode_step_flops(config, r["n"], result["prompt_tokens"], r["suffix_tokens"])
        assert 0 < r["mbu"] <= 1 and 0 < r["mfu"] <= 1
        assert r["mbu"] == pytest.approx(r["step_bytes"] / result["bandwidth_bytes_per_s"] / (r["step_ms"] / 1e3))
        assert r["tokens_per_s"]["step"] <= min(r["tokens_per_s"]["matmul floor"], r["tokens_per_s"]["memory"])
        assert r["parts_ms"]["matmuls"] > 0 and r["parts_ms"]["attention"] > 0 and r["parts_ms"]["sampling"] > 0
    kv = result["kv_cache"]
    assert kv["samples_fit"] * kv["bytes_per_sample"] <= kv["blocks_total"] * kv["block_size"] * kv["bytes_per_token"]
    assert result["prompt_tokens"] + result["new_tokens"] <= 512  # the default prompt fits toy-xs' context
    table = capsys.readouterr().out
    assert "step/floor" in table and "samples fit at once" in table


@pytest.mark.parametrize("argv, message", [
    (["--n", "0"], "--n 0 is invalid"),
    (["--n", "300"], "--n 300 is invalid"),
    (["--device", "tpu"], "--device 'tpu' is unknown"),
    (["--model", "nope-xl"], "model 'nope-xl' not found"),
    (["--new-tokens", "600"], "exceed the model's context"),
    (["--bandwidth", "0"], "--bandwidth=0.0 is invalid"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    argv = ["profile", "--model", "toy-xs", "--out", str(tmp_path / "out"), *argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
