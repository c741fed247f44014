"""A long chain pruned end to end by the documented command: wall time, peak memory, work, compiled programs.

    python benchmarks/long_chain.py [--flagfile_path=experiments/long_chain.flags]
    python benchmarks/long_chain.py --write_chain   # (re)writes experiments/data/long_chain.jsonl

Runs `python -m jaxprune.experiments.prune --flagfile=...` in a subprocess (into a temporary output, so it always
prunes from scratch) and reports its wall time, its peak resident memory, the token-forwards the output record
says it ran against exact greedy's (`jaxprune.cost_model`: exact is not run at this length), the compiled scoring
programs the CLI logs, and how the work splits between base passes and candidate suffixes.
"""

import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

from absl import app, flags

_FLAGFILE = flags.DEFINE_string("flagfile_path", "experiments/long_chain.flags", "The prune flagfile to run.")
_WRITE_CHAIN = flags.DEFINE_bool("write_chain", False, "Write the long chain file instead of pruning it.")
_PARTS = flags.DEFINE_integer("parts", 19, "Generated problems in the worksheet (--write_chain).")
CHAIN_PATH = "experiments/data/long_chain.jsonl"


def write_chain(parts):
    from jaxprune.data.prompts import GSM8K_SYSTEM_PROMPT
    from jaxprune.data.records import write_jsonl_atomic
    from jaxprune.data.synthetic import generate_problems, multi_part_problem

    chain = multi_part_problem(generate_problems(parts, seed=2026))
    write_jsonl_atomic(CHAIN_PATH, [{"id": f"worksheet-{parts}-parts", "question": chain["question"],
                                     "reasoning": chain["reasoning"], "answer": json.dumps({"answer": chain["gold"]}),
                                     "system": GSM8K_SYSTEM_PROMPT, "dataset": "gsm8k"}])
    print(f"wrote {CHAIN_PATH}")


def main(argv):
    del argv
    if _WRITE_CHAIN.value:
        return write_chain(_PARTS.value)
    from jaxprune import cost_model

    with tempfile.TemporaryDirectory() as work:
        output = os.path.join(work, "pruned.jsonl")
        command = [sys.executable, "-m", "jaxprune.experiments.prune", f"--flagfile={_FLAGFILE.value}",
                   f"--output={output}", f"--html={os.path.join(work, 'pruned.html')}"]
        begin = time.perf_counter()
        process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        log = []
        for chunk in iter(lambda: process.stderr.read(200), ""):  # progress shown as it comes, kept for the counts
            sys.stderr.write(chunk)
            log.append(chunk)
        seconds = time.perf_counter() - begin
        if process.wait():
            raise SystemExit(f"{' '.join(command)} failed:\n{''.join(log)[-3000:]}")
        record = json.loads(open(output).readline())
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux -> GiB
    work = re.search(r"token-forwards: (\d+) in base passes, (\d+) in candidate suffixes; compiled scoring "
                     r"programs: (\{.*\})", "".join(log))
    prompt, n, answer = (len(record[f"{part}_token_ids"]) for part in ("prompt", "reasoning", "answer"))
    exact = cost_model.chain_token_forwards(prompt, n, answer, record["keep_ratio"])
    print(f"command: python -m jaxprune.experiments.prune --flagfile={_FLAGFILE.value}")
    print(f"chain: prompt {prompt}, reasoning {n}, answer {answer} tokens; mode {record['pruning_mode']}")
    print(f"deletions: {len(record['deletion_order'])} (keep {record['achieved_keep_ratio']:.3f}); "
          f"joint log-likelihood {record['original_log_likelihoods']['joint']:.1f} -> "
          f"{record['step_log_likelihoods']['joint'][-1]:.1f}")
    print(f"wall time: {seconds / 60:.1f} min (model load and compilation included); peak memory {peak:.2f} GiB")
    print(f"token-forwards: {record['token_forwards']:,} run; exact greedy (cost model) {exact:,}: "
          f"{exact / record['token_forwards']:.0f}x fewer; {record['token_forwards'] / seconds:.0f} per second")
    if work:
        base, suffixes, programs = int(work.group(1)), int(work.group(2)), work.group(3)
        print(f"token-forwards in base passes {base:,} ({base / (base + suffixes):.0%}), in candidate suffixes "
              f"{suffixes:,}; compiled scoring programs: {programs}")


if __name__ == "__main__":
    app.run(main)
