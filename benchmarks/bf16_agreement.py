"""Exact greedy pruning with the model in bfloat16 against float32: how much of the deletion order survives.

    python benchmarks/bf16_agreement.py [--num_chains=10 --cache=/tmp/bf16_agreement.jsonl]

Both runs use the same algorithm (one deletion per step, every candidate scored) on the same token splits; only the
model's dtype differs (parameters and activations; log-probabilities are still summed in float32/float64). Chains:
the first `--num_chains` GSM8K test problems whose worked solution is 80-160 characters, built as
`benchmarks/prune_speed.py --chains=gsm8k` builds them. Every chain is pruned to keep ratio 0.5 in each dtype.

Reported per keep ratio r in 0.9 / 0.8 / 0.7 / 0.5: the kept-set overlap |kept_bf16 & kept_f32| / |kept_f32|, the
kept set being the reasoning tokens outside the first `deletions_for(N, r)` entries of the deletion order. Spearman:
over the tokens that either run deletes by keep 0.5, each token ranked by the step at which that run deletes it
(tokens a run keeps share its last rank, D = deletions_for(N, 0.5)); the two rank vectors are correlated with
`scipy.stats.spearmanr`. First-step scores: the joint log-likelihood of every step-1 candidate in each dtype; the
max abs difference, and its spread over the candidates (max - min of bf16 - f32: an error common to all candidates
does not change the choice), are set against the float32 gap between the best and second-best candidate, since an
error spread larger than that gap can change the chosen token.

Each (dtype, chain) result is appended to `--cache` as it finishes, so a killed run resumes; wall time is the sum of
per-chain prune times, measured after an untimed warm-up prune of the first chain (compilation mostly excluded).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gsm8k_solutions import gsm8k_chains  # noqa: E402  (a sibling script, not a package)

from jaxprune.pruning.agreement import kept_overlap, ranks  # noqa: E402

KEEP_RATIOS = (0.9, 0.8, 0.7, 0.5)
DTYPES = ("float32", "bfloat16")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gsm8k", default="experiments/data/gsm8k/test.jsonl", help="GSM8K test JSONL.")
    parser.add_argument("--num_chains", type=int, default=10, help="How many chains to prune in each dtype.")
    parser.add_argument("--cache", default="/tmp/bf16_agreement.jsonl", help="Per-chain results, for resuming.")
    return parser.parse_args()


def read_cache(path):
    if not os.path.exists(path):
        return {}
    done = {}
    for line in open(path):
        try:
            result = json.loads(line)
        except json.JSONDecodeError:  # the line a kill tore
            continue
        done[(result["dtype"], result["question"])] = result
    return done


def prune_in(dtype, records, splits, done, cache_path):
    """Prunes every chain not yet in the cache with the model in `dtype`; appends each result to the cache."""
    import jax.numpy as jnp

    from jaxprune.checkpoints import load_model
    from jaxprune.pruning.greedy import PruneConfig, greedy_prune
    from jaxprune.pruning.scoring import Scorer

    todo = [i for i, r in enumerate(records) if (dtype, r["question"]) not in done]
    if not todo:
        return
    model, _ = load_model(dtype=jnp.dtype(dtype))
    scorer = Scorer(model)
    config = PruneConfig(keep_ratio=0.5)
    greedy_prune(scorer, splits[todo[0]], config)  # warm-up: compiles this length's shapes, untimed
    with open(cache_path, "a") as cache:
        for i in todo:
            split = splits[i]
            begin = time.perf_counter()
            order = greedy_prune(scorer, split, config).deletion_order
            seconds = time.perf_counter() - begin
            tokens = np.asarray(split.prompt + split.reasoning + split.answer, np.int32)
            base = scorer.base_pass(tokens)
            first = scorer.score_step(tokens, len(split.prompt), len(split.reasoning), base).objective("joint")
            result = {"dtype": dtype, "question": records[i]["question"], "n": len(split.reasoning),
                      "order": order, "seconds": seconds, "first_step_joint": first.tolist()}
            cache.write(json.dumps(result) + "\n")
            cache.flush()
            done[(dtype, result["question"])] = result
            print(f"{dtype:8s} chain {i + 1}/{len(records)}: N={result['n']}, {seconds:.1f} s", flush=True)


def spearman_over_deleted(order_a, order_b, n):
    from scipy.stats import spearmanr

    deleted = sorted(set(order_a) | set(order_b))
    return float(spearmanr(ranks(order_a, n)[deleted], ranks(order_b, n)[deleted]).statistic)


def second_gap(scores):
    top = np.sort(scores)[-2:]
    return float(top[1] - top[0])


def report(records, done, command):
    f32 = [done[("float32", r["question"])] for r in records]
    bf16 = [done[("bfloat16", r["question"])] for r in records]
    n = [a["n"] for a in f32]
    overlaps = {r: [kept_overlap(b["order"], a["order"], a["n"], r) for a, b in zip(f32, bf16)] for r in KEEP_RATIOS}
    rho = [spearman_over_deleted(a["order"], b["order"], a["n"]) for a, b in zip(f32, bf16)]
    f32_seconds, bf16_seconds = sum(a["seconds"] for a in f32), sum(b["seconds"] for b in bf16)
    first_a = [np.asarray(a["first_step_joint"]) for a in f32]
    first_b = [np.asarray(b["first_step_joint"]) for b in bf16]
    max_diff = [float(np.abs(a - b).max()) for a, b in zip(first_a, first_b)]
    spread = [float(np.ptp(b - a)) for a, b in zip(first_a, first_b)]  # an error shared by all candidates cancels
    same_first = sum(a["order"][0] == b["order"][0] for a, b in zip(f32, bf16))
    same_order = sum(a["order"] == b["order"] for a, b in zip(f32, bf16))

    print(f"\n`{command}`: {len(records)} chains, reasoning {min(n)}-{max(n)} tokens (mean {np.mean(n):.1f}), "
          f"SmolLM2-135M-Instruct, exact greedy to keep 0.5 in each dtype\n")
    print("| keep ratio | kept-set overlap, mean | min |")
    print("| ---: | ---: | ---: |")
    for r in KEEP_RATIOS:
        print(f"| {r} | {np.mean(overlaps[r]):.3f} | {np.min(overlaps[r]):.3f} |")
    print("\n| chains | mean N | Spearman, mean (min) | same whole order | same first deletion "
          "| float32 s | bfloat16 s | bf16 / f32 time |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    count = len(records)
    print(f"| {count} | {np.mean(n):.1f} | {np.mean(rho):.3f} ({np.min(rho):.3f}) | {same_order}/{count} "
          f"| {same_first}/{count} | {f32_seconds:.1f} | {bf16_seconds:.1f} | {bf16_seconds / f32_seconds:.2f}x |")
    print(f"\nStep 1, joint scores of all candidates: max |f32 - bf16| {np.mean(max_diff):.3f} nats (mean over chains; "
          f"range {np.min(max_diff):.3f}-{np.max(max_diff):.3f}); spread of f32 - bf16 over the candidates "
          f"{np.mean(spread):.3f} nats (mean); float32 gap best - second best "
          f"{np.mean([second_gap(a) for a in first_a]):.3f} nats (mean; median "
          f"{np.median([second_gap(a) for a in first_a]):.3f}).")


def main():
    args = parse_args()
    from jaxprune.checkpoints import DEFAULT_MODEL, load_tokenizer
    from jaxprune.data.prompts import split_chain

    tokenizer = load_tokenizer(DEFAULT_MODEL)  # the model load_model() loads: SmolLM2-135M-Instruct
    records = gsm8k_chains(args.gsm8k, args.num_chains)
    splits = [split_chain(tokenizer, r["question"], r["reasoning"], r["answer"], r["system"]) for r in records]
    done = read_cache(args.cache)
    for dtype in DTYPES:  # one model in memory at a time
        prune_in(dtype, records, splits, done, args.cache)
    report(records, done, "python benchmarks/bf16_agreement.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
