"""Rankers: how one sample is chosen from k without the hidden tests, and rank-score@k under each.

`--ranker` names any of:
  * `self`: the sample's mean log-prob under the model that drew it (Hassid et al. 2024's ranker);
  * a model name: its mean log-prob under that model (run.py scores with it);
  * `examples`: keep the samples that reproduce every example the prompt states (examples.py), best
    `self` first; when none in the k is kept, or the prompt has no examples, all k by `self` (AlphaCode's
    filtering on the statement's example tests, Li et al. 2022, Sec. 4.5);
  * `vote`: run the samples on the examples' inputs only, group them by their outputs, pick the best
    `self` sample of the largest group: MBR-exec (Shi et al. 2022) with its execution loss
    l(p, p') = [p(x) != p'(x) for some input x], i.e. argmin_p sum_p' l(p, p') = argmax_p |{p': equal
    outputs}| (AlphaCode's clustering, Sec. 4.6; CodeT, Chen et al. 2022, agrees on model-written tests
    instead). Samples that raise on an input or do not run to the end vote for nothing; when no sample
    in the k votes, all k by `self`.
Ties left after `self` go to the lower sample position (in `evaluate`, the samples file's order).
"""
from __future__ import annotations

import itertools
import math
from collections import Counter
from statistics import fmean
from typing import Optional, Sequence

import numpy as np

from ..errors import InvalidInput
from .metrics import rank_score_at_k

SELF = "self"
SELECTORS = ("examples", "vote")  # the rankers that execute samples on the prompt's examples
SUBSETS = 1000  # k-subsets per problem for vote's rank-score@k (all of them where there are fewer)


def parse_rankers(text: str, models_allowed: bool = True) -> list[str]:
    """--ranker: comma-separated, distinct; `self`, `examples`, `vote` or (models_allowed) model names."""
    names = [name.strip() for name in str(text).split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise InvalidInput(f"--ranker {text!r} is invalid: give distinct comma-separated rankers")
    if not models_allowed and (bad := [n for n in names if n not in SELECTORS]):
        raise InvalidInput(f"ranker {bad[0]!r} is invalid here: without a model, choose from {', '.join(SELECTORS)}")
    return names


def kept(probe: Optional[dict]) -> bool:
    """The sample ran to its end and reproduced every example (False without examples)."""
    return bool(probe and probe["ran"] and probe["reproduced"] and all(probe["reproduced"]))


def signature(probe: Optional[dict]) -> Optional[tuple]:
    """The sample's outputs on the examples' inputs, if it ran to its end and no call raised."""
    if not probe or not probe["ran"] or not probe["outputs"] or None in probe["outputs"]:
        return None
    return tuple(probe["outputs"])


def examples_at_k(passed: Sequence[bool], scores: Sequence[float], probes: Sequence[Optional[dict]], k: int) -> float:
    """rank-score@k of the examples filter: the exact expectation of metrics.rank_score_at_k over the
    order (kept, self): a k-subset's top sample is its best kept one, or its best by self if none is."""
    return rank_score_at_k([(kept(p), s) for p, s in zip(probes, scores)], passed, k)


def vote_at_k(passed: Sequence[bool], scores: Sequence[float], probes: Sequence[Optional[dict]], k: int,
              seed: int) -> float:
    """rank-score@k of the vote: the pass rate of its pick over k-subsets of the n samples, all of them
    where C(n, k) <= SUBSETS, else SUBSETS drawn uniformly (seeded), as AlphaCode estimates n@k.
    The pick maximises (size of its output group within the subset, self, -position)."""
    n = len(passed)
    if not 1 <= k <= n:
        raise InvalidInput(f"k={k} is invalid: must be between 1 and the number of samples n={n}")
    groups = {s: g for g, s in enumerate(dict.fromkeys(s for s in map(signature, probes) if s is not None))}
    group = np.array([groups.get(signature(p), -1) for p in probes])
    by_self = np.empty(n, dtype=np.int64)  # 0 = worst by (self, -position)
    by_self[sorted(range(n), key=lambda j: (scores[j], -j))] = np.arange(n)
    if math.comb(n, k) <= SUBSETS:
        subsets = np.array(list(itertools.combinations(range(n), k)))
    else:
        rng = np.random.default_rng([seed, k])
        subsets = np.argsort(rng.random((SUBSETS, n)), axis=1)[:, :k]
    g = group[subsets] + 1  # [subsets, k]; 0: votes for nothing
    width = len(groups) + 1
    counts = np.bincount((g + width * np.arange(len(g))[:, None]).ravel(), minlength=width * len(g))
    sizes = np.take_along_axis(counts.reshape(len(g), width), g, axis=1) * (g > 0)  # each member's group size
    picks = np.take_along_axis(subsets, np.argmax(sizes * n + by_self[subsets], axis=1)[:, None], axis=1)[:, 0]
    return float(np.mean(np.asarray(passed, dtype=float)[picks]))


def rank_score(ranker: str, passed: Sequence[bool], scores: Sequence, probes: Sequence[Optional[dict]], k: int,
               seed: int) -> float:
    """One problem's rank-score@k under `ranker`; `scores` are that ranker's log-probs, or for the
    selectors `self`'s (their tie-break)."""
    if ranker == "examples":
        return examples_at_k(passed, scores, probes, k)
    if ranker == "vote":
        return vote_at_k(passed, scores, probes, k, seed)
    return rank_score_at_k(scores, passed, k)


def selection_stats(ranker: str, problems: Sequence[Sequence[Optional[dict]]]) -> dict:
    """How often a selector had something to go on, over problems (each: its samples' probes, None
    without examples): problems with no examples; samples kept (examples) or voting (vote), among
    problems with examples; problems where no sample is (so all n fall back to self); for vote, the
    mean share of the samples in the largest group."""
    with_examples = [p for p in problems if p and any(x is not None for x in p)]
    test = kept if ranker == "examples" else (lambda x: signature(x) is not None)
    out = {"problems_without_examples": 1 - len(with_examples) / len(problems) if problems else None,
           "samples_selected": fmean(test(x) for p in with_examples for x in p) if with_examples else None,
           "problems_falling_back": fmean(not any(map(test, p)) for p in problems) if problems else None}
    if ranker == "vote":
        shares = [max(Counter(s for s in map(signature, p) if s is not None).values(), default=0) / len(p)
                  for p in with_examples]
        out["largest_group_share"] = fmean(shares) if shares else None
    return out
