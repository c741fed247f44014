"""Does the model's attention, or an earlier ranking, predict what greedy pruning deletes? (SPEC section 6)

* Attention: for each reasoning token, the attention it receives per layer and head, averaged over the later
  queries and over the answer's queries, from one forward pass over the whole chain.
* Attention against pruning: Spearman correlation, per chain, between attention received and the greedy deletion
  step (kept tokens rank after every deleted one); and a 2-layer MLP on per-layer attention features that predicts
  each token's post-deletion log-likelihood (the greedy score of deleting it first), Pearson r on held-out chains.
* Dynamic against static importance: the ranking re-scored after s deletions against the order in which the
  remaining tokens were actually deleted, compared with the first ranking restricted to the same tokens and with a
  random ranking.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import stats

from jaxprune.data.prompts import TokenSplit
from jaxprune.models.llama import Llama, causal_mask, positions_from_keep
from jaxprune.pruning.scoring import Scorer


def record_split(record: dict[str, Any]) -> TokenSplit:
    """The token spans a pruned record was scored with."""
    return TokenSplit(tuple(record["prompt_token_ids"]), tuple(record["reasoning_token_ids"]),
                      tuple(record["answer_token_ids"]))


def deletion_ranks(record: dict[str, Any]) -> np.ndarray:
    """Each reasoning token's deletion step (1 = deleted first); tokens never deleted share the last rank."""
    order = record["deletion_order"]
    ranks = np.full(len(record["reasoning_token_ids"]), len(order) + 1, np.float64)
    ranks[np.asarray(order, np.int64)] = np.arange(1, len(order) + 1)
    return ranks


@dataclasses.dataclass(frozen=True)
class AttentionReceived:
    """Attention each reasoning token receives, `[layers, heads, reasoning tokens]`."""

    from_later: np.ndarray   # mean over every later query (reasoning and answer)
    from_answer: np.ndarray  # mean over the answer's queries

    def features(self) -> np.ndarray:
        """Per token: the head-mean of both per layer, `[reasoning tokens, 2 * layers]`."""
        return np.concatenate([self.from_later.mean(axis=1), self.from_answer.mean(axis=1)]).T


def attention_received(model: Llama, split: TokenSplit) -> AttentionReceived:
    """One forward pass over `prompt + reasoning + answer` with attention probabilities returned."""
    tokens = split.chain()[None]
    keep = np.ones(tokens.shape, bool)
    output = model(jnp.asarray(tokens), positions_from_keep(keep), causal_mask(keep), return_attention=True)
    probs = np.stack([np.asarray(layer[0]) for layer in output.attentions])  # [layers, heads, query, key]
    start, end, length = len(split.prompt), len(split.prompt) + len(split.reasoning), tokens.shape[1]
    later = np.stack([probs[:, :, key + 1:, key].mean(axis=-1) for key in range(start, end)], axis=-1)
    answer = probs[:, :, end:length, start:end].mean(axis=2)
    return AttentionReceived(later, answer)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def rescored(scorer: Scorer, split: TokenSplit, deleted: Sequence[int], objective: str = "joint") -> np.ndarray:
    """Greedy scores of every reasoning token after `deleted` are gone: NaN for those, else the objective's
    log-likelihood after also deleting the token (higher = cheaper to delete)."""
    reasoning = np.asarray(split.reasoning, np.int64)
    gone = set(int(i) for i in deleted)
    remaining = np.asarray([i for i in range(len(reasoning)) if i not in gone], np.int64)
    tokens = split.chain(reasoning[remaining])
    scores = scorer.score_step(tokens, len(split.prompt), len(remaining), scorer.base_pass(tokens))
    out = np.full(len(reasoning), np.nan)
    out[remaining[scores.candidates - len(split.prompt)]] = scores.objective(objective)
    return out


def ranking_agreement(scores: np.ndarray, ranks: np.ndarray, tokens: np.ndarray) -> float:
    """How well `scores` (higher = deleted sooner) order `tokens` by their actual deletion `ranks`: Spearman of
    -scores against ranks, 1 for a perfect prediction."""
    return spearman(-scores[tokens], ranks[tokens])


def dynamic_versus_static(step_scores: dict[int, np.ndarray], record: dict[str, Any], seed: int = 0
                          ) -> dict[int, dict[str, float]]:
    """At each step s of `step_scores` (scores re-evaluated after the first s deletions; step 0 must be there):
    agreement with the later deletions of the re-evaluated ranking, of the first ranking, and of a random one, over
    the tokens still present at s."""
    ranks = deletion_ranks(record)
    order = record["deletion_order"]
    rng = np.random.default_rng(seed)
    out = {}
    for step, scores in sorted(step_scores.items()):
        tokens = np.asarray(sorted(set(range(len(ranks))) - set(order[:step])), np.int64)
        out[step] = {"dynamic": ranking_agreement(scores, ranks, tokens),
                     "static": ranking_agreement(step_scores[0], ranks, tokens),
                     "random": ranking_agreement(rng.standard_normal(len(ranks)), ranks, tokens)}
    return out


