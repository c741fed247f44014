"""The cost model against the kernel's own work: token-forwards counted while the tiny model prunes a chain, exact
and approximate; FLOPs of a known model; chains per hour from a cost."""

import json

import numpy as np
import pytest

from jaxprune.cost_model import (ACCELERATORS, chain_cost, chain_token_forwards, chains_per_hour, flops_per_token,
                                 matrix_parameters)
from jaxprune.pruning.scoring import Scorer

CHAIN = {"id": "c0", "question": "Each ticket costs $6. How much do 5 tickets cost?", "system": "Be brief.",
         "reasoning": "We multiply the price by the number of tickets: 5 * 6 = 30 dollars, so that is it.\n",
         "answer": "#### 30"}


class CountingScorer(Scorer):
    """Counts the real (unpadded) tokens the kernel runs: base passes and packed candidate queries."""

    real_tokens = 0

    def base_pass(self, tokens, with_attention=False):
        self.real_tokens += len(tokens)
        return super().base_pass(tokens, with_attention)

    def _run_rows(self, packed, cache):
        self.real_tokens += int((packed.segment >= 0).sum())
        return super()._run_rows(packed, cache)


@pytest.mark.parametrize("mode", [{}, {"deletions_per_step": 3}])
def test_token_forwards_match_what_the_kernel_runs(tiny_dir, mode):
    from jaxprune.checkpoints import load_model
    from jaxprune.data.prompts import split_chain
    from jaxprune.pruning.greedy import PruneConfig, greedy_prune

    model, tokenizer = load_model(tiny_dir)
    split = split_chain(tokenizer, CHAIN["question"], CHAIN["reasoning"], CHAIN["answer"], CHAIN["system"])
    scorer = CountingScorer(model)
    greedy_prune(scorer, split, PruneConfig(keep_ratio=0.5), **mode)
    predicted = chain_token_forwards(len(split.prompt), len(split.reasoning), len(split.answer), 0.5,
                                     deletions_per_step=mode.get("deletions_per_step", 1))
    assert scorer.real_tokens == predicted
    assert scorer.forward_tokens >= scorer.real_tokens  # what was run, with padding
    unshared = chain_token_forwards(len(split.prompt), len(split.reasoning), len(split.answer), 0.5,
                                    shared_prefix=False, deletions_per_step=mode.get("deletions_per_step", 1))
    assert unshared > 2 * predicted


def test_flops_of_llama_3_1_8b_and_chains_per_hour():
    from jaxprune.checkpoints.resolve import load_config

    config = load_config("meta-llama/Llama-3.1-8B-Instruct")
    assert matrix_parameters(config) == pytest.approx(7.5e9, rel=0.01)  # 8.03B minus the input embedding
    assert flops_per_token(config, 0) == 2 * matrix_parameters(config)
    assert flops_per_token(config, 1000) - flops_per_token(config, 0) == 4 * 32 * 32 * 128 * 1000
    cost = chain_cost(config, prompt=200, reasoning=300, answer=20, keep_ratio=0.45)
    h100 = ACCELERATORS["h100"]
    rate = chains_per_hour(cost, h100, utilisation=0.4)
    assert rate == pytest.approx(3600 / (cost["flops"] / (h100.peak_flops * 0.4)))  # compute-bound here
    slow_memory = type(h100)("slow", h100.peak_flops, 1e9, h100.memory)
    assert chains_per_hour(cost, slow_memory, 0.4) == pytest.approx(
        3600 / ((cost["weight_bytes"] + cost["kv_bytes"]) / 1e9))
    assert json.dumps(cost) and np.isfinite(rate)
