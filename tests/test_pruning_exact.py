"""Exact greedy pruning against a naive reference written here: physically delete, full forward, score."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxprune.data.prompts import TokenSplit
from jaxprune.models import Llama, ModelConfig, causal_mask, positions_from_keep
from jaxprune.pruning.greedy import PruneConfig, deletions_for, greedy_prune
from jaxprune.pruning.scoring import Scorer

CONFIG = ModelConfig(model_type="llama", vocab_size=89, hidden_size=32, intermediate_size=64, num_layers=2,
                     num_heads=4, num_kv_heads=2, head_dim=8)


@pytest.fixture(scope="module")
def tiny():
    return Llama(CONFIG, rngs=nnx.Rngs(7))


def naive_scorer(model):
    """(reasoning, answer) log-likelihood of a physically shortened sequence, from one plain forward."""
    graphdef, params = nnx.split(model)

    @jax.jit
    def log_softmax(params, ids):
        keep = jnp.ones(ids.shape, bool)
        return jax.nn.log_softmax(nnx.merge(graphdef, params)(ids, positions_from_keep(keep), causal_mask(keep))
                                  .logits[0], axis=-1)

    def log_likelihoods(sequence, prompt_length, reasoning_length):
        padded = np.zeros((1, 128), np.int32)  # fixed buffer: the causal reference compiles once
        padded[0, :len(sequence)] = sequence
        log_probs = np.asarray(log_softmax(params, jnp.asarray(padded)), np.float64)
        per_token = np.array([log_probs[t - 1, sequence[t]] for t in range(1, len(sequence))])
        reasoning = per_token[prompt_length - 1: prompt_length - 1 + reasoning_length].sum()
        return reasoning, per_token[prompt_length - 1 + reasoning_length:].sum()

    return log_likelihoods


def naive_greedy(model, split, keep_ratio, objective, tolerance=1e-4, per_step=1):
    """Score every remaining token's deletion, delete the `per_step` best (the lowest position on ties), repeat."""
    score = naive_scorer(model)
    reasoning = list(split.reasoning)
    remaining = list(range(len(reasoning)))
    order = []
    target = deletions_for(len(reasoning), keep_ratio)
    while len(order) < target:
        scores = {}
        for i in remaining:
            kept = [reasoning[j] for j in remaining if j != i]
            r, a = score(list(split.prompt) + kept + list(split.answer), len(split.prompt), len(kept))
            scores[i] = r + a if objective == "joint" else a
        for _ in range(min(per_step, target - len(order))):
            best = max(scores.values())
            choice = min(i for i, s in scores.items() if s >= best - tolerance)
            order.append(choice)
            remaining.remove(choice)
            del scores[choice]
    return order


def random_split(seed, prompt=9, reasoning=16, answer=5):
    rng = np.random.RandomState(seed)
    return TokenSplit(tuple(rng.randint(0, 89, prompt)), tuple(rng.randint(0, 89, reasoning)),
                      tuple(rng.randint(0, 89, answer)))


@pytest.mark.parametrize("objective", ["joint", "answer"])
@pytest.mark.parametrize("seed", [0, 1])
def test_whole_deletion_order_equals_naive_reference(tiny, objective, seed):
    split = random_split(seed)
    trace = greedy_prune(Scorer(tiny, token_budget=128), split, PruneConfig(keep_ratio=0.4, objective=objective))
    assert trace.deletion_order == naive_greedy(tiny, split, 0.4, objective)
    assert len(trace.deletion_order) == deletions_for(16, 0.4) == 10


@pytest.mark.parametrize("per_step", [2, 3])
def test_k_per_step_deletes_the_k_best_of_each_step_as_the_naive_reference_does(tiny, per_step):
    from jaxprune.pruning.methods import make_method

    split = random_split(6)
    method = make_method("k_per_step", deletions_per_step=per_step)
    trace = method.prune(Scorer(tiny, token_budget=128), split, {}, PruneConfig(keep_ratio=0.3))
    assert trace.deletion_order == naive_greedy(tiny, split, 0.3, "joint", per_step=per_step)


def test_ties_go_to_the_lowest_position(tiny):
    # Runs of one repeated token: deleting any member of a run gives the same sequence, so scores tie exactly.
    split = TokenSplit((3, 4, 5), (7, 7, 7, 2, 9, 9, 9, 9, 1), (6, 8))
    trace = greedy_prune(Scorer(tiny), split, PruneConfig(keep_ratio=0.0))
    assert trace.deletion_order == naive_greedy(tiny, split, 0.0, "joint")
    for run in ([0, 1, 2], [4, 5, 6, 7]):  # within a run, deletion goes left to right
        positions = [trace.deletion_order.index(i) for i in run]
        assert positions == sorted(positions)


def test_recorded_log_likelihoods_are_those_of_the_pruned_chains(tiny):
    split = random_split(3)
    trace = greedy_prune(Scorer(tiny), split, PruneConfig(keep_ratio=0.5))
    reasoning = list(split.reasoning)
    score = naive_scorer(tiny)
    r, a = score(list(split.prompt) + reasoning + list(split.answer), 9, 16)
    assert trace.original["reasoning"] == pytest.approx(r, abs=1e-4)
    assert trace.original["answer"] == pytest.approx(a, abs=1e-4)
    deleted = set()
    for step, position in enumerate(trace.deletion_order):
        deleted.add(position)
        kept = [t for i, t in enumerate(reasoning) if i not in deleted]
        r, a = score(list(split.prompt) + kept + list(split.answer), 9, len(kept))
        assert trace.log_likelihoods["joint"][step] == pytest.approx(r + a, abs=1e-4)
        assert trace.log_likelihoods["answer"][step] == pytest.approx(a, abs=1e-4)


