"""The embedded toy default: task suite, splits, shipped ladder, name resolution, trainer."""
import json
import pathlib

import pytest

from budget_sampler.toy import ladder, tasks

REQUIRED_KEYS = {"task_id", "prompt", "entry_point", "canonical_solution", "test"}


def _run_check(problem, completion):
    g: dict = {}
    exec(problem["prompt"] + completion + "\n\n" + problem["test"], g)
    g["check"](g[problem["entry_point"]])


# ---------------------------------------------------------------- generator

def test_generator_is_deterministic_by_seed():
    a = tasks.generate_problems("eval", 40, seed=0)
    b = tasks.generate_problems("eval", 40, seed=0)
    assert a == b
    assert tasks.generate_problems("eval", 40, seed=1) != a
    assert tasks.generate_problems("train", 40, seed=3) == tasks.generate_problems("train", 40, seed=3)
    # a prefix of a longer run is the shorter run
    assert tasks.generate_problems("eval", 10, seed=0) == a[:10]


def test_eval_suite_shape_and_format():
    probs = tasks.load_problems()
    assert len(probs) >= 200
    assert [p["task_id"] for p in probs] == [f"Toy/{i}" for i in range(len(probs))]
    assert len({p["prompt"] for p in probs}) == len(probs)
    for p in probs:
        assert REQUIRED_KEYS <= set(p)
        assert p["prompt"].startswith(f"def {p['entry_point']}(")
        assert p["prompt"].endswith('    """\n')          # the model continues with the body
        assert p["canonical_solution"].startswith("    ")
        assert "def check(candidate):" in p["test"]
        # hidden cases beyond the docstring's examples
        n_examples = p["prompt"].count(">>> ")
        assert 2 <= n_examples <= 4
        assert p["test"].count("assert candidate(") > n_examples
    # several families, styles and depths
    assert {p["family"] for p in probs} == {"list", "str", "int"}
    assert {p["style"] for p in probs} == {"words", "partial", "examples"}
    assert len({p["depth"] for p in probs}) >= 4
    assert tasks.load_problems(count=7) == probs[:7]


def test_canonical_solutions_pass_their_tests():
    for p in tasks.load_problems() + tasks.generate_problems("train", 300, seed=5):
        _run_check(p, p["canonical_solution"])


def test_wrong_solution_fails():
    p = tasks.load_problems(count=1)[0]
    with pytest.raises(AssertionError):
        _run_check(p, "    return None\n")


def test_splits_share_no_composition():
    ev = tasks.load_problems()
    tr = tasks.generate_problems("train", 3000, seed=0)
    stream = tasks.iter_train_problems(seed=0)           # what the trainer actually sees
    tr += [next(stream) for _ in range(3000)]
    ev_comp = {p["composition"] for p in ev}
    tr_comp = {p["composition"] for p in tr}
    assert not ev_comp & tr_comp
    assert all(tasks.split_of(tuple(c.split("|"))) == "eval" for c in ev_comp)
    assert all(tasks.split_of(tuple(c.split("|"))) == "train" for c in tr_comp)
    ev_text = {p["prompt"] + p["canonical_solution"] for p in ev}
    assert not ev_text & {p["prompt"] + p["canonical_solution"] for p in tr}
    ev_sol = {p["canonical_solution"] for p in ev}
    assert not ev_sol & {p["canonical_solution"] for p in tr}


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        tasks.generate_problems("test", 3)
    with pytest.raises(ValueError, match="count"):
        tasks.load_problems(count=-1)


def test_stop_strings():
    for s in ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"):
        assert s in tasks.STOP
    # no canonical solution contains a stop string
    for p in tasks.load_problems():
        assert not any(s in p["canonical_solution"] for s in tasks.STOP)


# ---------------------------------------------------------------- ladder and names

def test_names_resolve():
    assert ladder.NAMES == ["toy-xs", "toy-s", "toy-m", "toy-l"]
    assert ladder.DEFAULT_LADDER == ladder.NAMES
    for name in ladder.NAMES:
        path = ladder.resolve(name)
        assert isinstance(path, pathlib.Path) and path.is_dir()
        for f in ("config.json", "generation_config.json", "model.safetensors",
                  "tokenizer.json", "tokenizer_config.json"):
            assert (path / f).is_file(), (name, f)
    assert ladder.resolve("not-a-toy") is None
    assert ladder.resolve("/some/dir/toy-xs") is None


