"""Chains pruned together, their steps sharing scoring calls, against each chain pruned alone and naive references."""

import json

import numpy as np
import pytest

from jaxprune.pruning.chain_pruner import ChainPruner
from jaxprune.pruning.greedy import PruneConfig
from jaxprune.pruning.methods import make_method
from jaxprune.pruning.multi_chain import prune_together
from jaxprune.pruning.scoring import Scorer, StepRequest
from tests.test_pruning_exact import naive_greedy, random_split, tiny  # noqa: F401 (fixture)


def test_steps_of_several_chains_scored_in_one_call_equal_unshared_scores_of_each(tiny):  # noqa: F811
    # Chains of different lengths (so different cache sizes), one with a candidate subset and a suffix limit.
    splits = [random_split(1, prompt=5, reasoning=9, answer=3), random_split(2, prompt=11, reasoning=30, answer=6),
              random_split(3, prompt=7, reasoning=14, answer=4)]
    scorer = Scorer(tiny, token_budget=96)
    requests = []
    for index, split in enumerate(splits):
        tokens = np.asarray(split.prompt + split.reasoning + split.answer, np.int32)
        candidates = np.arange(len(split.prompt), len(split.prompt) + len(split.reasoning))
        requests.append(StepRequest(tokens, len(split.prompt), len(split.reasoning), scorer.base_pass(tokens)))
        if index == 2:
            requests[-1] = StepRequest(tokens, len(split.prompt), len(split.reasoning), requests[-1].base,
                                       candidates[::3])
    before = scorer.forward_tokens
    together = scorer.score_steps(requests)
    assert sum(step.token_forwards for step in together) == pytest.approx(scorer.forward_tokens - before, abs=3)
    for request, scores in zip(requests, together):
        unshared = scorer.score_step_unshared(request.tokens, request.prompt_length, request.reasoning_length)
        chosen = np.searchsorted(unshared.candidates, scores.candidates)
        np.testing.assert_allclose(scores.reasoning, unshared.reasoning[chosen], atol=2e-4)
        np.testing.assert_allclose(scores.answer, unshared.answer[chosen], atol=2e-4)


@pytest.mark.parametrize("method", ["greedy", "k_per_step", "lazy", "approx", "uniform"])
def test_chains_pruned_together_get_the_orders_and_likelihoods_of_chains_pruned_alone(tiny, method):  # noqa: F811
    splits = [random_split(seed, reasoning=reasoning) for seed, reasoning in
              [(11, 6), (12, 21), (13, 12), (14, 17), (15, 9)]]
    config, chosen = PruneConfig(keep_ratio=0.4), make_method(method)
    alone = [chosen.prune(Scorer(tiny, token_budget=128), split, {"id": i}, config) for i, split in enumerate(splits)]
    scorer = Scorer(tiny, token_budget=128)
    jobs = [(i, chosen.steps(scorer, split, {"id": i}, config)) for i, split in enumerate(splits)]
    finished = list(prune_together(scorer, jobs, chains_per_call=3))
    assert sorted(key for key, _, _ in finished) == list(range(len(splits)))
    assert sum(spent for _, _, spent in finished) == pytest.approx(scorer.forward_tokens, abs=3 * len(splits) * 20)
    for key, trace, _ in finished:
        assert trace.deletion_order == alone[key].deletion_order
        np.testing.assert_allclose(np.array(trace.log_likelihoods["joint"], float),  # None (k per step) -> nan
                                   np.array(alone[key].log_likelihoods["joint"], float), atol=1e-4)
    if method == "greedy":  # and exact greedy's orders are the naive reference's
        assert finished[0][1].deletion_order == naive_greedy(tiny, splits[finished[0][0]], 0.4, "joint")


class _Tokenizer:
    """Token ids as text, enough for records (decode) without a vocabulary."""

    def decode(self, ids):
        return " ".join(map(str, ids))


def test_the_chain_pruner_writes_the_same_records_with_many_chains_per_call(tiny):  # noqa: F811
    splits = [random_split(seed, reasoning=reasoning) for seed, reasoning in [(21, 10), (22, 15), (23, 7)]]
    items = [(f"in.jsonl:{i + 1}", {"id": str(i)}, split) for i, split in enumerate(splits)]
    config = PruneConfig(keep_ratio=0.5)
    pruners = [ChainPruner(tiny, _Tokenizer(), "greedy", token_budget=128) for _ in range(2)]
    one = dict(pruners[0].prune_many(items, config, chains_per_call=1))
    many = dict(pruners[1].prune_many(items, config, chains_per_call=3))
    assert list(one) == [where for where, _, _ in items]
    for where in one:
        assert many[where]["deletion_order"] == one[where]["deletion_order"]
        assert many[where]["pruned_reasoning"] == one[where]["pruned_reasoning"]
    spent = sum(record["token_forwards"] for record in many.values())
    assert spent == pytest.approx(pruners[1].scorer.forward_tokens, abs=10)


def test_chains_per_call_below_one_is_refused(tiny):  # noqa: F811
    with pytest.raises(ValueError, match="chains_per_call"):
        list(prune_together(Scorer(tiny), [], chains_per_call=0))


def test_one_process_output_appended_out_of_order_is_put_in_input_order_keeping_other_ids(tmp_path):
    from jaxprune.data.process_parts import ProcessParts

    output = tmp_path / "out.jsonl"
    lines = [{"id": "c", "x": 3}, {"id": "old", "x": 0}, {"id": "a", "x": 1}, {"id": 2, "x": 2}]
    output.write_text("".join(json.dumps(line) + "\n" for line in lines))
    ProcessParts(str(output)).merge(["a", "2", "c"])
    assert [json.loads(line) for line in output.read_text().splitlines()] == [lines[2], lines[3], lines[0], lines[1]]
