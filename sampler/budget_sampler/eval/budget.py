"""What a sample costs a model (FLOPs from its config, seconds from the run) and how many samples a
budget buys.

FLOP counts follow the usual 2 FLOPs per multiply-accumulate. Budgets are compared in units of one
sample of the cheapest model, on a doubling grid, as in Hassid et al. 2024 (pass_flops@f: pass@k at
the largest k whose cost fits f).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

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


def budget_grid(costs: list[CostModel], n: int) -> tuple[float, list[int]]:
    """The unit (one sample of the cheapest model) and the doubling grid 1, 2, 4, ... of budgets in
    that unit, up to the first budget at which every model can draw all n samples."""
    unit = min(c.cost(1) for c in costs)
    if unit <= 0:
        raise ValueError(f"cost of one sample must be positive, got {unit}")
    top = max(c.cost(n) for c in costs) / unit
    return unit, [2 ** j for j in range(max(0, math.ceil(math.log2(top) - 1e-9)) + 1)]
