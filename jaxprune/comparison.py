"""Students compared across pruning methods and keep ratios: evaluation summaries grouped, tabulated and plotted.

Each evaluation summary (the evaluate CLI's `<output>.summary.json`) of a distilled student carries the student's
`distillation` provenance: method, keep ratio asked and achieved, seed. Summaries of the same method and keep ratio
are one row: accuracy as the mean over seeds with its spread, and a 95% bootstrap interval over every answered
question of every seed pooled (so it covers question sampling, not the variation between seeds, which the spread
shows). A summary without provenance (a model evaluated as it is, e.g. the student before training) is a row of
its own, named by `base_name`. All summaries must come from the same questions.
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

import numpy as np

from jaxprune.evaluation import bootstrap_interval
from jaxprune.plotting import pyplot, save_figure

METHOD_ORDER = ("unpruned", "greedy", "uniform", "surprisal", "attention", "llmlingua2")


def comparison_rows(summaries: Sequence[dict[str, Any]], base_name: str = "base model") -> list[dict[str, Any]]:
    """One row per (method, keep ratio): accuracy over seeds, a pooled interval, reasoning length."""
    question_sets = {(s.get("source"), s.get("split"), s.get("questions")) for s in summaries}
    if len(question_sets) > 1:
        raise ValueError(f"the summaries evaluate different question sets (source, split, count): "
                         f"{sorted(question_sets, key=str)}")
    groups: dict[tuple[str, float | None], list[dict[str, Any]]] = collections.defaultdict(list)
    for summary in sorted(summaries, key=lambda s: (s.get("distillation") or {}).get("seed", 0)):
        training = summary.get("distillation")
        key = (training["method"], training["keep_ratio"]) if training else (base_name, None)
        groups[key].append(summary)
    rows = []
    for (method, keep_ratio), group in groups.items():
        accuracies = [s["accuracy"] for s in group]
        pooled = np.concatenate([np.repeat([1.0, 0.0], [s["correct"], s["questions"] - s["correct"]])
                                 for s in group])
        achieved = [s["distillation"]["achieved_keep_ratio"] for s in group if s.get("distillation")]
        rows.append({"method": method, "keep_ratio": keep_ratio,
                     "achieved_keep_ratio": float(np.mean(achieved)) if achieved else None,
                     "seeds": sorted(s["distillation"]["seed"] for s in group if s.get("distillation")),
                     "accuracy": float(np.mean(accuracies)),
                     "accuracy_sd": float(np.std(accuracies, ddof=1)) if len(group) > 1 else 0.0,
                     "accuracy_ci95": list(bootstrap_interval(pooled)), "accuracy_per_seed": accuracies,
                     "questions": int(sum(s["questions"] for s in group)),
                     "mean_reasoning_tokens": float(np.mean([s["mean_reasoning_tokens"] for s in group]))})
    rank = {method: index for index, method in enumerate(METHOD_ORDER)}
    return sorted(rows, key=lambda r: (r["keep_ratio"] is not None, rank.get(r["method"], len(rank)), r["method"],
                                       -(r["keep_ratio"] or 0)))


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a GitHub markdown table."""
    lines = ["| method | keep ratio (achieved) | seeds | accuracy, mean ± sd over seeds | 95% interval (pooled) "
             "| per seed | reasoning tokens |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        keep = "-" if row["keep_ratio"] is None else f"{row['keep_ratio']:g} ({row['achieved_keep_ratio']:.3f})"
        low, high = row["accuracy_ci95"]
        per_seed = ", ".join(f"{a:.1%}" for a in row["accuracy_per_seed"])
        lines.append(f"| {row['method']} | {keep} | {len(row['accuracy_per_seed'])} | {row['accuracy']:.1%} ± "
                     f"{row['accuracy_sd']:.1%} | {low:.1%}-{high:.1%} | {per_seed} | "
                     f"{row['mean_reasoning_tokens']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict[str, Any]], path: str) -> None:
    """Accuracy (pooled 95% interval as error bars) and generated reasoning tokens against keep ratio, one line per
    method; rows without a keep ratio (unpruned, base model) are drawn as horizontal references."""
    figure, (accuracy_axis, length_axis) = pyplot().subplots(1, 2, figsize=(11, 4.2))
    by_method = collections.defaultdict(list)
    for row in rows:
        by_method[row["method"]].append(row)
    for index, (method, group) in enumerate(by_method.items()):
        color = f"C{index}"
        if all(r["keep_ratio"] is None or r["keep_ratio"] >= 1 for r in group):
            for axis, value in ((accuracy_axis, group[0]["accuracy"]), (length_axis,
                                                                         group[0]["mean_reasoning_tokens"])):
                axis.axhline(value, color=color, linestyle="--", label=method)
            continue
        group = sorted(group, key=lambda r: r["keep_ratio"])
        x = [r["keep_ratio"] for r in group]
        accuracy = np.array([r["accuracy"] for r in group])
        error = np.abs(np.array([r["accuracy_ci95"] for r in group]).T - accuracy)
        accuracy_axis.errorbar(x, accuracy, yerr=error, color=color, marker="o", capsize=3, label=method)
        length_axis.plot(x, [r["mean_reasoning_tokens"] for r in group], color=color, marker="o", label=method)
    accuracy_axis.set(xlabel="training keep ratio", ylabel="student accuracy", title="Accuracy (95% interval)")
    length_axis.set(xlabel="training keep ratio", ylabel="mean generated reasoning tokens",
                    title="Reasoning length")
    for axis in (accuracy_axis, length_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    save_figure(figure, path, dpi=120)
