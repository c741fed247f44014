"""Answer preservation (SPEC section 7): does the model still reach the teacher's answer from the pruned reasoning?

For a chain at keep ratio k the model reads its prompt, the reasoning tokens kept at k (the pruner's own ids, never
re-tokenized) and the opening of the answer up to where the value starts (`#### `, `{"answer": "`, `\\boxed{`: the
first tokens of the chain's answer span), then decodes greedily. The chain is preserved when the answer extracted
from that continuation equals the teacher's. Comparing methods at the same keep ratio compares them at identical
per-example lengths, since every method deletes `N - int(N * k)` tokens of each chain.
"""

from __future__ import annotations

from typing import Any, Sequence

from jaxprune.data.answers import extract_answer, is_correct
from jaxprune.data.teacher import end_of_turn_ids
from jaxprune.statistics import wilson_interval
from jaxprune.generation import SamplingConfig, generate
from jaxprune.pruning.greedy import deletions_for
from jaxprune.plotting import pyplot, save_figure


def answer_opening(record: dict[str, Any], tokenizer) -> list[int]:
    """The longest prefix of the chain's answer tokens that stops before the answer value: the text before the
    teacher's prediction (its last occurrence; else before the first digit) in the answer span as tokenized (for a
    thinking chain that span starts with the block's closing tag)."""
    ids, prediction = record["answer_token_ids"], record.get("prediction") or ""
    answer = tokenizer.decode(ids)
    cut = answer.rfind(prediction) if prediction and prediction in answer else next(
        (i for i, ch in enumerate(answer) if ch.isdigit()), len(answer))
    opening = answer[:cut]
    count = 0
    while count < len(ids) and opening.startswith(tokenizer.decode(ids[:count + 1]).rstrip()):
        count += 1
    return list(ids[:count])


def kept_prompt(record: dict[str, Any], keep_ratio: float) -> list[int]:
    """The chain's prompt and the reasoning kept at `keep_ratio`, as token ids."""
    reasoning = record["reasoning_token_ids"]
    deleted = set(record["deletion_order"][:deletions_for(len(reasoning), keep_ratio)])
    return list(record["prompt_token_ids"]) + [token for i, token in enumerate(reasoning) if i not in deleted]


def answer_preservation(model, tokenizer, records: Sequence[dict[str, Any]], keep_ratios: Sequence[float], *,
                        max_new_tokens: int = 256, batch_size: int = 16) -> dict[float, dict[str, Any]]:
    """Per keep ratio: how many chains still give the teacher's answer, the rate and its 95% Wilson interval (not a
    bootstrap: that collapses to a point at 0 or all chains preserved, common on a few chains).
    Chains whose deletion order stops short of a keep ratio are left out of it."""
    jobs = [(keep_ratio, record, answer_opening(record, tokenizer)) for keep_ratio in keep_ratios
            for record in records
            if deletions_for(len(record["reasoning_token_ids"]), keep_ratio) <= len(record["deletion_order"])]
    if not jobs:
        return {}
    prompts = [kept_prompt(record, keep_ratio) + opening for keep_ratio, record, opening in jobs]
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, stop_token_ids=end_of_turn_ids(model, tokenizer))
    outputs = generate(model, prompts, sampling, batch_size=min(batch_size, len(prompts)),
                       pad_id=tokenizer.pad_token_id or 0)
    outcomes: dict[float, list[float]] = {keep_ratio: [] for keep_ratio in keep_ratios}
    for (keep_ratio, record, opening), output in zip(jobs, outputs):
        dataset = record.get("dataset", "gsm8k")
        prediction = extract_answer(tokenizer.decode(opening + output, skip_special_tokens=True), dataset)
        teacher = record.get("prediction") or extract_answer(record["answer"], dataset)
        outcomes[keep_ratio].append(float(teacher is not None and is_correct(prediction, teacher, dataset)))
    return {keep_ratio: {"chains": len(values), "preserved": int(sum(values)), "rate": sum(values) / len(values),
                         "rate_ci95": list(wilson_interval(int(sum(values)), len(values)))}
            for keep_ratio, values in outcomes.items() if values}


def markdown_table(results: dict[str, dict[float, dict[str, Any]]]) -> str:
    """Preservation rate per method (rows) and keep ratio."""
    lines = ["| method | keep ratio | chains | answer preserved | 95% interval (Wilson) |",
             "| --- | --- | --- | --- | --- |"]
    for method, by_ratio in results.items():
        for keep_ratio, row in sorted(by_ratio.items(), key=lambda item: -float(item[0])):
            low, high = row["rate_ci95"]
            lines.append(f"| {method} | {float(keep_ratio):g} | {row['chains']} | {row['rate']:.1%} | "
                         f"{low:.1%}-{high:.1%} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict[float, dict[str, Any]]], path: str) -> None:
    """Preservation rate against keep ratio, one line per method, 95% intervals as error bars."""
    figure, axis = pyplot().subplots(figsize=(5.5, 4))
    for index, (method, by_ratio) in enumerate(results.items()):
        ratios = sorted(by_ratio, key=float)
        rates = [by_ratio[r]["rate"] for r in ratios]
        errors = [[rate - by_ratio[r]["rate_ci95"][0] for r, rate in zip(ratios, rates)],
                  [by_ratio[r]["rate_ci95"][1] - rate for r, rate in zip(ratios, rates)]]
        axis.errorbar([float(r) for r in ratios], rates, yerr=errors, marker="o", capsize=3, color=f"C{index}",
                      label=method)
    axis.set(xlabel="keep ratio", ylabel="teacher's answer reached", title="Answer preservation", ylim=(0, 1.05))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    save_figure(figure, path, dpi=110)
