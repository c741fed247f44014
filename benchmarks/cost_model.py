"""The cost model checked on this machine, then used to predict 7-8B pruning on accelerators.

    python benchmarks/cost_model.py [--chains=3 --keep_ratio=0.7]

1. Measures the sustained forward FLOP/s of SmolLM2-135M-Instruct (float32) here: plain batched forwards of 8 x 256
   tokens, FLOPs from `jaxprune.cost_model.flops_per_token`.
2. Prunes the demo chains with exact greedy and compares the measured time with the model's prediction (its
   FLOPs at the measured rate), and the kernel's token-forwards (padding included) with the model's count.
3. Predicts chains per hour and days for 7,473 GSM8K chains with a Llama-3.1-8B pruner (bfloat16, 64k-token kernel
   calls as the paper flags) on TPU v5e-8, v5p-8, v6e-8, an H100 and an H200 at 40% of peak FLOP/s, and the roofline
   (peak FLOP/s, or the bytes read at full HBM bandwidth): exact greedy, approximate modes, and scoring every
   candidate by a full forward as the authors' code does. Step 2 shows how close the kernel comes to dense forwards
   here. Unmeasured on accelerators; the FLOPs per kernel call are checked against XLA's by the compile check.
"""

import json
import time

from absl import app, flags

_CHAINS = flags.DEFINE_integer("chains", 3, "Demo chains to prune for the check.")
_KEEP_RATIO = flags.DEFINE_float("keep_ratio", 0.7, "Keep ratio of the check.")
_UTILISATION = flags.DEFINE_float("utilisation", 0.4, "Share of peak FLOP/s assumed on accelerators.")
_PREDICTIONS_ONLY = flags.DEFINE_bool("predictions_only", False, "Skip the check on this machine (steps 1-2; it "
                                      "needs a quiet CPU): only the accelerator predictions, which are arithmetic.")
# A paper-scale GSM8K chain for Llama-3.1-8B-Instruct (system + question, reasoning, answer + end of turn), pruned
# once down to 0.45 (SPEC section 1).
_PROMPT, _REASONING, _ANSWER, _PAPER_KEEP, _GSM8K_TRAIN = 180, 250, 14, 0.45, 7473


