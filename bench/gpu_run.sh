#!/usr/bin/env bash
# The GPU command (README's commands, docs/benchmarks.md's GPU section), one call on the lent device machine:
# gpu_check, profile_step, and `budget-sampler profile` on a random checkpoint of Qwen2.5-1.5B's shape, each writing its JSON under $OUT.
# That machine has no registry and its own torch / triton / transformers, so the checkout is used in place:
# PYTHONPATH names sampler/ and kernels/, which hold only our packages (nothing is installed, nothing shadowed).
# `bash bench/gpu_run.sh --dry-run` rehearses it on CPU: Triton interpreter, tiny shapes, a few minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/sampler:$PWD/kernels${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-$(mktemp -d)}
export OUT
if [ "${1:-}" = --dry-run ]; then
    dry=(--dry-run); device=cpu; dtype=float32; sizes=(--n 4 16 --repeats 3); export TRITON_INTERPRET=1
else
    dry=(); device=cuda; dtype=bfloat16; sizes=(--repeats 20); export TRITON_INTERPRET=0
fi
status=0
python bench/gpu_check.py "${dry[@]}" || status=1
python bench/profile_step.py "${dry[@]}" || status=1
checkpoint=$(mktemp -d)
python - "$checkpoint" "${dry[@]}" <<'PY' || status=1
import sys
from pathlib import Path
sys.path.insert(0, "bench")
from gpu_check import Setup, make_checkpoint
make_checkpoint(Setup("--dry-run" in sys.argv), Path(sys.argv[1]))
PY
python -m budget_sampler.cli profile --model "$checkpoint" --device "$device" --dtype "$dtype" "${sizes[@]}" \
    --out "$OUT/profile" || status=1
echo "gpu_run: results under $OUT"
exit $status
