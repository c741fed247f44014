"""Exact greedy references for the approximate modes: computed once, committed, compared against without rerunning.

    python benchmarks/exact_references.py [--output=benchmarks/data/exact_references.jsonl --max_chains=15
                                           --step_costs=/tmp/step_costs.jsonl]

Exact greedy to keep ratio 0.5 costs about 7N^3/48 token-forwards for N reasoning tokens (minutes per chain here at
N = 100, most of an hour at N = 250), so `benchmarks/approx_agreement.py` reads these orders instead of recomputing
them. The set holds 15 chains, shortest first: 12 of 84-131 SmolLM2 reasoning tokens pruned to keep 0.5 (3.1M
token-forwards), and 3 of 180-200 tokens pruned to keep 0.7 (the lengths where approximate modes must hold; keep
0.5 would cost about 2.5x more; about half an hour each on this CPU when alone), from:

* GSM8K reference solutions (`experiments/data/gsm8k/test.jsonl`, calculator annotations removed);
* CHAMP reference solutions (the `champ-dataset` package: competition math, one step per line);
* generated multi-part problems: several `jaxprune.data.synthetic` problems asked at once, answered by their total.

Each line: the chain (id, source, question, reasoning, answer, system), its token spans, the exact deletion order
to keep 0.5 or 0.7 (which holds every higher keep ratio as a prefix), the step log-likelihoods, the token-forwards
run (padding included) and the seconds it took. Reruns skip the ids already written, and a chain's deletions so far
are saved every few steps to `<output>.partial.json` (written whole, then renamed), so a kill loses a few steps.
`--dtype=bfloat16 --output=benchmarks/data/bf16_references.jsonl --max_chains=6` gives the yardstick: exact greedy
scored in bfloat16, as the paper scored, on the same chains. `--step_costs` also appends every step's cost of
deleting each remaining token (nats): the data `benchmarks/policy_replay.py` replays candidate policies against.
"""

import json
import os
import re
import time

import numpy as np
from absl import app, flags, logging

_OUTPUT = flags.DEFINE_string("output", "benchmarks/data/exact_references.jsonl", "Where the references go.")
_GSM8K = flags.DEFINE_string("gsm8k", "experiments/data/gsm8k/test.jsonl", "GSM8K test file.")
_MAX_CHAINS = flags.DEFINE_integer("max_chains", 15, "Compute the first N chains of the set (shortest first).")
_STEP_COSTS = flags.DEFINE_string("step_costs", None, "Also append every step's candidate costs here (JSONL).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ("float32", "bfloat16"),
                           "Pruner dtype; bfloat16 gives the yardstick (benchmarks/data/bf16_references.jsonl).")
_SAVE_EVERY = 5  # deletions between saves of a chain's progress
# (source, how many, reasoning-token band, keep ratio): the set is fixed, so a longer run extends a shorter one.
BANDS = (("gsm8k", 4, (80, 110), 0.5), ("champ", 4, (85, 135), 0.5), ("generated", 4, (90, 130), 0.5),
         ("gsm8k", 1, (180, 190), 0.7), ("champ", 1, (195, 210), 0.7), ("generated", 1, (180, 185), 0.7))


def _gsm8k(path):
    for line in open(path, encoding="utf-8"):
        record = json.loads(line)
        solution, gold = record["answer"].split("####")
        yield {"question": record["question"], "reasoning": re.sub(r"<<[^>]*>>", "", solution).strip() + "\n",
               "gold": gold.strip()}


def _champ():
    import champ_dataset

    for problem in champ_dataset.load("v0").problems.values():
        yield {"question": problem.text, "gold": problem.answer,
               "reasoning": "\n".join(step.text for step in problem.solution.steps) + "\n"}


def _generated():
    """Multi-part problems: 2-9 generated problems asked together; the answer is the total of theirs."""
    from jaxprune.data.synthetic import generate_problems, multi_part_problem

    problems = generate_problems(400, seed=13)
    start = 0
    for parts in range(2, 10):
        for _ in range(12):
            yield multi_part_problem(problems[start: start + parts])
            start += parts


def reference_chains(tokenizer, gsm8k_path):
    """The fixed chain set: per band, the first chains of its source whose reasoning length falls inside it."""
    from jaxprune.data.prompts import GSM8K_SYSTEM_PROMPT, split_chain

    sources = {"gsm8k": lambda: _gsm8k(gsm8k_path), "champ": _champ, "generated": _generated}
    chains, used = [], set()
    for source, count, (low, high), keep_ratio in BANDS:
        found = 0
        for index, chain in enumerate(sources[source]()):
            if found == count:
                break
            key = f"{source}-{index}"
            record = {"id": key, "source": source, "question": chain["question"], "reasoning": chain["reasoning"],
                      "answer": json.dumps({"answer": chain["gold"]}), "system": GSM8K_SYSTEM_PROMPT}
            split = split_chain(tokenizer, record["question"], record["reasoning"], record["answer"],
                                record["system"])
            if key not in used and low <= len(split.reasoning) <= high:
                used.add(key)
                chains.append((dict(record, keep_ratio=keep_ratio), split))
                found += 1
    return sorted(chains, key=lambda pair: len(pair[1].reasoning))


def _load_progress(path, chain_id):
    """The saved deletions of a chain cut short by a kill (`PruneTrace` fields), or None."""
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as file:
        saved = json.load(file)
    return saved if saved["id"] == chain_id else None


