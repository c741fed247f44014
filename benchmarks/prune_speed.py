"""Greedy-pruning speed: jaxprune against the authors' method written in PyTorch, on the same model and chains.

    python benchmarks/prune_speed.py [--chains=gsm8k --num_chains=3 --keep_ratio=0.7]

Chains: `gsm8k` takes the first `--num_chains` GSM8K test problems from `experiments/data/gsm8k` whose worked solution
is 80-160 characters, with the paper's JSON-answer system prompt (solution as reasoning, `{"answer": ...}` as the
answer); or a chain JSONL path such as `experiments/data/demo_chains.jsonl` (SmolLM2's own chains).

(a) Whole exact prunes to `--keep_ratio`. The PyTorch reference follows the authors' method: at every step, every
    candidate chain (one reasoning token physically deleted) in one batched full forward with `transformers`,
    float32, log-softmax over the vocabulary, the best joint log-likelihood wins (ties to the lowest position).
    The deletion orders must be the same.
(b) Forward token counts per whole prune: jaxprune's (padding included) against full recompute and against the
    minimal suffix-only bound.

The approximate modes against exact greedy: `benchmarks/approx_agreement.py`.
"""

import json
import os
import time

import numpy as np
from absl import app, flags
from gsm8k_solutions import gsm8k_chains  # this folder is on the path when run as a script

_CHAINS = flags.DEFINE_string("chains", "gsm8k", "'gsm8k' or a chain JSONL path.")
_GSM8K = flags.DEFINE_string("gsm8k", "experiments/data/gsm8k/test.jsonl", "GSM8K file for --chains=gsm8k.")
_NUM_CHAINS = flags.DEFINE_integer("num_chains", 3, "How many chains to prune.")
_KEEP_RATIO = flags.DEFINE_float("keep_ratio", 0.7, "Keep ratio of the exact comparison (a, b).")
_SKIP_TORCH = flags.DEFINE_bool("skip_torch", False, "Skip the PyTorch reference (a).")


def torch_reference_prune(model, split, keep_ratio, tie_tolerance):
    """The authors' method: all candidates of a step in one batched full forward (float32)."""
    import torch

    from jaxprune.pruning.greedy import deletions_for

    prompt, answer = list(split.prompt), list(split.answer)
    remaining = list(range(len(split.reasoning)))
    order, forward_tokens = [], 0
    for _ in range(deletions_for(len(remaining), keep_ratio)):
        batch = torch.tensor([prompt + [split.reasoning[j] for j in remaining if j != i] + answer
                              for i in remaining])
        forward_tokens += batch.numel()
        with torch.inference_mode():
            log_probs = torch.log_softmax(model(batch).logits[:, :-1].float(), dim=-1)
            token_log_probs = log_probs.gather(-1, batch[:, 1:, None])[..., 0].double()
        scores = token_log_probs[:, len(prompt) - 1:].sum(-1).numpy()  # joint: reasoning left + answer
        best = scores.max()
        index = int(np.flatnonzero(scores >= best - tie_tolerance)[0])
        order.append(remaining.pop(index))
    return order, forward_tokens


def minimal_forward_tokens(split, order):
    """Base pass (T) plus, for each candidate c, the queries x[c+1 : T-1] that must be recomputed."""
    total = 0
    n, prompt, answer = len(split.reasoning), len(split.prompt), len(split.answer)
    for step in range(len(order)):
        left = n - step
        length = prompt + left + answer
        total += length + sum(max(length - 2 - c, 0) for c in range(prompt, prompt + left))
    return total


def full_recompute_tokens(split, order):
    n, prompt, answer = len(split.reasoning), len(split.prompt), len(split.answer)
    return sum((n - step) * (prompt + n - step - 1 + answer) for step in range(len(order)))


def main(argv):
    del argv
    import torch
    from transformers import AutoModelForCausalLM

    from jaxprune.checkpoints import load_model
    from jaxprune.checkpoints.resolve import packaged_model_path
    from jaxprune.data.prompts import split_chain
    from jaxprune.pruning.greedy import TIE_TOLERANCE, PruneConfig, greedy_prune
    from jaxprune.pruning.scoring import Scorer

    model, tokenizer = load_model()
    if _CHAINS.value == "gsm8k":
        records = gsm8k_chains(_GSM8K.value, _NUM_CHAINS.value)
    else:
        records = [json.loads(line) for line in open(_CHAINS.value)][: _NUM_CHAINS.value]
    splits = [split_chain(tokenizer, r["question"], r["reasoning"], r["answer"], r.get("system")) for r in records]
    print(f"model=SmolLM2-135M-Instruct float32, {len(splits)} chains from {_CHAINS.value}, reasoning tokens "
          f"{[len(s.reasoning) for s in splits]}, prompt+answer tokens "
          f"{[len(s.prompt) + len(s.answer) for s in splits]}, torch threads {torch.get_num_threads()}")

    def timed_prunes(config, chains=splits):
        scorer = Scorer(model)
        begin = time.perf_counter()
        traces = [greedy_prune(scorer, split, config) for split in chains]
        return traces, time.perf_counter() - begin, scorer.forward_tokens

    exact = PruneConfig(keep_ratio=_KEEP_RATIO.value)
    cold_traces, cold_seconds, _ = timed_prunes(exact)
    traces, seconds, our_tokens = timed_prunes(exact)
    assert [t.deletion_order for t in traces] == [t.deletion_order for t in cold_traces]
    print(f"\n(a) exact greedy to keep ratio {_KEEP_RATIO.value}")
    print(f"jaxprune                 {seconds:8.1f} s   (first run, compiles included: {cold_seconds:.1f} s)")
    if not _SKIP_TORCH.value:
        directory, name = os.path.split(packaged_model_path("SmolLM2-135M-Instruct"))
        reference = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32).eval()
        begin = time.perf_counter()
        torch_results = [torch_reference_prune(reference, split, _KEEP_RATIO.value, TIE_TOLERANCE)
                         for split in splits]
        torch_seconds = time.perf_counter() - begin
        same = [order == trace.deletion_order for (order, _), trace in zip(torch_results, traces)]
        print(f"PyTorch reference        {torch_seconds:8.1f} s")
        print(f"speed-up                 {torch_seconds / seconds:8.2f}x   (vs first run {torch_seconds / cold_seconds:.2f}x)"
              f"   same deletion orders: {sum(same)}/{len(same)}")
        assert all(same), "jaxprune and the PyTorch reference disagree on a deletion order"

    full = sum(full_recompute_tokens(s, t.deletion_order) for s, t in zip(splits, traces))
    minimal = sum(minimal_forward_tokens(s, t.deletion_order) for s, t in zip(splits, traces))
    print("\n(b) forward tokens per whole prune (all chains)")
    print(f"full recompute (authors) {full:10d}   {full / minimal:.2f}x the minimum")
    print(f"jaxprune, padding incl.  {our_tokens:10d}   {our_tokens / minimal:.2f}x the minimum")
    print(f"suffix-only minimum      {minimal:10d}")


if __name__ == "__main__":
    app.run(main)
