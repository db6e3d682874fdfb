"""Budget-matched evaluation of a model ladder (Hassid et al. 2024): tasks, a sandbox to run their
tests, pass@k / rank-score@k, FLOP and time budgets, and `budget-sampler eval` (run.py)."""
