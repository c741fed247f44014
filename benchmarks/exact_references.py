"""Exact greedy references for the approximate modes: computed once, committed, compared against without rerunning.

    python benchmarks/exact_references.py [--output=benchmarks/data/exact_references.jsonl --max_chains=12]

Exact greedy to keep ratio 0.5 costs about 7N^3/48 token-forwards for N reasoning tokens (minutes per chain here at
N = 100, most of an hour at N = 250), so `benchmarks/approx_agreement.py` reads these orders instead of recomputing
them. The set holds 14 chains of 84-248 SmolLM2 reasoning tokens, shortest first (the committed file: the first 12,
84-131 tokens, 3.1M token-forwards; `--max_chains=14` adds the two longest), from:

* GSM8K reference solutions (`../shared/data/gsm8k/test.jsonl`, calculator annotations removed);
* CHAMP reference solutions (the `champ-dataset` package: competition math, one step per line);
* generated multi-part problems: several `jaxprune.data.synthetic` problems asked at once, answered by their total.

Each line: the chain (id, source, question, reasoning, answer, system), its token spans, the exact deletion order
to keep 0.5 (which holds every higher keep ratio as a prefix), the step log-likelihoods, the token-forwards run
(padding included) and the seconds it took. Reruns skip the ids already written (a kill loses one chain at most).
"""

import json
import re
import time

from absl import app, flags, logging

_OUTPUT = flags.DEFINE_string("output", "benchmarks/data/exact_references.jsonl", "Where the references go.")
_GSM8K = flags.DEFINE_string("gsm8k", "../shared/data/gsm8k/test.jsonl", "GSM8K test file.")
_MAX_CHAINS = flags.DEFINE_integer("max_chains", 12, "Compute the first N chains of the set (shortest first).")
_KEEP_RATIO = 0.5
# (source, how many, reasoning-token band): the set is fixed, so a longer run extends a shorter one.
BANDS = (("gsm8k", 4, (80, 110)), ("champ", 4, (85, 135)), ("generated", 4, (90, 130)),
         ("champ", 1, (190, 230)), ("generated", 1, (230, 250)))


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
    for source, count, (low, high) in BANDS:
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
                chains.append((record, split))
                found += 1
    return sorted(chains, key=lambda pair: len(pair[1].reasoning))


def main(argv):
    del argv
    from jaxprune import cost_model
    from jaxprune.checkpoints import load_model
    from jaxprune.data.records import JsonlAppender
    from jaxprune.pruning.greedy import PruneConfig, greedy_prune
    from jaxprune.pruning.scoring import Scorer

    model, tokenizer = load_model()
    chains = reference_chains(tokenizer, _GSM8K.value)[: _MAX_CHAINS.value]
    scorer = Scorer(model)
    with JsonlAppender(_OUTPUT.value) as appender:
        todo = [(r, s) for r, s in chains if r["id"] not in appender.done_ids]
        predicted = sum(cost_model.chain_token_forwards(len(s.prompt), len(s.reasoning), len(s.answer), _KEEP_RATIO)
                        for _, s in todo)
        logging.info("%d chains (%d to do), reasoning tokens %s; about %.2fM token-forwards to run", len(chains),
                     len(todo), [len(s.reasoning) for _, s in chains], predicted / 1e6)
        for record, split in todo:
            scorer.forward_tokens, begin = 0, time.perf_counter()

            def progress(done, total, begin=begin):
                if done % 10 == 0 or done == total:
                    rate = scorer.forward_tokens / (time.perf_counter() - begin)
                    logging.info("%s: %d/%d deletions, %.0f token-forwards/s", record["id"], done, total, rate)

            trace = greedy_prune(scorer, split, PruneConfig(keep_ratio=_KEEP_RATIO), on_step=progress)
            appender.append({**record, "prompt_token_ids": list(split.prompt),
                             "reasoning_token_ids": list(split.reasoning), "answer_token_ids": list(split.answer),
                             "keep_ratio": _KEEP_RATIO, "deletion_order": trace.deletion_order,
                             "step_log_likelihoods": trace.log_likelihoods,
                             "original_log_likelihoods": trace.original, "token_forwards": scorer.forward_tokens,
                             "seconds": round(time.perf_counter() - begin, 1)})


if __name__ == "__main__":
    app.run(main)
