"""What a sample costs a model (FLOPs from its config, seconds from the run), how many samples each
model of a ladder draws, and how many samples a budget buys.

FLOP counts follow the usual 2 FLOPs per multiply-accumulate. Budgets are compared in units of one
sample of the cheapest model, on a doubling grid, as in Hassid et al. 2024 (pass_flops@f: pass@k at
the largest k whose cost fits f). Each model draws what the budget of the most expensive model's n
samples buys it (the paper gives its 7B hundreds of samples against a few of its 70B), so no cell
below that budget compares a model held to fewer samples than it could afford; eval raises the counts
after drawing where other budget kinds (exact FLOPs, eFLOPs, seconds) buy a model more (run._topped_up).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from ..errors import InvalidInput
from ..models.shape import PAPER_TOKENS, ModelShape

FLOPS_MODES = ("paper", "exact")


def flops_per_sample(config, mode: str = "paper", prompt_tokens: int = 0, new_tokens: int = PAPER_TOKENS,
                     samples_per_prompt: int = 1) -> float:
    """FLOPs of one sample of the model a transformers config describes. "paper": Hassid et al.'s
    constant; "exact": what our engine spends for these token counts (see ModelShape.sample_flops)."""
    shape = ModelShape.from_config(config)
    if mode == "paper":
        return shape.paper_flops()
    if mode == "exact":
        return shape.sample_flops(prompt_tokens, new_tokens, samples_per_prompt)
    raise InvalidInput(f"FLOPs mode {mode!r} is invalid: choose one of {', '.join(FLOPS_MODES)}")


@dataclass(frozen=True)
class CostModel:
    """Cost of k samples of one problem: fixed + k x per_sample (fixed: a prefill shared by all k)."""
    fixed: float
    per_sample: float

    def cost(self, k: int) -> float:
        return self.fixed + k * self.per_sample

    def affordable(self, budget: float, n: int) -> int:
        """The largest k <= n whose cost fits the budget (0 when not even one sample does)."""
        if self.per_sample <= 0:
            return n if budget >= self.fixed else 0
        k = math.floor((budget - self.fixed) / self.per_sample + 1e-9)  # 1e-9: grid points are exact
        return max(0, min(n, k))


def sample_counts(costs: dict[str, float], n: int, max_n: Optional[int] = None) -> dict[str, int]:
    """Samples per problem for each model (by its cost of one sample): the most expensive draws n, every
    other what the same budget buys it, floor(n x its cost ratio), at most max_n."""
    top = max(costs.values())
    if min(costs.values()) <= 0:
        raise ValueError(f"cost of one sample must be positive, got {costs}")
    return {name: min(max_n or math.inf, math.floor(n * top / c + 1e-9)) for name, c in costs.items()}


def budget_grid(costs: list[CostModel], counts: list[int], marked: Sequence[int] = ()) -> tuple[float, list[float]]:
    """The unit (one sample of the cheapest model) and the budgets in that unit: the doubling grid 1, 2,
    4, ... up to the budget at which every model has drawn all its samples, that budget itself, and the
    budgets at which each `marked` model (the most expensive, whose n samples set the others' counts)
    has drawn all of its own: Hassid et al.'s rightmost point. No row lies between that and the budget of
    its next sample: there it is not capped, while models whose counts other budget kinds raised further
    may be, and its own row already compares them. Past the top every cell is capped (a model held to
    fewer samples than it could afford), which decides nothing."""
    unit = min(c.cost(1) for c in costs)
    if unit <= 0:
        raise ValueError(f"cost of one sample must be positive, got {unit}")
    totals = [c.cost(n) / unit for c, n in zip(costs, counts)]
    top = max(totals)
    grid = [2 ** j for j in range(math.floor(math.log2(top) + 1e-9) + 1)]
    for end in [totals[i] for i in marked] + [top]:  # each unless a grid point already is it
        if all(abs(end - b) > b * 1e-9 for b in grid):
            grid.append(end)
    gaps = [(totals[i], costs[i].cost(counts[i] + 1) / unit) for i in marked]
    return unit, [b for b in sorted(grid) if not any(lo * (1 + 1e-9) < b < hi for lo, hi in gaps)]
