"""Rows of a benchmark's dataset from a local file in the dataset's own schema (MBPP, APPS): JSON,
JSON Lines or parquet, the formats its Hub copy comes in or `datasets` writes."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import InvalidInput
from ..jsonl import iter_jsonl


def read_rows(path: Path, dataset: str) -> list[dict]:
    """The rows of `path`; `dataset` names them in errors."""
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise InvalidInput(f"{path}: reading parquet needs pyarrow: pip install pyarrow") from None
        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow's errors for a file that is not parquet
            raise InvalidInput(f"{path}: not a readable parquet file ({' '.join(str(e).split())})") from None
    if path.suffix == ".json":  # a JSON list of rows, or JSON Lines as `datasets` writes them
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return list(iter_jsonl(path))
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise InvalidInput(f"{path}: expected a JSON list of {dataset} rows (objects)")
        return rows
    return list(iter_jsonl(path))
