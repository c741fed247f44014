"""Approximate pruning modes against exact greedy, on the committed exact references (never recomputed here).

    python benchmarks/approx_agreement.py [--mode=approx --mode=lazy:top_k=8,window=2 ... --timed_chains=1
                                           --bf16_references=benchmarks/data/bf16_references.jsonl
                                           --cache=/tmp/approx_agreement.jsonl]

Each mode prunes every chain of `benchmarks/data/exact_references.jsonl` (`benchmarks/exact_references.py`: 12
chains of 84-131 SmolLM2 reasoning tokens to keep 0.5, 3 of 180-200 to keep 0.7; `--max_chains` takes the first N)
to its reference's keep ratio, with SmolLM2-135M-Instruct in float32. Per mode, over all chains and then by length
(under 140 reasoning tokens; 180-260): token-forwards against exact's (summed), wall time against exact greedy rerun
side by side on the `--timed_chains` shortest chains (warm: each mode runs once on them first to compile), the mean
and worst kept-set overlap with exact's kept set at keep 0.9 / 0.8 / 0.7 / 0.5 (0.5 on the chains pruned that far),
the mean Spearman correlation of deletion ranks, the share of steps certified (modes that certify), and answer
preservation at keep 0.7 (the analyze CLI's measure: the pruner decodes from the kept reasoning and the answer's
opening), paired with exact's chain by chain. `--bf16_references` (`exact_references.py --dtype=bfloat16`) adds
bfloat16 exact greedy as a row, on the chains it holds (and a table of every mode on exactly those chains): the
yardstick. Results per (mode, chain) are appended to
`--cache`, so a killed run resumes. Prints markdown tables.
"""

import os
import time

import numpy as np
from absl import app, flags, logging

from mode_spec import parse_mode  # benchmarks/, beside this file

_REFERENCES = flags.DEFINE_string("references", "benchmarks/data/exact_references.jsonl", "Exact references.")
_BF16 = flags.DEFINE_string("bf16_references", None, "bfloat16 exact greedy of some of the same chains (optional).")
_MODES = flags.DEFINE_multi_string("mode", ["approx", "lazy"],
                                   "A mode, method[:setting=value,...] (settings of `jaxprune.pruning.methods`); "
                                   "repeat the flag.")
_TIMED_CHAINS = flags.DEFINE_integer("timed_chains", 1, "Shortest chains timed side by side against exact "
                                     "greedy (0: no timing, e.g. to fill the cache).")
_MAX_CHAINS = flags.DEFINE_integer("max_chains", None, "Compare on the first N references only (shortest first).")
_CACHE = flags.DEFINE_string("cache", "/tmp/approx_agreement.jsonl", "Per (mode, chain) results; reruns resume.")
_KEEP_RATIOS = (0.9, 0.8, 0.7, 0.5)
_PRESERVATION_KEEP = 0.7
GROUPS = (("all", 0, 10**9), ("under 140 tokens", 0, 139), ("180-260 tokens", 180, 260))


def main(argv):
    del argv
    from jaxprune.checkpoints import load_model
    from jaxprune.data.prompts import TokenSplit
    from jaxprune.data.records import JsonlAppender, read_jsonl
    from jaxprune.pruning.greedy import PruneConfig
    from jaxprune.pruning.methods import make_method
    from jaxprune.pruning.scoring import Scorer, compiled_programs

    references = [record for _, record in read_jsonl(_REFERENCES.value)][: _MAX_CHAINS.value]
    for record in references:
        record["dataset"] = "math" if record["source"] == "champ" else "gsm8k"
    splits = {r["id"]: TokenSplit(tuple(r["prompt_token_ids"]), tuple(r["reasoning_token_ids"]),
                                  tuple(r["answer_token_ids"])) for r in references}
    model, tokenizer = load_model()
    timed = sorted(references, key=lambda r: len(r["reasoning_token_ids"]))[: _TIMED_CHAINS.value]

    def run(method, records):
        scorer = Scorer(model)
        results = []
        for record in records:
            before, begin = scorer.forward_tokens, time.perf_counter()
            trace = method.prune(scorer, splits[record["id"]], record, PruneConfig(keep_ratio=record["keep_ratio"]))
            results.append({"order": trace.deletion_order, "token_forwards": scorer.forward_tokens - before,
                            "seconds": time.perf_counter() - begin, "details": trace.details})
        return results

    def timed_seconds(method):
        run(method, timed)  # compile this mode's shapes
        return sum(result["seconds"] for result in run(method, timed))

    exact_seconds = timed_seconds(make_method("greedy")) if timed else float("nan")
    cached = {}
    if os.path.exists(_CACHE.value):
        cached = {(r["mode"], r["chain"]): r for _, r in read_jsonl(_CACHE.value)}
    rows = [("exact greedy", {r["id"]: {"order": r["deletion_order"], "token_forwards": r["token_forwards"]}
                              for r in references}, exact_seconds)]
    if _BF16.value:
        rows.append(("bfloat16 exact greedy", {r["id"]: {"order": r["deletion_order"],
                                                         "token_forwards": r["token_forwards"]}
                                               for _, r in read_jsonl(_BF16.value) if r["id"] in splits}, None))
    with JsonlAppender(_CACHE.value) as appender:
        for spec in _MODES.value:
            name, settings = parse_mode(spec)
            method = make_method(name, **settings)
            seconds = timed_seconds(method) if timed else float("nan")
            for record in references:
                key = (spec, record["id"])
                if key not in cached:
                    result = run(method, [record])[0]
                    cached[key] = {"id": f"{spec}|{record['id']}", "mode": spec, "chain": record["id"], **result}
                    appender.append(cached[key])
                    logging.info("%s, %s: %d token-forwards, %.1f s", spec, record["id"], result["token_forwards"],
                                 result["seconds"])
            rows.append((spec, {r["id"]: cached[(spec, r["id"])] for r in references}, seconds))

    preserved = {label: _preserved(model, tokenizer, references, results) for label, results, _ in rows}
    lengths = sorted(len(s.reasoning) for s in splits.values())
    print(f"{len(references)} chains, reasoning tokens {lengths}; timed chains: {[r['id'] for r in timed]}, "
          f"exact {exact_seconds:.1f} s warm\n")
    print(f"compiled scoring programs over these chains and modes: {compiled_programs()}\n")
    groups = [(group, [r for r in references if low <= len(r["reasoning_token_ids"]) <= high])
              for group, low, high in GROUPS]
    if _BF16.value:  # every mode on exactly the chains the yardstick holds: the paired comparison with it
        with_bf16 = [r for r in references if r["id"] in rows[1][1]]
        groups.append((f"the {len(with_bf16)} chains with a bfloat16 reference", with_bf16))
    for group, chosen in groups:
        if chosen:
            print(_table(group, chosen, rows, preserved, exact_seconds, timed))


