"""Selection without the hidden tests: the examples a prompt states, the sandboxed probe that runs a
sample on them, and the examples / vote rankers' rank-score@k on crafted samples."""
import itertools
import math

import pytest

from budget_sampler.errors import InvalidInput
from budget_sampler.eval import examples
from budget_sampler.eval.execute import run_program
from budget_sampler.eval.mbpp import to_problem
from budget_sampler.eval.metrics import rank_score_at_k
from budget_sampler.eval.rankers import examples_at_k, parse_rankers, selection_stats, vote_at_k
from budget_sampler.toy import tasks as toy

DOCTEST = {"task_id": "T/0", "entry_point": "double", "test": "",
           "prompt": 'def double(xs: list[int]) -> list[int]:\n    """Double each number.\n\n'
                     "    >>> double([1, 2])\n    [2, 4]\n    >>> double([])\n    []\n"
                     "    >>> double(\n    ...     [3])\n    [6]\n"
                     "    >>> print(double([1]))\n    [2]\n"  # prints: its output is no return value
                     '    >>> double([5])\n    ten and more\n    """\n'}  # prose: dropped


def E(call, expected):
    return examples.Example(call, expected)


def test_doctests_are_parsed_prose_and_prints_dropped():
    assert examples.parse(DOCTEST) == [E("double([1, 2])", "[2, 4]"), E("double([])", "[]"), E("double(\n[3])", "[6]")]


def test_arrow_forms_are_parsed_and_the_signature_is_not():
    prompt = ('def add(x: int, y: int) -> int:\n    """For example:\n    add(2, 3) == 5\n    add(1, 1) -> 2\n'
              '    add(0, 7) ➞ 7.\n    add(4, 4) => true\n    padd(1, 2) == 9\n    add(1, 2) is three\n    """\n')
    found = examples.parse({"prompt": prompt, "entry_point": "add"})
    assert found == [E("add(2, 3)", "5"), E("add(1, 1)", "2"), E("add(0, 7)", "7"), E("add(4, 4)", "True")]


def test_mbpp_examples_are_the_last_tasks_asserts_not_the_shots():
    problem = to_problem({"task_id": 11, "text": "Remove a character.", "test_list": [
        "assert remove_Occ('hello','l') == 'heo'", "assert remove_Occ('abcda','a')=='bcd'",
        "assert math.isclose(f(1), 2.0)"]})
    assert examples.parse(problem) == [E("remove_Occ('hello', 'l')", "'heo'"), E("remove_Occ('abcda', 'a')", "'bcd'")]


def test_prompts_without_examples_have_none():
    assert examples.parse({"prompt": "def f(x):\n    \"\"\"Return x.\"\"\"\n", "entry_point": "f"}) == []
    assert examples.parse({"prompt": "x", "entry_point": None, "judge": "apps"}) == []


def test_toy_prompts_state_examples_that_the_canonical_solution_reproduces():
    problem = toy.load_problems("eval", 1)[0]
    found = examples.parse(problem)
    assert 2 <= len(found) <= 4
    probe = examples.read_probe(run_program(examples.program(problem, problem["canonical_solution"], found)),
                                len(found))
    assert probe["ran"] and all(probe["reproduced"])


@pytest.mark.parametrize("body, ran, reproduced, raised", [
    ("    return [2 * x for x in xs]\n", True, [True, True], [False, False]),
    ("    print('noise')\n    return xs\n", True, [False, True], [False, False]),   # [] == [] by chance
    ("    return xs[0] * 2\n", True, [False, False], [False, True]),   # double([]) raises: no output
    ("    while True:\n        pass\n", False, [False, False], [True, True]),  # timed out
    ("    return (\n", False, [False, False], [True, True]),  # does not compile
])
def test_the_probe_runs_in_the_sandbox(body, ran, reproduced, raised):
    found = examples.parse(DOCTEST)[:2]
    probe = examples.read_probe(run_program(examples.program(DOCTEST, body, found), timeout=1.0), len(found))
    assert probe["ran"] == ran and probe["reproduced"] == reproduced
    assert [o is None for o in probe["outputs"]] == raised


def test_equal_outputs_hash_equal_across_processes():
    """Sets and dicts print in hash order, which differs between processes: outputs are canonical."""
    problem = {"prompt": 'def f(n):\n    """\n    >>> f(3)\n    {}\n    """\n', "entry_point": "f"}
    found = examples.parse(problem)
    a = examples.read_probe(run_program(examples.program(problem, "    return {str(i) for i in range(n)}\n", found)), 1)
    b = examples.read_probe(run_program(examples.program(problem, "    return set(map(str, range(n - 1, -1, -1)))\n",
                                                         found)), 1)
    assert a["outputs"] == b["outputs"] and a["outputs"][0] is not None and a["reproduced"] == [False]


def probe(outputs, reproduced=None):
    outputs = list(outputs)
    return {"ran": True, "outputs": outputs, "reproduced": reproduced or [False] * len(outputs)}


