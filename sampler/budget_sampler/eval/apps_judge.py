"""The APPS judge, run inside the sandbox: apps.py makes a problem's program from this file's text
and a call of judge(), so one sandboxed process runs all of a sample's test cases, as APPS' own
eval/testing_util.py does, and the evaluator never runs generated code.

It follows run_test there: the solution gets the same imports, each test case has its own
wall-clock limit, a call-based solution is executed once and its function (or
Solution().<fn_name>) called per test case, and outputs are compared with APPS' checks, in its
order, each more lenient than the last. Every test case must pass ("strict accuracy"), so the first
failure ends the run, with an AssertionError naming the test case. Where APPS patches a few methods
of sys.stdin, a standard-input solution here runs as a whole module (fresh globals per test case)
with real file objects for stdin and stdout (`sys.stdin.buffer` and `open(0)` work), and
exiting with SystemExit counts as finishing, as in APPS.

Standard library only (the solution's own imports aside), and no reference to this package: the
file is the program's source.
"""
import builtins
import io
import json
import signal
import sys
import threading

# What APPS puts before every solution (testing_util.run_test), so solutions may rely on it.
HEADER = """import sys
import time
import itertools
from itertools import accumulate, product, permutations, combinations
import collections
from collections import Counter, OrderedDict, deque, defaultdict, ChainMap
from functools import lru_cache
import math
from math import sqrt, sin, cos, tan, ceil, fabs, floor, gcd, exp, log, log2
import fractions
from typing import List, Tuple
import numpy as np
import random
import heapq
from heapq import *
"""


class TestTimeout(BaseException):
    """A test case ran past its limit (a BaseException: `except Exception` in a solution must not catch it)."""


def judge(code: str, tests_json: str, timeout: float) -> None:
    """Return if `code` passes every test case of `tests_json` (APPS' input_output); raise otherwise."""
    tests = json.loads(tests_json)
    solution = compile(HEADER + code, "solution.py", "exec")
    fn_name = tests.get("fn_name")
    for name in ("exit", "quit"):  # site.py's, which the sandbox's `python -S` skips
        if not hasattr(builtins, name):
            setattr(builtins, name, sys.exit)
    signal.signal(signal.SIGALRM, _time_up)
    if fn_name:
        namespace = {"__name__": "solution"}
        if not _limited(timeout, exec, solution, namespace)[1]:
            raise AssertionError(f"executing the solution timed out after {timeout:g} s")
        method = getattr(namespace["Solution"](), fn_name) if "class Solution" in code else namespace[fn_name]
    cases = list(zip(tests["inputs"], tests["outputs"]))
    for number, (inputs, expected) in enumerate(cases, start=1):
        where = f"test {number} of {len(cases)}"
        if fn_name:
            inputs, expected = _int_keys(inputs), _int_keys(expected, wrapped=True)
            output, finished = _limited(timeout, method, *inputs)
            passed = finished and call_output_matches(output, expected)
        else:
            output, finished = _limited(timeout, run_module, solution, inputs)
            passed = finished and stdout_matches(output, expected)
        if not finished:
            raise AssertionError(f"{where}: timed out after {timeout:g} s")
        if not passed:
            raise AssertionError(f"{where}: wrong answer")


fired = False  # set by the alarm: a solution that swallows TestTimeout still ran too long


def _time_up(signum, frame):
    global fired
    fired = True
    raise TestTimeout


def _limited(timeout: float, function, *args):
    """(function(*args), finished within `timeout`): the alarm interrupts it, and a solution that
    swallows the interruption still counts as too slow."""
    global fired
    fired = False
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        result = function(*args)
    except TestTimeout:
        result = None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return result, not fired


def run_module(solution, inputs) -> str:
    """Run a standard-input solution on `inputs` (a string, or lines) and return what it printed."""
    data = ("\n".join(inputs) if isinstance(inputs, list) else inputs).encode()
    stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    real = sys.stdin, sys.stdout, builtins.open

    def open_(file, mode="r", *args, **kwargs):  # open(0): standard input, as the solution's own
        if file == 0 and not isinstance(file, bool):
            return io.BytesIO(data) if "b" in mode else io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
        return real[2](file, mode, *args, **kwargs)

    sys.stdin, sys.stdout, builtins.open = stdin, stdout, open_
    try:
        exec(solution, {"__name__": "__main__"})
        for thread in threading.enumerate():  # solutions that run main() in a thread (for its stack)
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
    except SystemExit:
        pass
    finally:
        sys.stdin, sys.stdout, builtins.open = real
    stdout.flush()
    return stdout.buffer.getvalue().decode("utf-8", "replace")


def _int_keys(value, wrapped: bool = False):
    """JSON made dict keys strings: APPS turns them back into ints where they are, for a dict first
    argument (keeping it alone, as APPS does) and a dict expected output (wrapped in a list)."""
    try:
        if wrapped and isinstance(value, dict):
            value = [{int(k): v for k, v in value.items()}]
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value = [{int(k): v for k, v in value[0].items()}]
    except ValueError:
        pass
    return value


def call_output_matches(output, expected) -> bool:
    """APPS' checks for a call-based test case: a tuple counts as a list (and tuples inside as
    lists), and the expected output may be wrapped in a list of one."""
    try:
        if isinstance(output, tuple):
            output = list(output)
        if output == expected or (isinstance(expected, list) and expected and output == expected[0]):
            return True
        return isinstance(output[0], tuple) and [list(x) for x in output] == expected[0]
    except Exception:  # APPS counts a comparison that raises as a failure
        return False


def stdout_matches(output: str, expected) -> bool:
    """APPS' checks for a standard-output test case, in its order, each more lenient than the last."""
    if isinstance(expected, list):
        expected = "\n".join(expected)
    lines = output.splitlines()
    # the whole output, stripped (also with each line stripped); or its only line, unstripped
    if expected.strip() in ("\n".join(lines).strip(), "\n".join(x.strip() for x in lines).strip()) \
            or lines == [expected]:
        return True
    # line by line, stripped, empty lines of either dropped (the expected ones before stripping)
    wanted = [x.strip() for x in expected.split("\n") if x]
    if lines == wanted or [x for x in lines if x] == wanted:
        return True
    lines = [x for x in lines if x]
    # one number per line, within numpy.allclose's tolerance
    try:
        got, want = [float(x) for x in lines], [float(x) for x in wanted]
        if len(got) == len(want) and all(abs(a - b) <= 1e-8 + 1e-5 * abs(b) for a, b in zip(got, want)):
            return True
    except ValueError:
        pass
    # each line a set of tokens, the output a set of lines: order and repeats ignored; then the
    # same with every token a number rounded to 3 decimals
    got = {frozenset(x.split()) for x in lines if x.split()}
    want = {frozenset(x.split()) for x in wanted}
    if got == want:
        return True
    try:
        return {frozenset(round(float(t), 3) for t in s) for s in got} == \
            {frozenset(round(float(t), 3) for t in s) for s in want}
    except ValueError:
        return False
