"""Budget tables of a synthetic ladder whose samples cost 1, 4 and 16: what each model draws, which cells
are capped (a model held to fewer samples than its budget buys) and who wins where."""
import math

import numpy as np
import pytest

from budget_sampler.eval import render
from budget_sampler.eval.budget import sample_counts
from budget_sampler.eval.intervals import Bootstrap
from budget_sampler.eval.report import ModelResults, budget_table, pass_rate_distribution
from budget_sampler.models.shape import PAPER_TOKENS, ModelShape

COSTS = {"xs": 1, "m": 4, "l": 16}
PROBLEMS = 60


def ladder(counts: dict[str, int], pass_rates: dict[str, float], seed: int = 0) -> list[ModelResults]:
    """ModelResults of random pass/fail samples (each problem's pass rate drawn around the model's), with
    paper FLOPs per sample in the ratios of COSTS."""
    rng = np.random.default_rng(seed)
    models = []
    for name, cost in COSTS.items():
        m = ModelResults.__new__(ModelResults)  # the report's view of a run, without a run directory
        m.name, m.n, m._values, m.rankers = name, counts[name], {}, ["self"]
        m.shape = ModelShape(parameters=0, matmul_parameters=cost * 1000, num_layers=1, attention_width=1)
        rates = rng.beta(4 * pass_rates[name], 4 * (1 - pass_rates[name]), PROBLEMS)
        m.tasks = [[{"passed": bool(rng.random() < p), "scores": {"self": float(rng.normal())}, "probe": None,
                     "ranker_seconds": {"self": 0.0}} for _ in range(m.n)] for p in rates]
        m.rows = [r for t in m.tasks for r in t]
        m.prefill, m.decode, m.seconds, m.intensity, m.decode_bytes = 0.0, 1.0, float(len(m.rows)), 0.0, 0.0
        models.append(m)
    return models


def with_fits(table: dict, models: list[ModelResults], boot: Bootstrap) -> dict:
    """The table with its extrapolated points' fitted pass@k, as build_report adds them."""
    for m in models:
        fit = m.coverage([1, 2, 4], boot)["extrapolated"]
        for point in table["extrapolated"][m.name]:
            point.update(fit[str(point["k"])])
    return table


def test_budget_matched_counts_leave_no_cell_capped_and_name_winners_from_the_cells():
    counts = sample_counts({name: ModelShape(0, c * 1000, 1, 1).paper_flops() for name, c in COSTS.items()}, n=4)
    assert counts == {"xs": 64, "m": 16, "l": 4}
    table = budget_table(ladder(counts, {"xs": 0.1, "m": 0.3, "l": 0.5}), "flops", Bootstrap(PROBLEMS))
    assert table["unit"] == 2 * 1000 * PAPER_TOKENS and table["unit_model"] == "xs"
    assert [row["budget"] for row in table["rows"]] == [1, 2, 4, 8, 16, 32, 64]
    for row in table["rows"]:
        for name, cell in row["models"].items():
            assert not cell["capped"] and cell["k"] == row["budget"] // COSTS[name] == cell["affordable"]
        assert not row["undecided_pass"] and row["undecided_rank_score"] == {"self": []}
        assert set(row["winner_pass"]) <= {name for name, c in row["models"].items() if c["k"]}
    assert table["rows"][0]["winner_pass"] == ["xs"]  # the only model a budget of one xs sample buys
    last = table["rows"][-1]["models"]
    assert [last[name]["k"] for name in COSTS] == [64, 16, 4]


