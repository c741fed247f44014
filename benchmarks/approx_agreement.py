"""Approximate pruning modes against exact greedy, on the committed exact references (never recomputed here).

    python benchmarks/approx_agreement.py [--mode=lazy:top_k=8,window=2 ... --timed_chains=2 --cache=/tmp/approx_agreement.jsonl]

Each mode prunes every chain of `benchmarks/data/exact_references.jsonl` (`benchmarks/exact_references.py`: 12
chains of 84-131 SmolLM2 reasoning tokens, exact greedy to keep 0.5; `--max_chains` takes the first N) to keep 0.5,
with SmolLM2-135M-Instruct in float32. Per mode: token-forwards (padding included) against exact's, summed over the chains; wall-time against
exact greedy rerun side by side in this run on the `--timed_chains` shortest chains (warm: each mode runs once on
them first to compile); the mean kept-set overlap with exact's kept set at keep 0.9 / 0.8 / 0.7 / 0.5 (and the
worst chain's at 0.5); the mean Spearman correlation of deletion ranks; and answer preservation at keep 0.7 (the
analyze CLI's measure: the pruner decodes from the kept reasoning and the answer's opening) next to exact's.
Results per (mode, chain) are appended to `--cache`, so a killed run resumes. Prints a markdown table.
"""

import os
import time

import numpy as np
from absl import app, flags, logging

from mode_spec import parse_mode  # benchmarks/, beside this file

_REFERENCES = flags.DEFINE_string("references", "benchmarks/data/exact_references.jsonl", "Exact references.")
_MODES = flags.DEFINE_multi_string("mode", [
    "approx", "approx:suffix_limit=32", "lazy"],
    "A mode, method[:setting=value,...] (settings of `jaxprune.pruning.methods`); repeat the flag.")
_TIMED_CHAINS = flags.DEFINE_integer("timed_chains", 1, "Shortest chains timed side by side against exact "
                                     "greedy (0: no timing, e.g. to fill the cache).")
_MAX_CHAINS = flags.DEFINE_integer("max_chains", None, "Compare on the first N references only (shortest first).")
_CACHE = flags.DEFINE_string("cache", "/tmp/approx_agreement.jsonl", "Per (mode, chain) results; reruns resume.")
_KEEP_RATIOS = (0.9, 0.8, 0.7, 0.5)
_PRESERVATION_KEEP = 0.7


def main(argv):
    del argv
    from jaxprune.analysis.preservation import answer_preservation
    from jaxprune.checkpoints import load_model
    from jaxprune.data.prompts import TokenSplit
    from jaxprune.data.records import JsonlAppender, read_jsonl
    from jaxprune.pruning.agreement import kept_overlap, rank_correlation
    from jaxprune.pruning.greedy import PruneConfig, greedy_prune
    from jaxprune.pruning.methods import make_method
    from jaxprune.pruning.scoring import Scorer, compiled_programs

    references = [record for _, record in read_jsonl(_REFERENCES.value)][: _MAX_CHAINS.value]
    for record in references:
        record["dataset"] = "math" if record["source"] == "champ" else "gsm8k"
    splits = [TokenSplit(tuple(r["prompt_token_ids"]), tuple(r["reasoning_token_ids"]), tuple(r["answer_token_ids"]))
              for r in references]
    model, tokenizer = load_model()
    config = PruneConfig(keep_ratio=0.5)
    timed = sorted(range(len(splits)), key=lambda i: len(splits[i].reasoning))[: _TIMED_CHAINS.value]

    def run(method, indices):
        scorer = Scorer(model)
        results = []
        for index in indices:
            before, begin = scorer.forward_tokens, time.perf_counter()
            trace = method.prune(scorer, splits[index], references[index], config)
            results.append({"order": trace.deletion_order, "token_forwards": scorer.forward_tokens - before,
                            "seconds": time.perf_counter() - begin})
        return results

    def timed_seconds(method):
        run(method, timed)  # compile this mode's shapes
        return sum(result["seconds"] for result in run(method, timed))

    exact_seconds = timed_seconds(make_method("greedy")) if timed else float("nan")
    cached = {}
    if os.path.exists(_CACHE.value):
        cached = {(r["mode"], r["chain"]): r for _, r in read_jsonl(_CACHE.value)}
    rows = []
    with JsonlAppender(_CACHE.value) as appender:
        for spec in _MODES.value:
            name, settings = parse_mode(spec)
            method = make_method(name, **settings)
            seconds = timed_seconds(method) if timed else float("nan")
            for index, record in enumerate(references):
                key = (spec, record["id"])
                if key not in cached:
                    result = run(method, [index])[0]
                    cached[key] = {"id": f"{spec}|{record['id']}", "mode": spec, "chain": record["id"], **result}
                    appender.append(cached[key])
                    logging.info("%s, %s: %d token-forwards, %.1f s", spec, record["id"], result["token_forwards"],
                                 result["seconds"])
            rows.append((spec, [cached[(spec, r["id"])] for r in references], seconds))

    def preservation(orders):
        records = [dict(r, deletion_order=order) for r, order in zip(references, orders)]
        result = answer_preservation(model, tokenizer, records, [_PRESERVATION_KEEP], max_new_tokens=48)
        return result[_PRESERVATION_KEEP]["preserved"]

    exact_forwards = sum(r["token_forwards"] for r in references)
    exact_preserved = preservation([r["deletion_order"] for r in references])
    n = len(references)
    print(f"{n} chains, reasoning tokens {sorted(len(s.reasoning) for s in splits)}; exact greedy to keep 0.5: "
          f"{exact_forwards:,} token-forwards; answer preserved at keep {_PRESERVATION_KEEP}: {exact_preserved}/{n}; "
          f"timed chains: {[references[i]['id'] for i in timed]}, exact {exact_seconds:.1f} s warm\n")
    print(f"compiled scoring programs over these chains and modes: {compiled_programs()}\n")
    print("| mode | token-forwards | fewer than exact | wall-time speed-up (timed chains) | Spearman | kept-set overlap "
          "0.9 / 0.8 / 0.7 / 0.5 | worst at 0.5 | answer preserved at 0.7 |")
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    print(f"| exact greedy | {exact_forwards:,} | 1.0x | {'1.00x' if timed else '-'} | 1.000 | 1 / 1 / 1 / 1 | 1.00 | {exact_preserved}/{n} |")
    for spec, results, seconds in rows:
        forwards = sum(r["token_forwards"] for r in results)
        lengths = [len(s.reasoning) for s in splits]
        overlaps = {k: [kept_overlap(r["order"], ref["deletion_order"], m, k)
                        for r, ref, m in zip(results, references, lengths)] for k in _KEEP_RATIOS}
        rho = np.mean([rank_correlation(r["order"], ref["deletion_order"], m)
                       for r, ref, m in zip(results, references, lengths)])
        preserved = preservation([r["order"] for r in results])
        speed_up = f"{exact_seconds / seconds:.2f}x" if timed else "-"
        print(f"| {spec} | {forwards:,} | {exact_forwards / forwards:.1f}x | {speed_up} | "
              f"{rho:.3f} | {' / '.join(f'{np.mean(overlaps[k]):.3f}' for k in _KEEP_RATIOS)} | "
              f"{min(overlaps[0.5]):.2f} | {preserved}/{n} |")


if __name__ == "__main__":
    app.run(main)