def _save_progress(path, saved):
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(saved, file)
    os.replace(temporary, path)


def prune_recording_costs(scorer, split, config, *, start, on_step, on_costs, on_trace):
    """Exact greedy, each step scored on its own. Before a step deletes, `on_costs(step, positions, costs)` gets every
    remaining token's cost of deletion (nats of the objective lost) and `on_trace(trace)` the deletions so far."""
    from jaxprune.pruning.greedy import PruneTrace, chain_log_likelihoods, greedy_steps, pick_best

    steps = greedy_steps(scorer, split, config, start, on_step)
    so_far = PruneTrace(list(start.deletion_order), {k: list(v) for k, v in start.log_likelihoods.items()},
                        dict(start.original)) if start else PruneTrace([], {"joint": [], "answer": [], "reasoning": []}, {})
    try:
        request = next(steps)
        while True:
            values = chain_log_likelihoods(request.base, len(request.tokens), request.prompt_length,
                                           request.reasoning_length)
            if not so_far.original:
                so_far.original = values
            elif len(so_far.log_likelihoods["joint"]) < len(so_far.deletion_order):
                for key in so_far.log_likelihoods:
                    so_far.log_likelihoods[key].append(values[key])
            on_trace(so_far)
            scores = scorer.score_steps([request])[0]
            deleted = set(so_far.deletion_order)
            remaining = np.asarray([i for i in range(len(split.reasoning)) if i not in deleted])
            positions = remaining[scores.candidates - request.prompt_length]
            objective = scores.objective(config.objective)
            on_costs(len(so_far.deletion_order), positions.tolist(), values[config.objective] - objective)
            so_far.deletion_order.append(int(positions[pick_best(objective, positions, 1)[0]]))
            request = steps.send(scores)
    except StopIteration as finished:
        if finished.value.deletion_order != so_far.deletion_order:
            raise AssertionError("the recorded costs do not follow the greedy run's deletions")
        return finished.value


def main(argv):
    del argv
    from jaxprune import cost_model
    from jaxprune.checkpoints import load_model
    from jaxprune.data.records import JsonlAppender
    from jaxprune.pruning.greedy import PruneConfig, PruneTrace
    from jaxprune.pruning.scoring import Scorer

    import jax.numpy as jnp

    model, tokenizer = load_model(dtype=jnp.dtype(_DTYPE.value))
    chains = reference_chains(tokenizer, _GSM8K.value)[: _MAX_CHAINS.value]
    scorer = Scorer(model)
    progress_path = _OUTPUT.value + ".partial.json"
    with JsonlAppender(_OUTPUT.value) as appender:
        todo = [(r, s) for r, s in chains if r["id"] not in appender.done_ids]
        predicted = sum(cost_model.chain_token_forwards(len(s.prompt), len(s.reasoning), len(s.answer),
                                                        r["keep_ratio"]) for r, s in todo)
        logging.info("%d chains (%d to do), reasoning tokens %s; about %.2fM token-forwards to run", len(chains),
                     len(todo), [len(s.reasoning) for _, s in chains], predicted / 1e6)
        for record, split in todo:
            saved = _load_progress(progress_path, record["id"]) or {
                "id": record["id"], "deletion_order": [], "log_likelihoods": None, "original": {},
                "token_forwards": 0, "seconds": 0.0}
            start = PruneTrace(saved["deletion_order"], saved["log_likelihoods"], saved["original"]) \
                if saved["deletion_order"] else None
            scorer.forward_tokens, begin = saved["token_forwards"], time.perf_counter() - saved["seconds"]

            def progress(done, total, record=record, begin=begin):
                if done % 10 == 0 or done == total:
                    rate = scorer.forward_tokens / (time.perf_counter() - begin)
                    logging.info("%s: %d/%d deletions, %.0f token-forwards/s", record["id"], done, total, rate)

            def costs(step, positions, values, record=record):
                if _STEP_COSTS.value:
                    with open(_STEP_COSTS.value, "a", encoding="utf-8") as file:
                        file.write(json.dumps({"id": record["id"], "step": step, "positions": positions,
                                               "costs": [round(float(v), 6) for v in values]}) + "\n")

            def save(trace, record=record, begin=begin):
                if len(trace.deletion_order) % _SAVE_EVERY == 0:
                    _save_progress(progress_path, {
                        "id": record["id"], "deletion_order": trace.deletion_order,
                        "log_likelihoods": trace.log_likelihoods, "original": trace.original,
                        "token_forwards": scorer.forward_tokens, "seconds": time.perf_counter() - begin})

            config = PruneConfig(keep_ratio=record["keep_ratio"])
            trace = prune_recording_costs(scorer, split, config, start=start, on_step=progress, on_costs=costs,
                                          on_trace=save)
            appender.append({**record, "dtype": _DTYPE.value, "prompt_token_ids": list(split.prompt),
                             "reasoning_token_ids": list(split.reasoning), "answer_token_ids": list(split.answer),
                             "deletion_order": trace.deletion_order,
                             "step_log_likelihoods": trace.log_likelihoods,
                             "original_log_likelihoods": trace.original, "token_forwards": scorer.forward_tokens,
                             "seconds": round(time.perf_counter() - begin, 1)})
            if os.path.exists(progress_path):  # the chain is in the output now; its progress would only confuse
                os.remove(progress_path)


if __name__ == "__main__":
    app.run(main)