def brute_vote(passed, scores, probes, k):
    """The vote's pick in every k-subset, by its definition."""
    total = 0
    for subset in itertools.combinations(range(len(passed)), k):
        sigs = [tuple(probes[j]["outputs"]) if probes[j] and None not in probes[j]["outputs"] else None
                for j in subset]
        size = {s: sigs.count(s) for s in sigs if s is not None}
        pick = max(zip(subset, sigs), key=lambda js: (size.get(js[1], 0), scores[js[0]], -js[0]))[0]
        total += passed[pick]
    return total / math.comb(len(passed), k)


def test_vote_picks_from_the_largest_cluster():
    # samples 0-1 agree (wrong), 2-4 agree (right), 5 alone, 6 raises: the cluster of three wins at k = n
    probes = [probe("a"), probe("a"), probe("b"), probe("b"), probe("b"), probe("c"), probe([None])]
    passed = [False, False, True, True, True, False, False]
    scores = [0.0, -0.1, -3.0, -2.0, -2.5, 1.0, 2.0]
    assert vote_at_k(passed, scores, probes, 7, seed=0) == 1.0
    for k in range(1, 8):
        assert vote_at_k(passed, scores, probes, k, seed=0) == pytest.approx(brute_vote(passed, scores, probes, k))


def test_vote_ties_between_clusters_go_to_self_then_position():
    probes = [probe("a"), probe("a"), probe("b"), probe("b")]
    assert vote_at_k([False, False, True, True], [-1.0, -1.0, -0.5, -2.0], probes, 4, seed=0) == 1.0
    assert vote_at_k([True, False, False, True], [0.0] * 4, probes, 4, seed=0) == 1.0  # file order: sample 0


def test_vote_falls_back_to_self_without_outputs():
    probes = [None, None, None]  # no examples in the prompt
    passed, scores = [False, True, False], [-2.0, -1.0, -3.0]
    for k in (1, 2, 3):
        assert vote_at_k(passed, scores, probes, k, seed=0) == pytest.approx(rank_score_at_k(scores, passed, k))


def test_vote_samples_subsets_when_there_are_many():
    n, k = 14, 7  # C(14, 7) = 3,432 subsets: SUBSETS of them are drawn
    probes = [probe(["x" if j % 3 else "y"]) for j in range(n)]
    passed = [j % 3 == 0 for j in range(n)]  # the minority cluster is the right one
    scores = [-0.1 * (j % 5) for j in range(n)]
    value = vote_at_k(passed, scores, probes, k, seed=0)
    assert value == vote_at_k(passed, scores, probes, k, seed=0)  # seeded
    assert value == pytest.approx(brute_vote(passed, scores, probes, k), abs=0.05)  # sd <= 0.016


def test_examples_filter_ranks_the_kept_samples_by_self():
    yes, no = probe("a", [True]), probe("b", [False])
    probes, passed = [no, yes, no, yes], [False, True, False, False]
    scores = [0.0, -2.0, -0.5, -1.0]  # self prefers the failing samples; among the kept, sample 3
    assert examples_at_k(passed, scores, probes, 4) == 0.0  # sample 3 is kept and ranked first
    scores[1] = -0.9
    assert examples_at_k(passed, scores, probes, 4) == 1.0
    # k = 1: any one sample; k = 2: the pair's kept sample if it has one, else its best by self
    assert examples_at_k(passed, scores, probes, 1) == 0.25
    brute = sum(passed[max(p, key=lambda j: (probes[j] is yes, scores[j]))]
                for p in itertools.combinations(range(4), 2)) / 6
    assert examples_at_k(passed, scores, probes, 2) == pytest.approx(brute)


def test_examples_filter_falls_back_to_self_when_nothing_is_kept():
    scores, passed = [-1.0, -0.2, -3.0], [True, False, False]
    did_not_run = {"ran": False, "outputs": [None], "reproduced": [False]}
    for probes in ([None] * 3, [probe("a", [False])] * 3, [did_not_run] * 3):
        for k in (1, 2, 3):
            assert examples_at_k(passed, scores, probes, k) == rank_score_at_k(scores, passed, k)


def test_selection_stats_say_how_often_they_had_something():
    yes, no, bad = probe("a", [True]), probe("b", [False]), probe([None])
    problems = [[yes, no], [no, bad], [None, None]]
    assert selection_stats("examples", problems) == {
        "problems_without_examples": pytest.approx(1 / 3), "samples_selected": 0.25,
        "problems_falling_back": pytest.approx(2 / 3)}
    assert selection_stats("vote", problems) == {
        "problems_without_examples": pytest.approx(1 / 3), "samples_selected": 0.75,
        "problems_falling_back": pytest.approx(1 / 3), "largest_group_share": 0.5}


@pytest.mark.parametrize("text, allowed, message", [
    ("self,self", True, "distinct"), ("vote,,examples", True, "distinct"), ("self", False, "'self' is invalid here"),
])
def test_bad_rankers(text, allowed, message):
    with pytest.raises(InvalidInput, match=message):
        parse_rankers(text, allowed)
