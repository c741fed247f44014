"""Replays approximate modes' candidate choices along exact greedy's path, from recorded step costs (base passes only).

    python benchmarks/policy_replay.py [--costs=benchmarks/data/step_costs.jsonl --mode=approx:tolerance=0.01 ...]

`benchmarks/exact_references.py --step_costs=...` records, at every step of exact greedy, every remaining token's
cost of deletion (`benchmarks/data/step_costs.jsonl`: chains gsm8k-4 and champ-32 to keep 0.5, generated-16 and
gsm8k-39 to keep 0.7, every step). Here a mode's candidate policy (`choose`, then `refine` rounds if it has them,
then `observe`) is shown only the costs of the candidates it asks for, step by step along exact greedy's deletions (teacher forcing), so
its misses are counted without the divergence that follows a miss in a real run. Per mode and chain: steps where the
best rescored candidate is not exact's choice (a miss: its cost above the best by more than greedy's tie tolerance),
candidates rescored, and token-forwards as the cost model counts them (incremental base passes, whole suffixes, no
padding) against exact greedy's. A fast way to tune settings; the real agreement is `approx_agreement.py`'s.
"""

import collections
import json

import numpy as np
from absl import app, flags

from mode_spec import parse_mode  # benchmarks/, beside this file

_COSTS = flags.DEFINE_multi_string("costs", ["benchmarks/data/step_costs.jsonl"],
                                   "Recorded step costs (JSONL); repeat the flag.")
_REFERENCES = flags.DEFINE_string("references", "benchmarks/data/exact_references.jsonl",
                                  "Chains (for prompt and answer lengths).")
_MODES = flags.DEFINE_multi_string("mode", ["approx"], "A mode, method[:setting=value,...]; repeat the flag.")
_CHAINS = flags.DEFINE_list("chains", None, "Replay only these chain ids (default: every chain recorded).")


def replay(policy, steps, chain, scorer):
    """(misses, rescored, token_forwards, exact token_forwards, summed regret in nats) of `policy` along the recorded steps."""
    from jaxprune.data.prompts import TokenSplit
    from jaxprune.pruning.greedy import (TIE_TOLERANCE, WHOLE, Rescore, chain_log_likelihoods, local_costs,
                                         pick_best)

    split = TokenSplit(*(tuple(chain[f"{part}_token_ids"]) for part in ("prompt", "reasoning", "answer")))
    reasoning = np.asarray(split.reasoning)
    prompt, answer = len(split.prompt), len(split.answer)

    misses = rescored = forwards = exact_forwards = regret = 0
    last = None
    for step in steps:
        remaining = np.asarray(step["positions"])
        order = np.argsort(remaining)
        remaining, costs = remaining[order], np.asarray(step["costs"])[order]
        n = len(remaining)
        length = prompt + n + answer
        suffix = length - 2 - (prompt + np.arange(n))
        base_forwards = length if last is None else length - (prompt + int(np.searchsorted(remaining, last))) + 2
        exact_forwards += length + suffix.sum()
        tokens = split.chain(reasoning[remaining])
        base = scorer.base_pass(tokens)
        current = chain_log_likelihoods(base, len(tokens), prompt, n)["joint"]
        rescore = policy.choose(remaining, local_costs(base, tokens, prompt, n, "joint"))
        rescore = Rescore.whole(np.arange(n)) if rescore is None else rescore
        indices, limits, scored = [], [], []
        while rescore is not None and len(rescore.indices):
            partial = rescore.limits != WHOLE
            scored_now = costs[rescore.indices].copy()
            if partial.any():  # partial scores are computed here; exact ones were recorded
                limited = scorer.score_step(tokens, prompt, n, base, prompt + rescore.indices[partial],
                                            rescore.limits[partial])
                scored_now[partial] = current - limited.objective("joint")
            indices.append(rescore.indices), limits.append(rescore.limits), scored.append(scored_now)
            forwards += np.minimum(suffix[rescore.indices], rescore.limits).sum()
            rescore = policy.refine(np.concatenate(indices), np.concatenate(limits), np.concatenate(scored))
        indices, limits, scored = np.concatenate(indices), np.concatenate(limits), np.concatenate(scored)
        exact = indices[limits == WHOLE]
        rescored += len(exact)
        forwards += base_forwards
        exact_choice = pick_best(-costs, remaining, 1)[0]
        picked = exact[pick_best(-costs[exact], remaining[exact], 1)[0]]
        misses += costs[picked] > costs[exact_choice] + TIE_TOLERANCE
        regret += costs[picked] - costs[exact_choice]
        last = int(remaining[exact_choice])
        policy.observe(remaining[indices], limits, scored, [last])
    return misses, rescored, forwards, exact_forwards, regret


def make_policy(spec, size):
    from jaxprune.pruning.methods import make_method

    name, settings = parse_mode(spec)
    return make_method(name, **settings).policy(size)


def main(argv):
    del argv
    from jaxprune.checkpoints import load_model
    from jaxprune.data.records import read_jsonl
    from jaxprune.pruning.scoring import Scorer

    scorer = Scorer(load_model()[0])  # base passes only: each step's local costs

    chains = {record["id"]: record for _, record in read_jsonl(_REFERENCES.value)}
    steps = collections.defaultdict(list)
    for path in _COSTS.value:
        for _, record in read_jsonl(path):
            steps[record["id"]].append(record)
    print("| mode | chain | N | steps | misses | regret (nats) | rescored a step | token-forwards | fewer than exact |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for spec in _MODES.value:
        totals = np.zeros(5)
        for chain_id, chain_steps in steps.items():
            if (_CHAINS.value and chain_id not in _CHAINS.value) or chain_id not in chains:
                continue  # not asked for, or its reference not written yet
            chain_steps.sort(key=lambda record: record["step"])
            chain = chains[chain_id]
            size = len(chain["reasoning_token_ids"])
            result = replay(make_policy(spec, size), chain_steps, chain, scorer)
            totals += result
            print(flush=True, end="")
            print(f"| {spec} | {chain_id} | {size} | {len(chain_steps)} | {result[0]} | {result[4]:.2f} | "
                  f"{result[1] / len(chain_steps):.1f} | {result[2]:,} | {result[3] / result[2]:.1f}x |")
        print(f"| {spec} | all | | | {int(totals[0])} | {totals[4]:.2f} | | {int(totals[2]):,} | {totals[3] / totals[2]:.1f}x |")


if __name__ == "__main__":
    app.run(main)
