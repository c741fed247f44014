"""Students compared across pruning methods and keep ratios: evaluation summaries grouped, tested, tabulated, plotted.

Each evaluation summary (the evaluate CLI's `<output>.summary.json`) holds every question's outcome by id, and for a
distilled student its `distillation` provenance: method, keep ratio asked and achieved, seed. Summaries of the same
method and keep ratio are one row; a summary without provenance (a model evaluated as it is) is a row of its own,
named `base_name`. All summaries must answer the same questions. The statistics are `jaxprune.statistics`'.

A row's accuracy is the mean over its seeds, with their spread, and the 95% interval the table reports
(`accuracy_reported_ci95`): for a row of several seeds a two-level bootstrap that resamples questions and training
seeds together (`accuracy_seed_question_ci95`), since another set of seeds would move the accuracy too; for a row of
one result the Wilson interval of its correct count over the questions (`accuracy_wilson_ci95`). `accuracy_ci95`
stays the interval of earlier tables: questions resampled, each carrying its accuracy averaged over the row's seeds
(it leaves the spread between seeds out).

Every other row is compared paired with the reference method (greedy, or the approximate mode standing in for it) at
its keep ratio (rows without one, unpruned students and base models, with the reference at each keep ratio), on the
same questions: the accuracy difference (method - reference, each averaged over its seeds); its 95% interval
resampling questions and seed pairs together (`difference_seed_question_ci95`; the seed pairs are students of the
same seed, a base model with every reference seed; `difference_seed_pairs` is the difference those pairs average to);
one sign-flip permutation p over questions of the seed-averaged difference (`permutation_p`); and that p
Holm-adjusted over every paired comparison of the table (`permutation_p_holm`: the family, `holm_comparisons` of
them, is all rows' comparisons at every keep ratio, as the markdown table shows them). The plot draws the reported
intervals. Kept for continuity in the JSON rows: the question-only
interval of the difference (`difference_ci95`) and an exact McNemar test per seed pair (`mcnemar`).
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

import numpy as np

from jaxprune.plotting import pyplot, save_figure
from jaxprune.statistics import (holm, paired_comparison, question_interval, question_seed_interval,
                                 wilson_interval)

METHOD_ORDER = ("unpruned", "greedy", "uniform", "surprisal", "h2o", "llmlingua2")
REFERENCE = "greedy"
RESAMPLES = 10_000  # bootstrap resamples and random sign flips


def _question_ids(summaries: Sequence[dict[str, Any]]) -> list[str]:
    question_sets = {(s.get("source"), s.get("split"), tuple(sorted(s["outcomes"]))) for s in summaries}
    if len(question_sets) > 1:
        described = sorted(f"{source}/{split}: {len(ids)} questions" for source, split, ids in question_sets)
        raise ValueError(f"the summaries evaluate different question sets: {described}")
    return sorted(summaries[0]["outcomes"])


def comparison_rows(summaries: Sequence[dict[str, Any]], base_name: str = "base model",
                    reference: str = REFERENCE) -> list[dict[str, Any]]:
    """One row per (method, keep ratio): accuracy over seeds, its intervals, reasoning length, and `paired` (its
    paired comparisons with the `reference` method, Holm-adjusted over all rows' comparisons; see the module
    docstring)."""
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
                     "accuracy_ci95": list(question_interval(correct, resamples=RESAMPLES)),
                     **_accuracy_intervals(correct),
                     "accuracy_per_seed": accuracies, "questions": len(ids),
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
        row["paired"] = [_paired(row, ref, reference) for ref in sorted(against, key=lambda r: -r["keep_ratio"])]
    for row in rows:
        del row["_correct"]
    rank = {method: index for index, method in enumerate(METHOD_ORDER)}
    rows = sorted(rows, key=lambda r: (r["keep_ratio"] is not None, rank.get(r["method"], len(rank)), r["method"],
                                       -(r["keep_ratio"] or 0)))
    pairs = [pair for row in rows for pair in row["paired"]]
    for pair, adjusted in zip(pairs, holm_adjusted(rows)):
        pair["permutation_p_holm"] = adjusted
        pair["holm_comparisons"] = len(pairs)
    return rows


def _accuracy_intervals(correct: np.ndarray) -> dict[str, Any]:
    """The row's intervals besides the question-only one, and which of them the table reports: several seeds, the
    two-level bootstrap over questions and seeds; one result, Wilson over its questions."""
    if len(correct) > 1:
        interval, wilson = list(question_seed_interval(correct, resamples=RESAMPLES)), None
        reported = "questions and seeds resampled"
    else:
        interval, wilson, reported = None, list(wilson_interval(int(correct.sum()), correct.shape[1])), "Wilson"
    return {"accuracy_seed_question_ci95": interval, "accuracy_wilson_ci95": wilson,
            "accuracy_reported_ci95": interval or wilson, "accuracy_reported_interval": reported}


def _paired(row, ref, reference: str) -> dict[str, Any]:
    """`row` against the reference row `ref` (see the module docstring); Holm's adjustment is added later."""
    pairs = _seed_pairs(row, ref)
    comparison = paired_comparison(row["_correct"], ref["_correct"], seed_pairs=pairs,
                                   resamples=RESAMPLES).as_dict()
    seeds = [(row["seeds"][i] if row["seeds"] else None, ref["seeds"][j]) for i, j in pairs]
    difference = (float(np.mean([row["_correct"][i].mean() - ref["_correct"][j].mean() for i, j in pairs]))
                  if pairs else None)
    return dict(reference=reference, reference_keep_ratio=ref["keep_ratio"], **comparison,
                seed_pairs=[list(pair) for pair in seeds], difference_seed_pairs=difference)


