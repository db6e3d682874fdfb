"""JSON Lines I/O shared by the CLI, the evaluation loop and the harness adapters.

Reads report the line number of a bad line; whole-file writes go through a temporary file and a
rename so that a crash never leaves a half-written output; appends flush each row so that a resumed
run loses at most the row being written.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator

from .errors import InvalidInput


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidInput(f"{path}:{number}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise InvalidInput(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            yield row


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    return list(iter_jsonl(path))


def read_jsonl_tolerant(path: str | os.PathLike) -> list[dict]:
    """Rows of a file this program appended to; a torn last line (crash mid-write) is dropped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_jsonl(f, row: dict) -> None:
    """Append one row to an open text file and flush it to the OS."""
    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    f.flush()
