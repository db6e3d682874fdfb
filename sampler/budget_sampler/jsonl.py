"""JSON Lines I/O shared by the CLI, the evaluation loop and the harness adapters.

Reads report the line number of a bad line; whole-file writes go through a temporary file and a
rename so that a crash never leaves a half-written output; an append writes its row straight to the
OS, and a write that fails part-way (a full disk, a signal) is cut back off, so that the file always
ends at its last whole row and a resumed run loses at most the row being written. A write that the
OS refuses (a full disk, a read-only directory) is an InvalidInput, which the CLI prints as one line.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

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


def unwritable(path: str | os.PathLike, e: OSError) -> InvalidInput:
    """The one error for an output the OS refuses: the user can fix it (free space, permissions) and rerun."""
    return InvalidInput(f"cannot write {path}: {e.strerror or e} (free space or make it writable, then rerun "
                        "the same command)")


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError):
            raise unwritable(path, e) from None
        raise


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_jsonl(f: BinaryIO, row: dict) -> None:
    """Append one row to a file opened for appending without a buffer (records.open_for_append): whole,
    or not at all."""
    data = memoryview((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    fd = f.fileno()
    end = os.lseek(fd, 0, os.SEEK_END)
    try:
        while data:
            data = data[os.write(fd, data):]
    except BaseException as e:
        os.ftruncate(fd, end)
        if isinstance(e, OSError):
            raise unwritable(f.name, e) from None
        raise
