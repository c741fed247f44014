"""The near-exact mode (`approx`), its pieces against naive references, and `auto`'s choice between exact and it."""

import numpy as np
import pytest

from jaxprune.pruning.greedy import WHOLE, PruneConfig, Rescore, greedy_steps, local_costs, score_alone
from jaxprune.pruning.methods import make_method
from jaxprune.pruning.methods.certified import CertifiedCosts
from jaxprune.pruning.scoring import Scorer
from tests.test_pruning_exact import naive_greedy, random_split, tiny  # noqa: F401 (fixture)
from tests.test_pruning_methods import naive_per_token


@pytest.mark.parametrize("objective", ["joint", "answer"])
def test_local_costs_equal_a_naive_recomputation_of_the_two_targets_next_to_each_candidate(tiny, objective):  # noqa: F811
    split = random_split(4, prompt=6, reasoning=12, answer=3)
    tokens = split.chain()
    base = Scorer(tiny).base_pass(tokens)
    got = local_costs(base, tokens, 6, 12, objective)
    full = naive_per_token(tiny, tokens)
    for index, c in enumerate(range(6, 18)):
        shortened = naive_per_token(tiny, np.delete(tokens, c))  # x[c+1] is now at position c
        counted = lambda t: objective == "joint" or t >= 18  # noqa: E731 (answer targets only, for "answer")
        expected = counted(c) * full[c] + counted(c + 1) * (full[c + 1] - shortened[c])
        assert got[index] == pytest.approx(expected, abs=1e-4)


def test_approx_with_tolerance_zero_equals_naive_exact_greedy(tiny):  # noqa: F811
    split = random_split(12, reasoning=18)
    scorer = Scorer(tiny)
    steps = make_method("approx", tolerance=0.0).steps(scorer, split, {}, PruneConfig(keep_ratio=0.4))
    request, requests = next(steps), 1
    try:
        while True:
            assert request.candidates is None  # every candidate, every step
            request, requests = steps.send(scorer.score_steps([request])[0]), requests + 1
    except StopIteration as finished:
        trace = finished.value
    assert requests == len(trace.deletion_order) == 11
    assert trace.deletion_order == naive_greedy(tiny, split, 0.4, "joint")
    assert make_method("approx", tolerance=0.0).is_exact("float32")


class _WorstOnly:
    """A policy that scores every candidate partially and only the worst one exactly."""

    def choose(self, remaining, local):
        self.remaining = remaining
        everything = np.arange(len(remaining))
        return Rescore(everything, np.full(len(remaining), 2))

    def refine(self, scored, limits, costs):
        if (limits == WHOLE).any():
            return None
        return Rescore.whole([scored[np.argmax(costs)]])

    def details(self):
        return {}

    def observe(self, positions, limits, costs, deleted):
        self.worst = int(positions[limits != WHOLE][np.argmax(costs[limits != WHOLE])])
        assert deleted == [self.worst]


def test_a_step_deletes_only_among_the_candidates_scored_exactly(tiny):  # noqa: F811
    split = random_split(13, reasoning=10)
    policy = _WorstOnly()
    trace = score_alone(Scorer(tiny), greedy_steps(Scorer(tiny), split, PruneConfig(keep_ratio=0.8), policy=policy))
    assert len(trace.deletion_order) == 2 and trace.deletion_order[-1] == policy.worst


def test_certified_costs_rescore_every_candidate_whose_lower_bound_is_below_the_best_cost():
    policy = CertifiedCosts(8, tolerance=0.1, top_k=1, before=0, after=0, round_size=2, max_rounds=10)
    remaining = np.arange(8)
    assert policy.choose(remaining, np.zeros(8)) is None  # the first step scores everything
    costs = np.array([5.0, 1.0, 9.0, 0.5, 7.0, 3.0, 8.0, 2.0])
    policy.observe(remaining, np.full(8, WHOLE), costs, [3])
    remaining = np.delete(remaining, 3)
    chosen = policy.choose(remaining, np.zeros(7))
    bounds = policy.lower_bounds(remaining)
    assert list(remaining[chosen.indices]) == [remaining[np.argmin(bounds)]]  # top_k=1: the lowest lower bound
    scored, limits = chosen.indices, chosen.limits
    while (more := policy.refine(scored, limits, np.full(len(scored), 4.0))) is not None:
        assert len(more.indices) <= 2  # round_size
        scored, limits = np.concatenate([scored, more.indices]), np.concatenate([limits, more.limits])
    # nothing seen yet, so each stale cost may have moved by the prior (4 nats): every candidate whose stale cost
    # is below 8 may now be below the best cost found (4), and is rescored; the step ends certified
    assert sorted(remaining[scored]) == sorted(remaining[bounds < 4.0]) == [0, 1, 4, 5, 7]
    assert policy.certified_steps == 2


def test_approx_records_how_many_steps_were_certified(tiny):  # noqa: F811
    split = random_split(14, reasoning=20)
    trace = make_method("approx").prune(Scorer(tiny), split, {}, PruneConfig(keep_ratio=0.5))
    assert trace.details["steps"] == 10 and 1 <= trace.details["certified_steps"] <= 10


def test_auto_runs_exact_greedy_under_its_budget_and_approx_over_it(tiny):  # noqa: F811
    config = PruneConfig(keep_ratio=0.5)
    short, long = random_split(15, reasoning=8), random_split(16, reasoning=30)
    auto = make_method("auto", budget=2000)
    assert auto.choice(short, config)[1] <= 2000 < auto.choice(long, config)[1]  # built to fall either side
    exact_side = auto.prune(Scorer(tiny), short, {}, config)
    assert exact_side.details["ran"] == "greedy"
    assert exact_side.deletion_order == naive_greedy(tiny, short, 0.5, "joint")
    approx_side = auto.prune(Scorer(tiny), long, {}, config)
    assert approx_side.details["ran"] == "approx" and "certified_steps" in approx_side.details
    expected = make_method("approx").prune(Scorer(tiny), long, {}, config)
    assert approx_side.deletion_order == expected.deletion_order
