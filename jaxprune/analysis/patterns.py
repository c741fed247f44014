"""Pruning patterns: how much of each functional role a method keeps as pruning proceeds, against uniform deletion.

At keep ratio k a chain of N reasoning tokens has lost the first `N - int(N * k)` tokens of its deletion order. The
retention of a role is the share of its tokens still kept, pooled over chains; uniform random deletion keeps every
role at the overall kept share in expectation, so retention / overall share (the "ratio to uniform") above 1 means
the method holds on to that role.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from jaxprune.analysis.chain_view import token_texts
from jaxprune.analysis.roles import CATEGORIES, token_roles
from jaxprune.pruning.greedy import deletions_for
from jaxprune.plotting import pyplot, save_figure


def chain_roles(record: dict[str, Any], tokenizer) -> list[str]:
    """The role of each of the chain's reasoning tokens (pruner tokens), tagged with the question's entities."""
    return token_roles(token_texts(tokenizer, record["reasoning_token_ids"]), record.get("question", ""))


def retention(records: Sequence[dict[str, Any]], roles: Sequence[Sequence[str]],
              keep_ratios: Sequence[float]) -> dict[str, Any]:
    """Per keep ratio: each role's retention and ratio to uniform, the overall kept share, and token counts.

    Chains whose deletion order stops before a keep ratio are left out of that ratio's numbers."""
    rows = []
    for keep_ratio in keep_ratios:
        kept = dict.fromkeys(CATEGORIES, 0)
        total = dict.fromkeys(CATEGORIES, 0)
        chains = 0
        for record, chain in zip(records, roles):
            deletions = deletions_for(len(chain), keep_ratio)
            if deletions > len(record["deletion_order"]):
                continue
            chains += 1
            deleted = set(record["deletion_order"][:deletions])
            for position, role in enumerate(chain):
                total[role] += 1
                kept[role] += position not in deleted
        overall = sum(kept.values()) / max(sum(total.values()), 1)
        row = {"keep_ratio": keep_ratio, "chains": chains, "overall_kept": overall, "tokens": total,
               "retention": {}, "ratio_to_uniform": {}}
        for role in CATEGORIES:
            if total[role]:
                row["retention"][role] = kept[role] / total[role]
                row["ratio_to_uniform"][role] = row["retention"][role] / overall if overall else float("nan")
        rows.append(row)
    return {"rows": rows}


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    """Ratio to uniform per method (rows) and role (columns) at each keep ratio."""
    lines = ["| method | keep ratio | " + " | ".join(CATEGORIES) + " |",
             "| --- | --- | " + " | ".join("---" for _ in CATEGORIES) + " |"]
    for method, result in results.items():
        for row in result["rows"]:
            cells = [f"{row['ratio_to_uniform'][r]:.2f}" if r in row["ratio_to_uniform"] else "-" for r in CATEGORIES]
            lines.append(f"| {method} | {row['keep_ratio']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict[str, Any]], path: str) -> None:
    """One panel per method: each role's retention against the overall kept share; the diagonal is uniform."""
    figure, axes = pyplot().subplots(1, len(results), figsize=(4.2 * len(results), 4), squeeze=False)
    for axis, (method, result) in zip(axes[0], results.items()):
        overall = [row["overall_kept"] for row in result["rows"]]
        for index, role in enumerate(CATEGORIES):
            values = [row["retention"].get(role, np.nan) for row in result["rows"]]
            axis.plot(overall, values, marker="o", color=f"C{index}", label=role.lower())
        axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="uniform")
        low = min(overall + [1.0]) - 0.05
        axis.set(xlim=(low, 1.01), ylim=(0, 1.05), title=method, xlabel="reasoning tokens kept (share)",
                 ylabel="share of the role kept")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    save_figure(figure, path, dpi=110)