def test_a_model_held_below_its_budget_is_capped_never_best_and_its_row_says_so():
    counts = sample_counts({name: float(c) for name, c in COSTS.items()}, n=4, max_n=16)
    assert counts == {"xs": 16, "m": 16, "l": 4}
    # xs is far better per sample: where it is capped it would still win, so the call is undecided
    models = ladder(counts, {"xs": 0.7, "m": 0.2, "l": 0.3})
    table = with_fits(budget_table(models, "flops", Bootstrap(PROBLEMS)), models, Bootstrap(PROBLEMS))
    rows = {row["budget"]: row for row in table["rows"]}
    assert list(rows) == [1, 2, 4, 8, 16, 32, 64]
    for budget, row in rows.items():
        xs = row["models"]["xs"]
        assert xs["capped"] == (budget > 16) and xs["k"] == min(budget, 16)
        assert xs["affordable"] == budget
        if xs["capped"]:
            assert "xs" not in row["winner_pass"] and "xs" not in row["winner_rank_score"]["self"]
            assert row["undecided_pass"] == ["xs"] and row["undecided_rank_score"] == {"self": ["xs"]}
            assert xs["pass"] == pytest.approx(rows[16]["models"]["xs"]["pass"])  # a lower bound, not grown
        else:
            assert not row["undecided_pass"]
    assert rows[16]["winner_pass"][0] == "xs"
    config = {"benchmark": "synthetic", "counts": counts, "n_per_model": None, "n": 4, "counts_from": "paper FLOPs",
              "max_n": 16, "max_n_binds": ["xs"], "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 8,
              "ranker": "self", "until_pass": False}
    markdown = "\n".join(render._header({"config": config, "problems": PROBLEMS})
                         + render._budget_section(table, list(COSTS)))
    assert "--max-n 16 holds xs below that" in markdown
    line = next(line for line in markdown.splitlines() if line.startswith("| 32 |"))
    assert "(16 of 32)" in line and "≥ " in line and "undecided: xs capped" in line


def test_a_capped_model_that_cannot_reach_the_best_leaves_the_pass_call_standing():
    counts = {"xs": 16, "m": 16, "l": 4}
    models = ladder(counts, {"xs": 0.02, "m": 0.2, "l": 0.9})
    row = next(r for r in budget_table(models, "flops", Bootstrap(PROBLEMS))["rows"] if r["budget"] == 64)
    xs = row["models"]["xs"]
    bound = np.mean(np.minimum(1, models[0].values("pass", 16) * 64 / 16))
    assert xs["capped"] and bound < row["models"][row["winner_pass"][0]]["pass"]
    assert row["undecided_pass"] == [] and row["undecided_rank_score"] == {"self": ["xs"]}
    assert row["winner_pass"][0] == "l"


def test_per_problem_pass_rates_and_their_histogram():
    m = ladder({"xs": 10, "m": 10, "l": 10}, {"xs": 0.1, "m": 0.5, "l": 0.9})[1]
    d = pass_rate_distribution(m)
    expected = [sum(r["passed"] for r in t) / 10 for t in m.tasks]
    assert d["pass_rate"] == expected and sum(d["histogram"]["counts"]) == PROBLEMS
    assert d["histogram"]["counts"][0] == expected.count(0.0) and d["histogram"]["bins"][0] == "0"
    assert d["histogram"]["counts"][-1] == sum(0.9 < r <= 1 for r in expected)


def test_the_plot_draws_capped_cells_and_the_per_problem_panel():
    counts = {"xs": 16, "m": 16, "l": 4}
    models = ladder(counts, {"xs": 0.3, "m": 0.3, "l": 0.3})
    boot = Bootstrap(PROBLEMS)
    table = with_fits(budget_table(models, "flops", boot), models, boot)
    report = {"models": {m.name: {} for m in models}, "budgets": [table],
              "per_problem": {m.name: pass_rate_distribution(m) for m in models},
              "efficiency": {m.name: {"time_split": {"decode": {"seconds": 1.0}}, "decode_tokens_per_second": 1.0,
                                      "step_over_floor": None} for m in models}}
    assert render.render_plot(report)[:4] == b"\x89PNG"
    assert math.isclose(report["budgets"][0]["rows"][-1]["budget"], 64)