def _preserved(model, tokenizer, references, results):
    """Per chain id: whether the pruner still reaches the teacher's answer at keep 0.7 from this mode's order."""
    from jaxprune.analysis.preservation import answer_preservation

    out = {}
    for record in references:
        if record["id"] in results:
            pruned = dict(record, deletion_order=results[record["id"]]["order"])
            result = answer_preservation(model, tokenizer, [pruned], [_PRESERVATION_KEEP], max_new_tokens=48)
            out[record["id"]] = bool(result[_PRESERVATION_KEEP]["preserved"])
    return out


def _table(group, chosen, rows, preserved, exact_seconds, timed):
    from jaxprune.pruning.agreement import kept_overlap, rank_correlation

    lines = [f"### {group}: {len(chosen)} chains\n",
             "| mode | chains | token-forwards | fewer than exact | wall-time speed-up (timed) | Spearman | kept-set "
             "overlap 0.9 / 0.8 / 0.7 / 0.5, mean | worst at 0.7 / 0.5 | steps certified | answer kept at 0.7: "
             "mode / exact / both |", "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | --- |"]
    for label, results, seconds in rows:
        records = [r for r in chosen if r["id"] in results]
        if not records:
            continue
        forwards = sum(results[r["id"]]["token_forwards"] for r in records)
        exact_forwards = sum(r["token_forwards"] for r in records)
        overlaps = {}
        for keep in _KEEP_RATIOS:
            overlaps[keep] = [kept_overlap(results[r["id"]]["order"], r["deletion_order"],
                                           len(r["reasoning_token_ids"]), keep)
                              for r in records if keep >= r["keep_ratio"] - 1e-9]
        rho = np.mean([rank_correlation(results[r["id"]]["order"], r["deletion_order"], len(r["reasoning_token_ids"]))
                       for r in records])
        details = [results[r["id"]].get("details") or {} for r in records]
        certified = (f"{sum(d['certified_steps'] for d in details) / sum(d['steps'] for d in details):.0%}"
                     if all("steps" in d for d in details) else "-")
        mine = [preserved[label][r["id"]] for r in records]
        exact = [preserved["exact greedy"][r["id"]] for r in records]
        both = sum(a and b for a, b in zip(mine, exact))
        in_group = {r["id"] for r in records}
        speed_up = ("-" if seconds is None or not timed or any(t["id"] not in in_group for t in timed)
                    else f"{exact_seconds / seconds:.2f}x")  # the timed chains are this group's
        mean = " / ".join(f"{np.mean(overlaps[k]):.3f}" if overlaps[k] else "-" for k in _KEEP_RATIOS)
        worst = " / ".join(f"{min(overlaps[k]):.2f}" if overlaps[k] else "-" for k in (0.7, 0.5))
        lines.append(f"| {label} | {len(records)} | {forwards:,} | {exact_forwards / forwards:.1f}x | {speed_up} | "
                     f"{rho:.3f} | {mean} | {worst} | {certified} | {sum(mine)} / {sum(exact)} / {both} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    app.run(main)