def _forward_flops_per_second(model, config) -> float:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from jaxprune.cost_model import flops_per_token
    from jaxprune.models.llama import causal_mask, positions_from_keep

    batch, length = 8, 256
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, config.vocab_size, (batch, length)), jnp.int32)
    keep = jnp.ones((batch, length), bool)
    graphdef, params = nnx.split(model)

    @jax.jit
    def forward(params, tokens):
        return nnx.merge(graphdef, params)(tokens, positions_from_keep(keep), causal_mask(keep)).logits.sum()

    forward(params, tokens).block_until_ready()
    start, repeats = time.perf_counter(), 5
    for _ in range(repeats):
        forward(params, tokens).block_until_ready()
    seconds = (time.perf_counter() - start) / repeats
    return batch * length * flops_per_token(config, length // 2) / seconds


def main(argv):
    del argv
    if not _PREDICTIONS_ONLY.value:
        _check_here()
    _predict()


def _check_here():
    from jaxprune.checkpoints import load_model
    from jaxprune.cost_model import chain_cost
    from jaxprune.data.prompts import split_chain
    from jaxprune.data.records import read_chains
    from jaxprune.pruning.greedy import PruneConfig, greedy_prune
    from jaxprune.pruning.scoring import Scorer

    model, tokenizer = load_model("packaged:SmolLM2-135M-Instruct")
    rate = _forward_flops_per_second(model, model.config)
    print(f"SmolLM2-135M dense forward here: {rate / 1e9:.1f} GFLOP/s")

    scorer = Scorer(model)
    chains = [record for _, record in read_chains("experiments/data/demo_chains.jsonl")][: _CHAINS.value]
    splits = [split_chain(tokenizer, r["question"], r["reasoning"], r["answer"], r.get("system")) for r in chains]
    greedy_prune(scorer, splits[0], PruneConfig(keep_ratio=_KEEP_RATIO.value))  # compile
    scorer.forward_tokens = 0
    start = time.perf_counter()
    for split in splits:
        greedy_prune(scorer, split, PruneConfig(keep_ratio=_KEEP_RATIO.value))
    measured = time.perf_counter() - start
    costs = [chain_cost(model.config, len(s.prompt), len(s.reasoning), len(s.answer), _KEEP_RATIO.value,
                        token_budget=4096, bytes_per_parameter=4) for s in splits]
    predicted_forwards = sum(c["token_forwards"] for c in costs)
    predicted = sum(c["flops"] for c in costs) / rate
    print(f"exact greedy, {len(splits)} demo chains to keep {_KEEP_RATIO.value}: measured {measured:.1f} s, "
          f"predicted {predicted:.1f} s at the dense rate (measured / predicted {measured / predicted:.2f}); "
          f"token-forwards run {scorer.forward_tokens} vs modelled {predicted_forwards} "
          f"(padding x{scorer.forward_tokens / predicted_forwards:.2f})")

    print("\n" + json.dumps({"cpu_flops_per_s": rate, "measured_s": measured, "predicted_s": predicted}))


def _predict():
    from jaxprune.checkpoints.resolve import load_config
    from jaxprune.cost_model import ACCELERATORS, chain_cost, chains_per_hour

    config = load_config("meta-llama/Llama-3.1-8B-Instruct")  # the published config.json, shipped
    modes = {"exact greedy": {}, "4 deletions per step": {"deletions_per_step": 4},
             "16 candidates a step (bound)": {"candidates_per_step": 16}, "full recomputation per candidate": {"shared_prefix": False}}
    print(f"\nLlama-3.1-8B pruner, bfloat16, chain P={_PROMPT} N={_REASONING} A={_ANSWER} to keep {_PAPER_KEEP}, "
          f"{_UTILISATION.value:.0%} of peak:\n")
    print("| mode | token-forwards | PFLOP per chain | " + " | ".join(
        f"{a.name}: chains/h (days for GSM8K train)" for a in ACCELERATORS.values()) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in ACCELERATORS) + " |")
    rows = {}
    for name, mode in modes.items():
        cost = chain_cost(config, _PROMPT, _REASONING, _ANSWER, _PAPER_KEEP, token_budget=65536, **mode)
        rates = {key: chains_per_hour(cost, accelerator, _UTILISATION.value)
                 for key, accelerator in ACCELERATORS.items()}
        roofline = {key: chains_per_hour(cost, accelerator) for key, accelerator in ACCELERATORS.items()}
        rows[name] = dict(cost, chains_per_hour=rates, roofline_chains_per_hour=roofline)
        print(f"| {name} | {cost['token_forwards']:,} | {cost['flops'] / 1e15:.1f} | " + " | ".join(
            f"{r:.1f} ({_GSM8K_TRAIN / r / 24:.1f})" for r in rates.values()) + " |")
    print("\nRoofline (bfloat16 peak, or weights + prefix-cache bytes over HBM bandwidth, whichever is slower): "
          "chains/h, and which limit binds\n")
    print("| mode | " + " | ".join(a.name for a in ACCELERATORS.values()) + " |")
    print("| --- | " + " | ".join("---" for _ in ACCELERATORS) + " |")
    for name, row in rows.items():
        bound = {key: "compute" if row["flops"] / a.peak_flops >= (row["weight_bytes"] + row["kv_bytes"]) /
                 a.bandwidth else "memory" for key, a in ACCELERATORS.items()}
        print(f"| {name} | " + " | ".join(f"{row['roofline_chains_per_hour'][key]:.0f} ({bound[key]})"
                                           for key in ACCELERATORS) + " |")
    print("\n" + json.dumps({"paper_scale": rows}))


if __name__ == "__main__":
    app.run(main)
