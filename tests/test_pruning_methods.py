"""Every pruning method through the one interface, and lazy greedy against exact greedy and naive references."""

import dataclasses

import numpy as np
import pytest

from jaxprune.pruning.greedy import WHOLE, PruneConfig, deletions_for, greedy_prune
from jaxprune.pruning.methods import METHODS, make_method, register
from jaxprune.pruning.methods.h2o import h2o_order
from jaxprune.pruning.methods.lazy import StaleCosts
from jaxprune.pruning.methods.static import StaticOrderMethod
from jaxprune.pruning.scoring import Scorer
from tests.test_pruning_exact import naive_greedy, naive_scorer, random_split, tiny  # noqa: F401 (fixture)

NO_CLASSIFIER = sorted(set(METHODS) - {"llmlingua2"})  # llmlingua2 needs a classifier: tests/test_llmlingua2.py


@pytest.mark.parametrize("name", NO_CLASSIFIER)
def test_every_method_gives_a_valid_order_whose_last_log_likelihood_is_the_pruned_chains(tiny, name):  # noqa: F811
    split = random_split(3, reasoning=20)
    trace = make_method(name).prune(Scorer(tiny), split, {"id": "x"}, PruneConfig(keep_ratio=0.6))
    assert len(trace.deletion_order) == deletions_for(20, 0.6)
    assert len(set(trace.deletion_order)) == len(trace.deletion_order)
    assert set(trace.deletion_order) <= set(range(20))
    kept = [t for i, t in enumerate(split.reasoning) if i not in set(trace.deletion_order)]
    reasoning, answer = naive_scorer(tiny)(list(split.prompt) + kept + list(split.answer), len(split.prompt),
                                           len(kept))
    assert trace.log_likelihoods["joint"][-1] == pytest.approx(reasoning + answer, abs=1e-4)
    assert all(len(values) == len(trace.deletion_order) for values in trace.log_likelihoods.values())


@pytest.mark.parametrize("settings", [dict(full_every=1), dict(top_k=30, full_every=0)])
def test_lazy_greedy_rescoring_every_candidate_equals_naive_exact_greedy(tiny, settings):  # noqa: F811
    split = random_split(6, reasoning=18)
    trace = make_method("lazy", **settings).prune(Scorer(tiny), split, {}, PruneConfig(keep_ratio=0.4))
    assert trace.deletion_order == naive_greedy(tiny, split, 0.4, "joint")


def test_lazy_greedy_rescores_only_the_best_stale_candidates_and_the_last_deletions_neighbours(tiny):  # noqa: F811
    split = random_split(2, reasoning=24)
    scorer = Scorer(tiny)
    full = scorer.forward_tokens
    greedy_prune(scorer, split, PruneConfig(keep_ratio=0.5))
    exact_cost, before = scorer.forward_tokens - full, scorer.forward_tokens
    trace = make_method("lazy", top_k=2, window=1, full_every=0).prune(scorer, split, {}, PruneConfig(keep_ratio=0.5))
    assert len(trace.deletion_order) == 12
    assert scorer.forward_tokens - before < exact_cost / 2


def test_stale_costs_pick_the_lowest_stale_costs_the_deletions_neighbours_and_full_steps():
    policy = StaleCosts(10, top_k=2, window=1, full_every=3)
    remaining, local = np.arange(10), np.zeros(10)

    def chosen(remaining):
        rescore = policy.choose(remaining, local[: len(remaining)])
        assert (rescore.limits == WHOLE).all()  # every candidate it picks is scored exactly
        return sorted(remaining[rescore.indices])

    def observe(positions, costs, deleted):
        policy.observe(np.array(positions), np.full(len(positions), WHOLE), np.array(costs), deleted)

    assert policy.choose(remaining, local) is None  # the first step scores everything
    observe(remaining, [5.0, 1.0, 9.0, 0.5, 7.0, 3.0, 8.0, 2.0, 6.0, 4.0], [3])
    remaining = np.delete(remaining, 3)
    # lowest stale: position 1 (1.0) and 7 (2.0); neighbours of the gap left by 3: positions 2 and 4
    assert chosen(remaining) == [1, 2, 4, 7]
    observe([1, 2, 4, 7], [6.0, 0.1, 7.0, 2.5], [2])
    remaining = np.delete(remaining, np.searchsorted(remaining, 2))
    # stale costs now: 0:5, 1:6, 4:7, 5:3, 6:8, 7:2.5, 8:6, 9:4 -> lowest 7 and 5; neighbours of 2: 1 and 4
    assert chosen(remaining) == [1, 4, 5, 7]
    observe([1], [1.0], [1])
    assert policy.choose(np.delete(remaining, 1), local[:7]) is None  # step 3: a full rescore


