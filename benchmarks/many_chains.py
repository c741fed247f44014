"""Many chains per scoring call against one chain at a time: chains per hour on a dataset of short chains.

    python benchmarks/many_chains.py [--num_chains=50 --method=greedy --keep_ratio=0.9 --chains_per_call=1,8]

Chains: the first `--num_chains` GSM8K test problems whose worked solution is 80-160 characters, with the paper's
JSON-answer system prompt (as `benchmarks/prune_speed.py`), SmolLM2-135M-Instruct float32. Each setting of
`--chains_per_call` prunes all of them with `--method` through `ChainPruner.prune_many` (what `prune
--chains_per_call` runs), side by side in this run; each first prunes the first `--warmup` chains untimed so that
its kernel shapes are compiled (with `JAX_COMPILATION_CACHE_DIR` set, as the pipeline sets it, a rerun loads what
remains from disk). Prints a markdown table (wall time, chains per hour, token-forwards with padding,
speed-up against the first setting) and checks that every setting gives the same deletion orders.
"""

import time

from absl import app, flags

from gsm8k_solutions import gsm8k_chains  # this folder is on the path when run as a script

_GSM8K = flags.DEFINE_string("gsm8k", "experiments/data/gsm8k/test.jsonl", "GSM8K file.")
_NUM_CHAINS = flags.DEFINE_integer("num_chains", 50, "How many chains to prune.")
_METHOD = flags.DEFINE_string("method", "greedy", "Pruning method (registered name, default settings).")
_KEEP_RATIO = flags.DEFINE_float("keep_ratio", 0.9, "Keep ratio.")
_SETTINGS = flags.DEFINE_list("chains_per_call", ["1", "8"], "Settings compared; the first is the baseline.")
_WARMUP = flags.DEFINE_integer("warmup", 8, "Chains pruned untimed first by each setting (compiles its shapes).")


def main(argv):
    del argv
    from jaxprune.checkpoints import load_model
    from jaxprune.data.prompts import split_chain
    from jaxprune.pruning.chain_pruner import ChainPruner
    from jaxprune.pruning.greedy import PruneConfig
    from jaxprune.pruning.scoring import compiled_programs

    model, tokenizer = load_model()
    records = gsm8k_chains(_GSM8K.value, _NUM_CHAINS.value)
    items = [(f"chain {i}", {"id": str(i), **r}, split_chain(tokenizer, r["question"], r["reasoning"], r["answer"],
                                                            r.get("system"))) for i, r in enumerate(records)]
    lengths = [len(split.reasoning) for _, _, split in items]
    print(f"model=SmolLM2-135M-Instruct float32, method={_METHOD.value}, keep_ratio={_KEEP_RATIO.value}, "
          f"{len(items)} GSM8K chains of {min(lengths)}-{max(lengths)} reasoning tokens (mean "
          f"{sum(lengths) / len(lengths):.0f}), prompt+answer mean "
          f"{sum(len(s.prompt) + len(s.answer) for _, _, s in items) / len(items):.0f} tokens")
    config = PruneConfig(keep_ratio=_KEEP_RATIO.value)
    rows, orders = [], {}
    for setting in map(int, _SETTINGS.value):
        pruner = ChainPruner(model, tokenizer, _METHOD.value)
        list(pruner.prune_many(items[: _WARMUP.value], config, chains_per_call=setting))
        before, begin = pruner.scorer.forward_tokens, time.perf_counter()
        pruned = dict(pruner.prune_many(items, config, chains_per_call=setting))
        seconds = time.perf_counter() - begin
        orders[setting] = [pruned[where]["deletion_order"] for where, _, _ in items]
        rows.append((setting, seconds, pruner.scorer.forward_tokens - before))
        print(f"chains_per_call={setting}: {seconds:.1f} s; compiled programs so far {compiled_programs()}",
              flush=True)
    baseline = rows[0][1]
    print("\n| chains per call | wall s | chains / hour | token-forwards | speed-up |")
    print("|---:|---:|---:|---:|---:|")
    for setting, seconds, spent in rows:
        print(f"| {setting} | {seconds:.1f} | {len(items) * 3600 / seconds:.0f} | {spent} | "
              f"{baseline / seconds:.2f}x |")
    same = [orders[setting] == orders[rows[0][0]] for setting, _, _ in rows]
    print(f"\nsame deletion orders as chains_per_call={rows[0][0]}: {all(same)}")
    assert all(same), "a setting changed a deletion order"


if __name__ == "__main__":
    app.run(main)
