"""Students compared across pruning methods and keep ratios: evaluation summaries grouped, tested, tabulated, plotted.

Each evaluation summary (the evaluate CLI's `<output>.summary.json`) holds every question's outcome by id, and for a
distilled student its `distillation` provenance: method, keep ratio asked and achieved, seed. Summaries of the same
method and keep ratio are one row: accuracy as the mean over seeds with its spread, and a 95% interval that resamples
questions (each carrying its accuracy averaged over the row's seeds; `jaxprune.statistics`). Every other row is then
compared paired with the reference method (greedy, or the approximate mode standing in for it) at its keep ratio
(rows without one, unpruned students and base models, with the reference at each keep ratio): the accuracy difference, its paired bootstrap interval over questions, and an exact McNemar test for
each seed pair. A summary without provenance (a model evaluated as it is) is a row of its own, named `base_name`.
All summaries must answer the same questions.
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

import numpy as np

from jaxprune.plotting import pyplot, save_figure
from jaxprune.statistics import paired_comparison, question_interval

METHOD_ORDER = ("unpruned", "greedy", "uniform", "surprisal", "h2o", "llmlingua2")
REFERENCE = "greedy"


def _question_ids(summaries: Sequence[dict[str, Any]]) -> list[str]:
    question_sets = {(s.get("source"), s.get("split"), tuple(sorted(s["outcomes"]))) for s in summaries}
    if len(question_sets) > 1:
        described = sorted(f"{source}/{split}: {len(ids)} questions" for source, split, ids in question_sets)
        raise ValueError(f"the summaries evaluate different question sets: {described}")
    return sorted(summaries[0]["outcomes"])


def comparison_rows(summaries: Sequence[dict[str, Any]], base_name: str = "base model",
                    reference: str = REFERENCE) -> list[dict[str, Any]]:
    """One row per (method, keep ratio): accuracy over seeds, an interval over questions, reasoning length, and
    `paired` (its paired comparisons with the `reference` method, see the module docstring)."""
    ids = _question_ids(summaries)
    groups: dict[tuple[str, float | None], list[dict[str, Any]]] = collections.defaultdict(list)
    for summary in sorted(summaries, key=lambda s: (s.get("distillation") or {}).get("seed", 0)):
        training = summary.get("distillation")
        groups[(training["method"], training["keep_ratio"]) if training else (base_name, None)].append(summary)
    rows = []
    for (method, keep_ratio), group in groups.items():
        correct = np.array([[s["outcomes"][i] for i in ids] for s in group], bool)  # [seeds, questions]
        accuracies = correct.mean(axis=1).tolist()
        achieved = [s["distillation"]["achieved_keep_ratio"] for s in group if s.get("distillation")]
        rows.append({"method": method, "keep_ratio": keep_ratio,
                     "achieved_keep_ratio": float(np.mean(achieved)) if achieved else None,
                     "seeds": sorted(s["distillation"]["seed"] for s in group if s.get("distillation")),
                     "accuracy": float(np.mean(accuracies)),
                     "accuracy_sd": float(np.std(accuracies, ddof=1)) if len(group) > 1 else 0.0,
                     "accuracy_ci95": list(question_interval(correct)), "accuracy_per_seed": accuracies,
                     "questions": len(ids),
                     "mean_reasoning_tokens": float(np.mean([s["mean_reasoning_tokens"] for s in group])),
                     "_correct": correct})
    references = {row["keep_ratio"]: row for row in rows if row["method"] == reference}
    if not references and any(row["keep_ratio"] is not None and row["keep_ratio"] < 1 for row in rows):
        raise ValueError(f"no summaries of the reference method {reference!r} to pair the others with (methods: "
                         f"{sorted({row['method'] for row in rows})})")
    for row in rows:
        if row["method"] == reference:
            row["paired"] = []
            continue
        against = [references[row["keep_ratio"]]] if row["keep_ratio"] in references else (
            [] if row["keep_ratio"] is not None and row["keep_ratio"] < 1 else list(references.values()))
        row["paired"] = [dict(reference=reference, reference_keep_ratio=ref["keep_ratio"], **paired_comparison(
            row["_correct"], ref["_correct"], seed_pairs=_seed_pairs(row, ref)).as_dict())
            for ref in sorted(against, key=lambda r: -r["keep_ratio"])]
    for row in rows:
        del row["_correct"]
    rank = {method: index for index, method in enumerate(METHOD_ORDER)}
    return sorted(rows, key=lambda r: (r["keep_ratio"] is not None, rank.get(r["method"], len(rank)), r["method"],
                                       -(r["keep_ratio"] or 0)))


def _seed_pairs(row, reference) -> list[tuple[int, int]]:
    """Which results McNemar pairs: students of the same seed (they saw the data in the same order); a model
    evaluated as it is (no seeds) with every seed of the reference."""
    if not row["seeds"]:
        return [(0, j) for j in range(len(reference["seeds"]))]
    return [(i, reference["seeds"].index(seed)) for i, seed in enumerate(row["seeds"]) if seed in reference["seeds"]]


def _keep(row) -> str:
    if row["keep_ratio"] is None:
        return "-"
    achieved = row["achieved_keep_ratio"]
    return f"{row['keep_ratio']:g}" + ("" if achieved is None else f" ({achieved:.3f})")


def _reference(rows) -> str:
    return next((pair["reference"] for row in rows for pair in row["paired"]), REFERENCE)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as two GitHub markdown tables: accuracies, then the paired comparisons with the reference."""
    reference = _reference(rows)
    lines = ["| method | keep ratio (achieved) | seeds | accuracy, mean ± sd over seeds | 95% interval (questions "
             "resampled) | per seed | reasoning tokens |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        low, high = row["accuracy_ci95"]
        per_seed = ", ".join(f"{a:.1%}" for a in row["accuracy_per_seed"])
        lines.append(f"| {row['method']} | {_keep(row)} | {len(row['accuracy_per_seed'])} | {row['accuracy']:.1%} ± "
                     f"{row['accuracy_sd']:.1%} | {low:.1%}-{high:.1%} | {per_seed} | "
                     f"{row['mean_reasoning_tokens']:.1f} |")
    lines += ["", f"Paired with {reference} on the same questions (difference = method - {reference}; McNemar per "
              f"seed pair: questions only {reference} / only the method got right, exact two-sided p):", "",
              f"| method | keep ratio | {reference} keep ratio | difference | 95% paired interval | "
              "McNemar per seed |", "| --- | --- | --- | ---: | --- | --- |"]
    for row in rows:
        for pair in row["paired"]:
            low, high = pair["difference_ci95"]
            tests = "; ".join(f"{t['reference_only']}/{t['method_only']}, p={t['p']:.3g}" for t in pair["mcnemar"])
            lines.append(f"| {row['method']} | {_keep(row)} | {pair['reference_keep_ratio']:g} | "
                         f"{pair['difference']:+.1%} | {low:+.1%} to {high:+.1%} | {tests} |")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict[str, Any]], path: str) -> None:
    """Accuracy (95% interval over questions) and generated reasoning tokens against keep ratio, one line per method
    (rows without a keep ratio below 1 drawn as horizontal references), and each method's paired difference from
    the reference with its interval."""
    figure, (accuracy_axis, length_axis, paired_axis) = pyplot().subplots(1, 3, figsize=(16, 4.2))
    by_method = collections.defaultdict(list)
    for row in rows:
        by_method[row["method"]].append(row)
    for index, (method, group) in enumerate(by_method.items()):
        color = f"C{index}"
        if all(r["keep_ratio"] is None or r["keep_ratio"] >= 1 for r in group):
            for axis, value in ((accuracy_axis, group[0]["accuracy"]), (length_axis,
                                                                         group[0]["mean_reasoning_tokens"])):
                axis.axhline(value, color=color, linestyle="--", label=method)
        else:
            group = sorted(group, key=lambda r: r["keep_ratio"])
            x = [r["keep_ratio"] for r in group]
            accuracy = np.array([r["accuracy"] for r in group])
            error = np.abs(np.array([r["accuracy_ci95"] for r in group]).T - accuracy)
            accuracy_axis.errorbar(x, accuracy, yerr=error, color=color, marker="o", capsize=3, label=method)
            length_axis.plot(x, [r["mean_reasoning_tokens"] for r in group], color=color, marker="o", label=method)
        pairs = sorted(((p["reference_keep_ratio"], p) for r in group for p in r["paired"]), key=lambda x: x[0])
        if pairs:
            x = [keep + 0.004 * index for keep, _ in pairs]
            difference = np.array([p["difference"] for _, p in pairs])
            error = np.abs(np.array([p["difference_ci95"] for _, p in pairs]).T - difference)
            paired_axis.errorbar(x, difference, yerr=error, color=color, marker="o", capsize=3, linestyle="none",
                                 label=method)
    paired_axis.axhline(0.0, color="black", linewidth=0.8)
    accuracy_axis.set(xlabel="training keep ratio", ylabel="student accuracy", title="Accuracy (95% interval)")
    length_axis.set(xlabel="training keep ratio", ylabel="mean generated reasoning tokens",
                    title="Reasoning length")
    reference = _reference(rows)
    paired_axis.set(xlabel=f"{reference} keep ratio", ylabel=f"accuracy - {reference}'s",
                    title=f"Paired difference from {reference} (95% interval)")
    for axis in (accuracy_axis, length_axis, paired_axis):
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    save_figure(figure, path, dpi=120)