@pytest.mark.parametrize("limit", [3, 8])
def test_suffix_limited_scores_equal_a_naive_partial_recomputation(tiny, limit):  # noqa: F811
    split = random_split(8, prompt=7, reasoning=15, answer=4)
    tokens = np.asarray(split.prompt + split.reasoning + split.answer, np.int32)
    scorer = Scorer(tiny, token_budget=64)
    base = scorer.base_pass(tokens)
    scores = scorer.score_step(tokens, 7, 15, base, suffix_limit=limit)
    full_log_probs = base.token_log_probs(len(tokens))
    for index, c in enumerate(range(7, 22)):
        shortened = np.delete(tokens, c)
        fresh = naive_per_token(tiny, shortened)  # fresh[t]: log p(shortened[t] | shortened[:t])
        # targets of the shortened chain up to c + limit (original positions up to c + 1 + limit) are recomputed,
        # later ones keep the full chain's log-probabilities (original position = shortened position + 1)
        total = sum(fresh[t] if t <= c + limit else full_log_probs[t + 1] for t in range(7, len(shortened)))
        assert scores.reasoning[index] + scores.answer[index] == pytest.approx(total, abs=1e-4)


def naive_per_token(model, sequence):
    import jax
    import jax.numpy as jnp

    from jaxprune.models import causal_mask, positions_from_keep

    ids = jnp.asarray(sequence[None])
    keep = jnp.ones(ids.shape, bool)
    log_probs = np.asarray(jax.nn.log_softmax(model(ids, positions_from_keep(keep), causal_mask(keep)).logits[0]))
    return np.concatenate([[0.0], [log_probs[t - 1, sequence[t]] for t in range(1, len(sequence))]])


def test_lazy_greedy_with_whole_suffixes_as_limit_equals_exact_greedy(tiny):  # noqa: F811
    split = random_split(9, reasoning=14)
    exact = greedy_prune(Scorer(tiny), split, PruneConfig(keep_ratio=0.5))
    limited = make_method("lazy", full_every=1, suffix_limit=1000).prune(Scorer(tiny), split, {},
                                                                       PruneConfig(keep_ratio=0.5))
    assert limited.deletion_order == exact.deletion_order


def test_a_new_method_is_one_class_and_runs_through_the_runner(tmp_path, tiny):  # noqa: F811
    @register
    @dataclasses.dataclass(frozen=True)
    class LastFirst(StaticOrderMethod):
        name = "last_first"
        help = "Deletes the last reasoning token first."

        def order(self, scorer, split, record, keep_ratio):
            return list(range(len(split.reasoning)))[::-1]

    try:
        split = random_split(1, reasoning=10)
        trace = make_method("last_first").prune(Scorer(tiny), split, {"id": 1}, PruneConfig(keep_ratio=0.7))
        assert trace.deletion_order == [9, 8, 7]
        assert make_method("last_first").mode("float32") == {"method": "last_first", "dtype": "float32",
                                                             "exact": False}
    finally:
        METHODS.pop("last_first")


@pytest.mark.parametrize("name, settings, message", [
    ("nope", {}, "unknown pruning method 'nope'"),
    ("greedy", {"top_k": 3}, "method 'greedy' has no setting top_k"),
    ("lazy", {"top_k": -1}, "top_k must be >= 0"),
    ("lazy", {"top_k": 0, "window": 0}, "no step after a full one rescores"),
    ("k_per_step", {"deletions_per_step": 0}, "deletions_per_step must be >= 1"),
    ("llmlingua2", {}, "needs a classifier"),
    ("h2o", {"recent_share": 1.5}, "recent_share must be in"),
])
def test_bad_method_settings_are_refused_by_name(name, settings, message):
    with pytest.raises(ValueError, match=message):
        make_method(name, **settings)