def holm_adjusted(rows: Sequence[dict[str, Any]]) -> list[float]:
    """Holm-adjusted permutation p-values of every paired comparison of `rows`, in table order (row by row, each
    row's comparisons in order): the family is all the comparisons the markdown table of `rows` shows."""
    return holm([pair["permutation_p"] for row in rows for pair in row["paired"]]).tolist()


def _seed_pairs(row, reference) -> list[tuple[int, int]]:
    """Which results McNemar pairs and the seed-and-question interval resamples together: students of the same seed
    (they saw the data in the same order); a model evaluated as it is (no seeds) with every seed of the reference."""
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
    """The rows as two GitHub markdown tables, each with a line on what its columns mean: accuracies, then the paired
    comparisons with the reference (Holm's adjustment over every comparison shown here)."""
    reference = _reference(rows)
    lines = ["| method | keep ratio (achieved) | seeds | accuracy, mean ± sd over seeds | 95% interval | per seed | "
             "reasoning tokens |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        low, high = row["accuracy_reported_ci95"]
        per_seed = ", ".join(f"{a:.1%}" for a in row["accuracy_per_seed"])
        lines.append(f"| {row['method']} | {_keep(row)} | {len(row['accuracy_per_seed'])} | {row['accuracy']:.1%} ± "
                     f"{row['accuracy_sd']:.1%} | {low:.1%}-{high:.1%} | {per_seed} | "
                     f"{row['mean_reasoning_tokens']:.1f} |")
    questions = rows[0]["questions"] if rows else 0
    lines += ["", f"95% interval: for a row of several seeds, a bootstrap resampling the {questions} questions and the "
              "training seeds together (so it includes the spread between seeds); for a row of one result, the "
              "Wilson interval of its correct count over the questions.", ""]
    adjusted = iter(holm_adjusted(rows))
    lines += [f"Paired with {reference} on the same questions (difference = method - {reference}, each averaged over "
              "its seeds):", "",
              f"| method | keep ratio | {reference} keep ratio | difference | 95% interval | permutation p | "
              "Holm-adjusted p |", "| --- | --- | --- | ---: | --- | ---: | ---: |"]
    for row in rows:
        for pair in row["paired"]:
            interval = pair["difference_seed_question_ci95"]
            low, high = interval or pair["difference_ci95"]
            note = " (questions only: no seed pairs)" if interval is None else (
                "" if abs(pair["difference_seed_pairs"] - pair["difference"]) < 5e-4
                else f" (seed pairs: {pair['difference_seed_pairs']:+.1%})")
            lines.append(f"| {row['method']} | {_keep(row)} | {pair['reference_keep_ratio']:g} | "
                         f"{pair['difference']:+.1%} | {low:+.1%} to {high:+.1%}{note} | "
                         f"{pair['permutation_p']:.3g} | {next(adjusted):.3g} |")
    comparisons = sum(len(row["paired"]) for row in rows)
    lines += ["", f"95% interval: a bootstrap resampling the questions and the seed pairs together (students of the "
              f"same seed; a model without seeds with every {reference} seed); where those pairs average to another "
              "difference than all seeds do, theirs is in brackets. Permutation p: two-sided sign-flip permutation "
              "test over questions of the seed-averaged difference (exact when at most 16 questions differ, else "
              f"{RESAMPLES:,} random flips: p is at least 1/{RESAMPLES + 1:,}). Holm-adjusted p: Holm's step-down "
              f"adjustment of the permutation p over the {comparisons} comparisons of this table. Exact McNemar tests "
              "per seed pair are in comparison.json (`mcnemar`)."]
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict[str, Any]], path: str) -> None:
    """Accuracy (with the table's 95% interval) and generated reasoning tokens against keep ratio, one line per
    method (rows without a keep ratio below 1 drawn as horizontal references), and each method's paired difference
    from the reference with its interval over questions and seed pairs (questions only where there are none)."""
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
            error = np.abs(np.array([r["accuracy_reported_ci95"] for r in group]).T - accuracy)
            accuracy_axis.errorbar(x, accuracy, yerr=error, color=color, marker="o", capsize=3, label=method)
            length_axis.plot(x, [r["mean_reasoning_tokens"] for r in group], color=color, marker="o", label=method)
        pairs = sorted(((p["reference_keep_ratio"], p) for r in group for p in r["paired"]), key=lambda x: x[0])
        if pairs:
            x = [keep + 0.004 * index for keep, _ in pairs]
            difference = np.array([p["difference"] for _, p in pairs])
            error = np.abs(np.array([p["difference_seed_question_ci95"] or p["difference_ci95"]
                                     for _, p in pairs]).T - difference)
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
