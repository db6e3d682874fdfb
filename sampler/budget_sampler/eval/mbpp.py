"""MBPP (Austin et al. 2021) as the paper evaluates it: the 500 test problems (task ids 11-510), each
a 3-shot prompt in the format Code Llama used, tasks 2, 3 and 4 as the shots. The prompt is prose,
so the completion (cut at "[DONE]") is the whole program; it passes if the task's asserts, after its
setup code, run to the end.

Rows come from the Hub with `datasets` (google-research-datasets/mbpp, config "full", split "test")
or from a local file in that dataset's schema: JSON, JSON Lines or parquet with task_id, text, code,
test_list, test_setup_code, challenge_test_list.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import InvalidInput
from .dataset_files import read_rows

HUB_ID = "google-research-datasets/mbpp"
TEST_TASK_IDS = range(11, 511)
STOP = ["[DONE]"]
MAX_NEW_TOKENS = 256  # the paper's setting for MBPP

# Tasks 2, 3 and 4 of MBPP (its prompt split), verbatim but for "\r\n" line ends: the shots.
SHOTS = [
    {"text": "Write a function to find the similar elements from the given two tuple lists.",
     "code": "def similar_elements(test_tup1, test_tup2):\n  res = tuple(set(test_tup1) & set(test_tup2))\n"
             "  return (res) ",
     "test_list": ["assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
                   "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
                   "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)"]},
    {"text": "Write a python function to identify non-prime numbers.",
     "code": "import math\ndef is_not_prime(n):\n    result = False\n    for i in range(2,int(math.sqrt(n)) + 1):\n"
             "        if n % i == 0:\n            result = True\n    return result",
     "test_list": ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True",
                   "assert is_not_prime(35) == True"]},
    {"text": "Write a function to find the largest integers from a given list of numbers using heap queue "
             "algorithm.",
     "code": "import heapq as hq\ndef heap_queue_largest(nums,n):\n  largest_nums = hq.nlargest(n, nums)\n"
             "  return largest_nums",
     "test_list": ["assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] ",
                   "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] ",
                   "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35]"]},
]


def task_prompt(text: str, test_list: list[str]) -> str:
    return (f"You are an expert Python programmer, and here is your task: {text} "
            "Your code should pass these tests:\n\n" + "\n".join(test_list) + "\n")


FEW_SHOT = "".join(task_prompt(s["text"], s["test_list"]) + "[BEGIN]\n" + s["code"] + "\n[DONE]\n" for s in SHOTS)


def to_problem(row: dict) -> dict:
    """An MBPP row as a problem: no entry point, because the tests are top-level asserts."""
    return {"task_id": f"MBPP/{row['task_id']}",
            "prompt": FEW_SHOT + task_prompt(row["text"], row["test_list"]) + "[BEGIN]\n",
            "test": (row.get("test_setup_code") or "") + "\n" + "\n".join(row["test_list"]) + "\n",
            "entry_point": None}


def load_problems(path: Optional[str] = None) -> list[dict]:
    """The test problems, in task id order, from the Hub (path None) or a local file."""
    where = HUB_ID if path is None else path
    rows = _read_hub() if path is None else read_rows(Path(path), "MBPP")
    problems = {}
    for number, row in enumerate(rows, start=1):
        _check(row, f"{where}: row {number}")
        if row["task_id"] in TEST_TASK_IDS:
            problems.setdefault(row["task_id"], to_problem(row))
    if not problems:
        raise InvalidInput(f"{where}: no MBPP test problems (task ids 11-510) in it")
    return [problems[t] for t in sorted(problems)]


def _check(row: dict, where: str) -> None:
    if isinstance(row.get("task_id"), bool) or not isinstance(row.get("task_id"), int):
        raise InvalidInput(f"{where} has no integer 'task_id': MBPP rows have task_id, text, test_list, "
                           "test_setup_code")
    if not isinstance(row.get("text"), str) or not row["text"].strip():
        raise InvalidInput(f"{where} (task_id {row['task_id']}) has no 'text'")
    tests = row.get("test_list")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise InvalidInput(f"{where} (task_id {row['task_id']}): 'test_list' must be a non-empty list of strings")
    if not isinstance(row.get("test_setup_code", ""), (str, type(None))):
        raise InvalidInput(f"{where} (task_id {row['task_id']}): 'test_setup_code' must be a string")


def _read_hub() -> list[dict]:
    try:
        import datasets
    except ImportError:
        raise InvalidInput("--benchmark mbpp downloads with the `datasets` package: pip install "
                           "'budget-sampler[datasets]' (or give a local copy: mbpp:PATH)") from None
    try:
        return list(datasets.load_dataset(HUB_ID, "full", split="test"))
    except Exception as e:  # offline, unreachable, not found: one user error
        raise InvalidInput(f"MBPP could not be loaded from the Hub ({HUB_ID}): {' '.join(str(e).split())}; "
                           "give a local copy instead: mbpp:PATH") from None