def test_an_incremental_base_pass_equals_a_full_one_after_a_deletion(tiny):  # noqa: F811
    split = random_split(11, prompt=20, reasoning=40, answer=6)
    tokens = np.asarray(split.prompt + split.reasoning + split.answer, np.int32)
    scorer = Scorer(tiny)
    previous = scorer.base_pass(tokens)
    for deleted in (20, 41, 59):  # first, middle and last reasoning token
        shorter = np.delete(tokens, deleted)
        full, incremental = scorer.base_pass(shorter), scorer.base_pass_after(previous, shorter, deleted)
        length = len(shorter)
        np.testing.assert_allclose(incremental.token_log_probs(length), full.token_log_probs(length), atol=1e-5)
        np.testing.assert_allclose(incremental.skip_log_probs[: length - 2], full.skip_log_probs[: length - 2],
                                   atol=1e-5)
        for ours, theirs in zip(incremental.cache, full.cache):
            np.testing.assert_allclose(np.asarray(ours.k)[:, :, :length], np.asarray(theirs.k)[:, :, :length],
                                       atol=1e-5)


def test_h2o_keeps_the_heavy_hitters_and_a_recent_window_on_planted_attention():
    # The bias of accumulated attention: early tokens, seen by more queries, collect more; token 4 is a heavy hitter.
    received = np.array([9.0, 8.0, 7.0, 6.0, 20.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    kept = 5  # keep ratio 0.5: 3 recent tokens (half the budget, rounded up) and 2 heavy hitters
    order = h2o_order(received, kept, recent_share=0.5)
    assert sorted(order[:5]) == [1, 2, 3, 5, 6] and order[:5] == [6, 5, 3, 2, 1]  # least attention first
    assert set(range(10)) - set(order[:5]) == {0, 4, 7, 8, 9}
    # Without the window the final computation goes first: the variant SPEC section 3 says is not H2O.
    assert h2o_order(received, kept, recent_share=0.0)[:5] == [9, 8, 7, 6, 5]
    # All of the budget recent: the last five tokens stay whatever their attention.
    assert sorted(h2o_order(received, kept, recent_share=1.0)[:5]) == [0, 1, 2, 3, 4]


def test_h2o_prune_keeps_the_recent_window_at_the_asked_keep_ratio(tiny):  # noqa: F811
    split = random_split(4, reasoning=20)
    for keep_ratio in (0.8, 0.5, 0.3):
        trace = make_method("h2o").prune(Scorer(tiny), split, {"id": "x"}, PruneConfig(keep_ratio=keep_ratio))
        kept = 20 - deletions_for(20, keep_ratio)
        window = -(-kept // 2)
        assert not set(trace.deletion_order) & set(range(20 - window, 20)), keep_ratio


@pytest.mark.parametrize("keep_ratio", [0.7, 0.4])
def test_h2o_deletes_the_least_attended_tokens_outside_the_recent_window_of_a_plain_forward(tiny, keep_ratio):  # noqa
    import jax.numpy as jnp

    from jaxprune.models import causal_mask, positions_from_keep

    split = random_split(7, reasoning=18)
    ids = jnp.asarray([split.chain()])
    keep = jnp.ones(ids.shape, bool)
    # The plain forward's attention (checked against transformers' eager attention in test_model.py), summed by hand.
    attentions = tiny(ids, positions_from_keep(keep), causal_mask(keep), return_attention=True).attentions
    probabilities = sum(np.asarray(layer[0], np.float64).sum(axis=0) for layer in attentions)  # [query, key]
    start, n = len(split.prompt), len(split.reasoning)
    received = [probabilities[start + i + 1:, start + i].sum() for i in range(n)]  # from the later queries only
    window = -(-(n - deletions_for(n, keep_ratio)) // 2)  # half the kept budget, rounded up
    outside = sorted(range(n - window), key=lambda i: (received[i], i))
    trace = make_method("h2o").prune(Scorer(tiny), split, {"id": "x"}, PruneConfig(keep_ratio=keep_ratio))
    assert trace.deletion_order[:deletions_for(n, keep_ratio)] == outside[:deletions_for(n, keep_ratio)]
