"""bench/gpu_check.py runs end to end in its CPU dry mode (Triton interpreter, tiny shapes), so the
one-call GPU check cannot rot between the sessions that have a GPU."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dry_run_writes_json_and_table(tmp_path):
    out = tmp_path / "gpu_check.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["environment"]["dry_run"] and result["environment"]["triton_interpret"]
    assert result["correctness"]["rows"] and all(r["ok"] for r in result["correctness"]["rows"])
    assert {r["op"] for r in result["correctness"]["rows"]} >= {"shared_prefix_attention", "rms_norm+residual",
                                                      "rope_write_kv", "sample"}
    moe = result["moe"]["rows"]
    assert moe and all(r["ok"] for r in moe) and all(r["ours_ms"] > 0 for r in moe if r["dtype"] == "float32")
    assert result["attention"]["rows"] and all(r["ours_ms"] > 0 for r in result["attention"]["rows"])
    assert result["micro"]["rows"] and not result["end_to_end"]["errors"]
    assert set(result["main_job"]["models"]) == {"toy-xs", "toy-s"}
    assert [r["n"] for r in result["end_to_end"]["results"]] == [2]
    assert result["end_to_end"]["results"][0]["ours_tokens_per_s"] > 0
    table = run.stdout[run.stdout.index("end to end"):].splitlines()
    assert table[2].split()[:2] == ["2", f"{result['end_to_end']['results'][0]['ours_tokens_per_s']:.0f}"]