def fit_mlp(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *, hidden: int = 32,
            steps: int = 2000, learning_rate: float = 3e-3, weight_decay: float = 1e-4, seed: int = 0) -> dict:
    """A 2-layer MLP (ReLU) fitted by full-batch AdamW on standardised features and targets; returns the held-out
    Pearson r and predictions."""
    mean, scale = train_x.mean(0), train_x.std(0) + 1e-8
    y_mean, y_scale = train_y.mean(), train_y.std() + 1e-8
    x = jnp.asarray((train_x - mean) / scale, jnp.float32)
    y = jnp.asarray((train_y - y_mean) / y_scale, jnp.float32)
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {"w1": jax.random.normal(k1, (x.shape[1], hidden)) * np.sqrt(2 / x.shape[1]), "b1": jnp.zeros(hidden),
              "w2": jax.random.normal(k2, (hidden,)) * np.sqrt(1 / hidden), "b2": jnp.zeros(())}

    def predict(params, x):
        return jax.nn.relu(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]

    optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((predict(p, x) - y) ** 2))(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    state = optimizer.init(params)
    for _ in range(steps):
        params, state, _ = step(params, state)
    predictions = np.asarray(predict(params, jnp.asarray((test_x - mean) / scale, jnp.float32))) * y_scale + y_mean
    return {"pearson_r": float(stats.pearsonr(predictions, test_y).statistic), "predictions": predictions}


def _nanmean(values) -> float:
    values = np.asarray(values, np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def importance_report(model: Llama, records: Sequence[dict[str, Any]], *, points: Sequence[float] = (0.25, 0.5, 0.75),
                      objective: str = "joint", held_out: float = 0.2, seed: int = 0, progress=None) -> dict:
    """Attention against greedy pruning and dynamic against static rankings over greedily pruned `records`.

    `points` are fractions of each chain's deletions after which its ranking is re-evaluated. The MLP is trained on
    the tokens of a seeded (1 - held_out) share of the chains and scored on the others (it needs two chains)."""
    if not records:
        raise ValueError("no chains to analyse")
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must be in (0, 1), got {held_out}")
    scorer = Scorer(model)
    fractions = [0.0, *points]
    per_chain, features, targets, dynamic = [], [], [], []
    for record in records:
        split = record_split(record)
        ranks = deletion_ranks(record)
        received = attention_received(model, split)
        steps = {p: int(round(p * len(record["deletion_order"]))) for p in fractions}
        step_scores = {s: rescored(scorer, split, record["deletion_order"][:s], objective) for s in set(steps.values())}
        agreement = dynamic_versus_static(step_scores, record, seed)
        dynamic.append({p: agreement[s] for p, s in steps.items()})
        per_chain.append({"id": record["id"],
                          "spearman_from_later": spearman(received.from_later.mean((0, 1)), ranks),
                          "spearman_from_answer": spearman(received.from_answer.mean((0, 1)), ranks),
                          "spearman_per_layer": [spearman(layer.mean(0), ranks) for layer in received.from_later]})
        features.append(received.features())
        targets.append(step_scores[0])
        if progress is not None:
            progress()
    held = min(max(1, round(held_out * len(records))), len(records) - 1)  # at least one chain on each side
    test = set(np.random.default_rng(seed).permutation(len(records))[:held].tolist())

    def tokens_of(arrays, held):
        return np.concatenate([a for i, a in enumerate(arrays) if (i in test) == held])

    mlp_r = None
    if held > 0:
        mlp_r = fit_mlp(tokens_of(features, False), tokens_of(targets, False), tokens_of(features, True),
                        tokens_of(targets, True), seed=seed)["pearson_r"]
    layers = np.asarray([c["spearman_per_layer"] for c in per_chain])
    return {"chains": len(records), "held_out_chains": len(test),
            "spearman_from_later": _nanmean([c["spearman_from_later"] for c in per_chain]),
            "spearman_from_answer": _nanmean([c["spearman_from_answer"] for c in per_chain]),
            "spearman_per_layer": [_nanmean(layers[:, layer]) for layer in range(layers.shape[1])],
            "mlp_held_out_pearson_r": mlp_r,
            "dynamic_vs_static": {p: {kind: _nanmean([d[p][kind] for d in dynamic])
                                      for kind in ("dynamic", "static", "random")} for p in fractions},
            "per_chain": per_chain}


def markdown_summary(report: dict) -> str:
    """The report's headline numbers as markdown."""
    layers = report["spearman_per_layer"]
    strongest = sorted(range(len(layers)), key=lambda i: -abs(layers[i]) if np.isfinite(layers[i]) else 0)[:3]
    r = report["mlp_held_out_pearson_r"]
    lines = [f"Greedily pruned chains analysed: {report['chains']} ({report['held_out_chains']} held out for the MLP).",
             "",
             "| statistic | value |", "| --- | --- |",
             f"| Spearman(attention from later tokens, deletion step), mean over chains | "
             f"{report['spearman_from_later']:.3f} |",
             f"| Spearman(attention from answer tokens, deletion step), mean over chains | "
             f"{report['spearman_from_answer']:.3f} |",
             "| layers with the strongest correlation | "
             + ", ".join(f"{i} ({layers[i]:.3f})" for i in strongest) + " |",
             "| MLP on attention features -> post-deletion log-likelihood, held-out Pearson r | "
             + ("-" if r is None else f"{r:.3f}") + " |", "",
             "| re-evaluated after this share of the deletions | dynamic | static (first ranking) | random |",
             "| --- | --- | --- | --- |"]
    for fraction, row in report["dynamic_vs_static"].items():
        lines.append(f"| {float(fraction):.2f} | {row['dynamic']:.3f} | {row['static']:.3f} | {row['random']:.3f} |")
    return "\n".join(lines) + "\n"