def test_resolve_override_and_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("BUDGET_SAMPLER_TOY_WEIGHTS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="toy-s"):
        ladder.resolve("toy-s")


def test_loader_resolves_toy_names():
    loader = pytest.importorskip("budget_sampler.models.loader")
    assert pathlib.Path(loader.resolve_model_path("toy-xs")) == ladder.resolve("toy-xs")


def test_shipped_configs_and_size():
    total = 0
    params = []
    for name in ladder.NAMES:
        path = ladder.resolve(name)
        cfg = json.loads((path / "config.json").read_text())
        gen = json.loads((path / "generation_config.json").read_text())
        assert cfg["model_type"] == "llama"
        assert cfg["architectures"] == ["LlamaForCausalLM"]
        assert cfg["max_position_embeddings"] >= 512
        assert gen["eos_token_id"] == cfg["eos_token_id"] is not None
        assert cfg["bos_token_id"] is not None
        for k, v in ladder.ARCH[name].items():
            assert cfg[k] == v
        total += sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        summary = json.loads((path / "training.json").read_text())["summary"]
        params.append(summary["parameters"])
    assert total <= 40 * 2**20
    assert params == sorted(params) and params[-1] >= 16 * params[0]


@pytest.fixture(scope="module")
def hf_models():
    transformers = pytest.importorskip("transformers")
    out = {}
    for name in ("toy-xs", "toy-s"):
        path = ladder.resolve(name)
        tok = transformers.AutoTokenizer.from_pretrained(path)
        model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
        out[name] = (tok, model)
    return out


def _hf_greedy(tok, model, prompt, max_new_tokens=48):
    import torch

    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        g = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                           eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return g[0, enc.input_ids.shape[1]:].tolist()


def test_checkpoints_load_in_transformers(hf_models):
    import transformers

    for name in ladder.NAMES:
        model = transformers.AutoModelForCausalLM.from_pretrained(ladder.resolve(name))
        assert type(model).__name__ == "LlamaForCausalLM"
    tok, model = hf_models["toy-s"]
    assert tok.eos_token_id == model.config.eos_token_id
    p = tasks.load_problems(count=1)[0]
    ids = tok(p["prompt"]).input_ids
    assert ids[0] == model.config.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == p["prompt"]
    # the shipped model writes a function body and then stops with EOS
    out = _hf_greedy(tok, model, p["prompt"], max_new_tokens=120)
    assert out[-1] == tok.eos_token_id
    assert tok.decode(out, skip_special_tokens=True).startswith("    ")


def test_sampler_matches_transformers_greedy(hf_models):
    torch = pytest.importorskip("torch")
    try:
        from budget_sampler import Sampler, SamplingParams
    except ImportError as e:  # the engine is built elsewhere
        pytest.skip(f"engine not importable: {e}")
    probs = tasks.load_problems(count=3)
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=48, seed=0)
    for name, (tok, model) in hf_models.items():
        s = Sampler.from_pretrained(name, device="cpu", dtype=torch.float32)
        outs = s.generate([p["prompt"] for p in probs], params)
        for p, out in zip(probs, outs):
            ref = _hf_greedy(tok, model, p["prompt"])
            got = list(out[0].token_ids)
            if ref[-1] == tok.eos_token_id:   # the engine may or may not list the EOS token
                assert got in (ref, ref[:-1]), (name, p["task_id"])
                assert out[0].finish_reason == "eos"
            else:
                assert got == ref, (name, p["task_id"])
            assert out[0].text == tok.decode(ref, skip_special_tokens=True)


# ---------------------------------------------------------------- trainer

def test_train_script_is_deterministic(tmp_path):
    pytest.importorskip("transformers")
    from budget_sampler.toy import train

    args = ["--models", "toy-xs", "--steps", "2", "--vocab-size", "300", "--no-progress",
            "--tokenizer-problems", "500",
            "--log-every", "1", "--threads", "1"]
    assert train.main(args + ["--out", str(tmp_path / "a")]) == 0
    assert train.main(args + ["--out", str(tmp_path / "b")]) == 0
    a = (tmp_path / "a" / "toy-xs" / "model.safetensors").read_bytes()
    b = (tmp_path / "b" / "toy-xs" / "model.safetensors").read_bytes()
    assert a == b
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "a" / "toy-xs")
    assert model.config.vocab_size == 300
    log = json.loads((tmp_path / "a" / "toy-xs" / "training.json").read_text())
    assert log["summary"]["steps"] == 2 and len(log["log"]) == 2


# ---------------------------------------------------------------- quality gates

def test_quality_gates_name_each_failure():
    from budget_sampler.eval.toy_quality import GATES, gates

    def rows(greedy, smallest_sampled):
        return {name: {"greedy": g, "pass@1": smallest_sampled if i == 0 else g}
                for i, (name, g) in enumerate(zip(ladder.NAMES, greedy))}

    assert all(gates(rows([0.2, 0.3, 0.45, 0.47], 0.2)).values())
    assert gates(rows([0.2, 0.3, 0.3, 0.47], 0.2)) == {GATES[0]: False, GATES[1]: True, GATES[2]: True}
    assert gates(rows([0.2, 0.3, 0.45, 0.47], 0.02)) == {GATES[0]: True, GATES[1]: False, GATES[2]: True}
    assert gates(rows([0.1, 0.15, 0.2, 0.29], 0.1))[GATES[2]] is False
    assert gates(rows([0.5, 0.6, 0.7, 0.9], 0.5))[GATES[2]] is False
