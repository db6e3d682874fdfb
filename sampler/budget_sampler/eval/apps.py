"""APPS (Hendrycks et al. 2021) as the paper evaluates it: the 5,000 test problems, or those of one
difficulty (introductory, interview, competition), each prompted in the format of APPS' own
generation code, the completion being the whole program; it passes if it passes every test case
("strict accuracy"), judged as APPS' testing_util judges (apps_judge.py, inside the sandbox).

Rows come from the Hub (codeparrot/apps: its test.jsonl, downloaded once by huggingface_hub and
cached; the repository's loading script is not used, which `datasets` >= 4 refuses to run) or from
a local file in that schema: JSON, JSON Lines or parquet with problem_id, question, solutions,
input_output (a JSON string: inputs, outputs and, for call-based problems, fn_name), difficulty,
url, starter_code. Rows without test cases (an empty input_output) cannot be judged and are left
out.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ..errors import InvalidInput
from .dataset_files import read_rows

HUB_ID = "codeparrot/apps"
HUB_FILE = "test.jsonl"
DIFFICULTIES = ("introductory", "interview", "competition")
STOP = ["\nQUESTION", "\n---", "\nANSWER"]  # the next problem of the format (bigcode-evaluation-harness's)
MAX_NEW_TOKENS = 256  # the paper's setting for APPS
PROBLEM_TIMEOUT = 30.0  # seconds for all of a sample's test cases together; each has its own limit too
JUDGE = Path(__file__).with_name("apps_judge.py")


def prompt(question: str, starter_code: str, call_based: bool) -> str:
    """APPS' prompt (eval/generate_gpt_codes.py, generate_prompt, without peeking)."""
    return ("\nQUESTION:\n" + question + ("\n" + starter_code if starter_code else "")
            + ("\nUse Call-Based format" if call_based else "\nUse Standard Input format") + "\nANSWER:\n")


def to_problem(row: dict, tests: dict) -> dict:
    """An APPS row as a problem: no entry point, "test" holds the test cases, "judge" names the judge."""
    return {"task_id": f"APPS/{row['problem_id']}",
            "prompt": prompt(row["question"], row.get("starter_code") or "", bool(tests.get("fn_name"))),
            "test": json.dumps(tests), "entry_point": None, "judge": "apps", "difficulty": row["difficulty"]}


def judge_program(problem: dict, completion: str, timeout: float) -> str:
    """The sandboxed program for a completion: the judge, then its call on the problem's test cases."""
    return JUDGE.read_text(encoding="utf-8") + f"\njudge({completion!r}, {problem['test']!r}, {timeout!r})\n"


def load_problems(difficulty: Optional[str] = None, path: Optional[str] = None) -> list[dict]:
    """The test problems (of one difficulty, or all), in file order, from the Hub (path None) or a file."""
    where = f"{HUB_ID} ({HUB_FILE})" if path is None else path
    rows = read_rows(_download() if path is None else Path(path), "APPS")
    problems, seen = [], set()
    for number, row in enumerate(rows, start=1):
        tests = _check(row, f"{where}: row {number}")
        if tests is None or (difficulty is not None and row["difficulty"] != difficulty):
            continue
        if row["problem_id"] in seen:
            raise InvalidInput(f"{where}: row {number}: problem_id {row['problem_id']} appears twice")
        seen.add(row["problem_id"])
        problems.append(to_problem(row, tests))
    if not problems:
        raise InvalidInput(f"{where}: no APPS problems with test cases"
                           + (f" of difficulty {difficulty!r}" if difficulty else "") + " in it")
    return problems


def _check(row: dict, where: str) -> Optional[dict]:
    """The row's test cases (None if it has none), after checking the fields the harness uses."""
    if isinstance(row.get("problem_id"), bool) or not isinstance(row.get("problem_id"), int):
        raise InvalidInput(f"{where} has no integer 'problem_id': APPS rows have problem_id, question, "
                           "input_output, difficulty, starter_code")
    where = f"{where} (problem_id {row['problem_id']})"
    for field in ("question", "difficulty"):
        if not isinstance(row.get(field), str) or not row[field].strip():
            raise InvalidInput(f"{where} has no {field!r}")
    if not isinstance(row.get("starter_code") or "", str):
        raise InvalidInput(f"{where}: 'starter_code' must be a string")
    if not row.get("input_output"):
        return None
    try:
        tests = json.loads(row["input_output"])
    except (TypeError, json.JSONDecodeError):
        raise InvalidInput(f"{where}: 'input_output' is not a JSON string") from None
    if not isinstance(tests, dict) or not isinstance(tests.get("inputs"), list) \
            or not isinstance(tests.get("outputs"), list) or len(tests["inputs"]) != len(tests["outputs"]):
        raise InvalidInput(f"{where}: 'input_output' must hold lists 'inputs' and 'outputs' of one length")
    return tests if tests["inputs"] else None


def _download() -> Path:
    from huggingface_hub import hf_hub_download
    try:
        return Path(hf_hub_download(HUB_ID, HUB_FILE, repo_type="dataset"))
    except Exception as e:  # offline and not cached, unreachable, not found: one user error
        raise InvalidInput(f"APPS could not be loaded from the Hub ({HUB_ID}, {HUB_FILE}): "
                           f"{' '.join(str(e).split())}; give a local copy instead: apps:PATH") from None