@pytest.mark.parametrize("budget", [64, 256, 4096])
def test_packed_prefix_shared_scores_equal_unshared_scores(tiny, budget):
    split = random_split(4, prompt=11, reasoning=23, answer=7)
    tokens = np.asarray(split.prompt + split.reasoning + split.answer, np.int32)
    scorer = Scorer(tiny, token_budget=budget)
    shared = scorer.score_step(tokens, 11, 23, scorer.base_pass(tokens))
    unshared = scorer.score_step_unshared(tokens, 11, 23)
    np.testing.assert_allclose(shared.reasoning, unshared.reasoning, atol=1e-4, rtol=0)
    np.testing.assert_allclose(shared.answer, unshared.answer, atol=1e-4, rtol=0)


def test_resume_and_extend_equal_a_single_run(tiny):
    split = random_split(5)
    scorer = Scorer(tiny)
    single = greedy_prune(scorer, split, PruneConfig(keep_ratio=0.3))
    partial = greedy_prune(scorer, split, PruneConfig(keep_ratio=0.7))
    extended = greedy_prune(scorer, split, PruneConfig(keep_ratio=0.3), start=partial)
    assert extended.deletion_order == single.deletion_order
    np.testing.assert_allclose(extended.log_likelihoods["joint"], single.log_likelihoods["joint"], atol=1e-5)
    assert partial.deletion_order == single.deletion_order[: len(partial.deletion_order)]


@pytest.mark.parametrize("bad", [dict(keep_ratio=1.0), dict(keep_ratio=-0.1), dict(keep_ratio=0.5, objective="x")])
def test_invalid_settings_are_refused(bad):
    with pytest.raises(ValueError):
        PruneConfig(**bad)


def naive_batched_greedy(model, split, keep_ratio, objective, buffer=96, batch=32, tolerance=1e-4):
    """Physical deletion of every candidate of a step, all in one padded batch, one plain forward (the reference
    implementation's way, written independently of the kernel)."""
    graphdef, params = nnx.split(model)

    @jax.jit
    def next_token_log_probs(params, ids):  # [batch, t]: log p(ids[t + 1] | ids[:t + 1])
        keep = jnp.ones(ids.shape, bool)
        logits = nnx.merge(graphdef, params)(ids, positions_from_keep(keep), causal_mask(keep)).logits
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        return jnp.take_along_axis(log_probs[:, :-1], ids[:, 1:, None], axis=-1)[..., 0]

    prompt, answer = list(split.prompt), list(split.answer)
    remaining = list(range(len(split.reasoning)))
    order = []
    for _ in range(deletions_for(len(remaining), keep_ratio)):
        sequences = [prompt + [split.reasoning[j] for j in remaining if j != i] + answer for i in remaining]
        ids = np.zeros((batch, buffer), np.int32)
        for row, sequence in enumerate(sequences):
            ids[row, :len(sequence)] = sequence
        log_probs = np.asarray(next_token_log_probs(params, jnp.asarray(ids)), np.float64)
        scores = []
        for row, sequence in enumerate(sequences):
            first = len(prompt) if objective == "joint" else len(sequence) - len(answer)
            scores.append(log_probs[row, first - 1: len(sequence) - 1].sum())
        best = max(scores)
        choice = next(i for i, s in zip(remaining, scores) if s >= best - tolerance)
        order.append(choice)
        remaining.remove(choice)
    return order


@pytest.mark.parametrize("objective", ["joint", "answer"])
def test_smollm2_short_real_chain_equals_naive_reference(smollm2, objective):
    from jaxprune.data.prompts import split_chain

    model, tokenizer = smollm2
    split = split_chain(tokenizer, "Tom has 3 apples and buys 5 more. How many apples does Tom have now?",
                        "Tom has 3 apples and 5 more apples, so he has 3 + 5 = 8 apples.\n", "#### 8",
                        "Solve step by step.")
    assert len(split.prompt) + len(split.reasoning) + len(split.answer) <= 96 and len(split.reasoning) <= 32
    trace = greedy_prune(Scorer(model), split, PruneConfig(keep_ratio=0.8, objective=objective))
    assert len(trace.deletion_order) == 5
    assert trace.deletion_order == naive_batched_greedy(model, split, 0.8, objective, batch=len(split.reasoning))


# Sliding-window layers with a window shorter than the chain (Gemma 3 / Mistral style): the scorer's cached and
# prefix-shared passes must drop the same keys a plain forward of the shortened chain drops.
WINDOWED = dataclasses.replace(CONFIG, layer_types=("sliding_attention", "full_attention"), sliding_window=6,
                               local_rope_theta=100.0)


def test_with_a_sliding_window_shorter_than_the_chain_the_order_equals_naive_reference():
    model = Llama(WINDOWED, rngs=nnx.Rngs(3))
    split = random_split(5, prompt=7, reasoning=14, answer=5)
    scorer = Scorer(model, token_budget=64)
    tokens = np.asarray(split.chain())
    shared = scorer.score_step(tokens, 7, 14, scorer.base_pass(tokens))
    unshared = scorer.score_step_unshared(tokens, 7, 14)
    np.testing.assert_allclose(shared.reasoning, unshared.reasoning, atol=1e-4, rtol=0)
    np.testing.assert_allclose(shared.answer, unshared.answer, atol=1e-4, rtol=0)
    trace = greedy_prune(scorer, split, PruneConfig(keep_ratio=0.5, objective="joint"))
    assert trace.deletion_order == naive_greedy(model, split, 0.5, "joint")
