"""Issue 32: the distribution's import names are its own. From the repository root, where `python -m` and
`python -c` put the root first on sys.path, `kernels` is Hugging Face's package (a hard requirement of
transformers >= 5.25) and `sampler` is nobody's of ours; transformers loads a model there."""
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import importlib.util, json
def where(name):
    spec = importlib.util.find_spec(name)
    return None if spec is None else {"origin": spec.origin, "locations": list(spec.submodule_search_locations or [])}
print(json.dumps({name: where(name) for name in ("kernels", "sampler", "budget_sampler", "budget_sampler_kernels")}))
"""


def _from_root(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def _hf_kernels_installed() -> bool:
    """Whether Hugging Face's distribution is installed (from the repo root `import kernels` also finds our
    folder, as an empty namespace package, when it is not)."""
    try:
        importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_repo_root_shadows_no_other_package():
    run = _from_root(PROBE)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert found["budget_sampler"]["origin"] == str(ROOT / "sampler" / "budget_sampler" / "__init__.py")
    assert found["budget_sampler_kernels"]["origin"] == str(
        ROOT / "kernels" / "budget_sampler_kernels" / "__init__.py")
    for name in ("kernels", "sampler"):  # no module file of ours answers to the generic names
        spec = found[name]
        ours = str(ROOT / name) + "/"  # our folder of that name holds no __init__.py: at most an empty namespace
        assert spec is None or spec["origin"] is None or not spec["origin"].startswith(ours), (name, spec)
    if _hf_kernels_installed():
        assert found["kernels"]["origin"] and "site-packages" in found["kernels"]["origin"]  # Hugging Face's


def test_transformers_loads_a_model_from_the_repo_root(tiny_llama):
    if not _hf_kernels_installed():
        pytest.skip("Hugging Face's kernels package is not installed")
    run = _from_root(f"""
import kernels
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained({str(tiny_llama)!r})
print(kernels.__file__, type(model).__name__)
""")
    assert run.returncode == 0, run.stderr[-3000:]
    origin, name = run.stdout.split()
    assert "site-packages" in origin and name == "LlamaForCausalLM"


def test_nothing_imports_the_generic_names():
    """No code, test, bench script or doc imports a top-level `sampler` or `kernels` (this file only names them)."""
    files = subprocess.run(["git", "ls-files", "*.py", "*.md", "*.sh", "*.toml"], cwd=ROOT, capture_output=True,
                           text=True).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    bad = []
    pattern = re.compile(r"^\s*(from|import)\s+(sampler|kernels)\b|-m\s+(sampler|kernels)\.")
    for name in files:
        path = ROOT / name
        if path == Path(__file__) or not path.is_file():
            continue
        bad += [f"{name}:{i}: {line.strip()}" for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
                if pattern.search(line)]
    assert not bad, "\n".join(bad)
