"""The input/output examples a prompt states, and the sandboxed program that runs a sample on them.

What is parsed (everything else in a prompt is ignored; a problem without any has no examples):
  * doctests: a `>>> EXPR` line (with `... ` continuation lines) and the output line(s) under it, as in
    HumanEval's and the toy suite's docstrings;
  * arrows: `NAME(...) OP VALUE` on one line of the prompt, NAME the entry point and OP one of
    `==>`, `==`, `=>`, `->`, `➞`, `→` (HumanEval writes its examples these ways); `def` lines excluded;
  * MBPP: the `assert CALL == VALUE` lines of the prompt's last task (after its last "[DONE]"), i.e. the
    test MBPP shows in the prompt.
An example is kept only if its call parses as a Python expression and its expected output is a Python
literal (ast.literal_eval, which evaluates nothing; `true` / `false` read as booleans; a doctest with no
output line expects None): prose outputs, printed outputs and setup statements are dropped.
APPS problems (stdin/stdout judges) have none.

The probe program is the sample's program (as execute.check_program builds it, without the hidden
tests) followed by a harness that calls each example's expression, catching exceptions and the
function's prints, and prints one line: per example a hash of the canonical output (None where the
call raised) and whether it equals the expected value. The vote ranker reads only the hashes.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Optional

MAX_EXAMPLES = 16  # the harness's line must fit in the 1000 characters of output a run keeps
MARKER = "__budget_sampler_examples__ "
ARROWS = ("==>", "==", "=>", "->", "➞", "→")


@dataclass(frozen=True)
class Example:
    call: str      # a Python expression, e.g. "f([1, 2])"
    expected: str  # a Python literal, e.g. "[2, 4]"


def parse(problem: dict) -> list[Example]:
    """The examples stated in a problem's prompt (module docstring: what is parsed), deduplicated."""
    if problem.get("judge") is not None:
        return []
    prompt = problem["prompt"]
    if problem["entry_point"] is None:
        found = _asserts(prompt.rpartition("[DONE]")[2])
    else:
        found = _doctests(prompt) + _arrows(prompt, problem["entry_point"])
    return list(dict.fromkeys(found))[:MAX_EXAMPLES]


def _example(call: str, expected: str) -> Optional[Example]:
    call, expected = call.strip(), expected.strip()
    expected = {"true": "True", "false": "False"}.get(expected, expected)  # HumanEval's prose booleans
    try:
        ast.parse(call, mode="eval")
        ast.literal_eval(expected)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        return None
    return Example(call, expected)


def _doctests(prompt: str) -> list[Example]:
    lines, found, i = prompt.splitlines(), [], 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line.startswith(">>>"):
            continue
        source = [line[3:]]
        while i < len(lines) and lines[i].strip().startswith("..."):
            source.append(lines[i].strip()[3:])
            i += 1
        output = []
        while i < len(lines) and (text := lines[i].strip()) and not text.startswith(">>>") \
                and not text.startswith(('"""', "'''")):
            output.append(text)
            i += 1
        call = "\n".join(s.strip() for s in source)
        if call.startswith("print("):
            continue  # its output is printed, not returned
        output = output or ["None"]  # doctest shows nothing for None
        if example := _example(call, " ".join(output)) or _example(call, output[0]):
            found.append(example)
    return found


def _arrows(prompt: str, name: str) -> list[Example]:
    found = []
    for line in prompt.splitlines():
        if line.strip().startswith((">>>", "def ")):
            continue
        start = line.find(name + "(")
        while start >= 0:
            end = _closing(line, start + len(name))
            if end is not None and (start == 0 or not (line[start - 1].isalnum() or line[start - 1] in "_.")):
                rest = line[end + 1:].lstrip()
                arrow = next((a for a in ARROWS if rest.startswith(a)), None)
                if arrow and (example := _example(line[start:end + 1], rest[len(arrow):].strip().rstrip(".,;"))):
                    found.append(example)
            start = line.find(name + "(", start + 1)
    return found


def _closing(line: str, open_at: int) -> Optional[int]:
    """The index of the bracket closing the one at open_at (quotes skipped), or None."""
    depth, quote = 0, None
    for j in range(open_at, len(line)):
        c = line[j]
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return j
    return None


def _asserts(text: str) -> list[Example]:
    found = []
    for line in text.splitlines():
        try:
            tree = ast.parse(line.strip())
        except SyntaxError:
            continue
        node = tree.body[0] if len(tree.body) == 1 else None
        if isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1 \
                and isinstance(node.test.ops[0], ast.Eq):
            if example := _example(ast.unparse(node.test.left), ast.unparse(node.test.comparators[0])):
                found.append(example)
    return found


HARNESS = '''

def __budget_sampler_examples():
    import contextlib, hashlib, io, json

    def canon(v):
        if isinstance(v, (set, frozenset)):
            return type(v).__name__ + "{" + ",".join(sorted(map(canon, v))) + "}"
        if isinstance(v, dict):
            return "dict{" + ",".join(sorted(canon(k) + ":" + canon(x) for k, x in v.items())) + "}"
        if isinstance(v, (list, tuple)):
            return type(v).__name__ + "[" + ",".join(map(canon, v)) + "]"
        if isinstance(v, float):
            return "float:" + format(v, ".12g")
        return type(v).__name__ + ":" + repr(v)

    def same(v, want):
        if isinstance(v, (int, float)) and isinstance(want, (int, float)) and not isinstance(v, bool):
            return abs(v - want) <= 1e-6 * max(1.0, abs(want))
        return type(v) is type(want) and v == want

    outputs, reproduced = [], []
    for call, want in zip(CALLS, EXPECTED):
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                value = call()
            key = hashlib.sha256(canon(value).encode()).hexdigest()[:16]
            ok = bool(same(value, want))
        except Exception:
            key, ok = None, False
        outputs.append(key)
        reproduced.append(ok)
    print("\\n" + MARKER + json.dumps([outputs, reproduced]), flush=True)


__budget_sampler_examples()
'''


def program(problem: dict, completion: str, examples: list[Example]) -> str:
    """The probe: the sample's program (prompt + completion, or the completion alone where the prompt
    is prose), then the harness over `examples`."""
    code = completion if problem["entry_point"] is None else problem["prompt"] + completion
    calls = "[" + ", ".join(f"lambda: ({e.call})" for e in examples) + "]"
    expected = "[" + ", ".join(f"({e.expected})" for e in examples) + "]"
    values = {"CALLS": calls, "EXPECTED": expected, "MARKER": repr(MARKER)}
    return code + re.sub(r"\b(CALLS|EXPECTED|MARKER)\b", lambda m: values[m.group()], HARNESS)


def read_probe(result: dict, examples: int) -> dict:
    """A probe's run_program result as a row: ran (to its end), outputs (hash or None per example),
    reproduced (per example)."""
    line = result["output"].rpartition(MARKER)[2].partition("\n")[0] if result["passed"] else ""
    try:
        outputs, reproduced = json.loads(line)
    except ValueError:
        return {"ran": False, "outputs": [None] * examples, "reproduced": [False] * examples}
    return {"ran": len(outputs) == examples, "outputs": outputs, "reproduced": reproduced}
