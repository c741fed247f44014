"""Training throughput and peak memory: our distillation loop against a transformers + torch loop, side by side.

    python benchmarks/train_speed.py [--batch=8 --length=256 --steps=8]

Both fully fine-tune the packaged SmolLM2-135M-Instruct GGUF (float32) with AdamW on the same batches (`--batch` chat
examples of `--length` tokens: real SFT chains from experiments/data/demo_chains.jsonl, padded; loss on the assistant
turn). Each side runs in its own fresh process so that its peak resident memory (model load included) is its own.
Tokens/s counts padded tokens per optimizer step over the steps after the first (compilation for us, allocator warm-up
for torch) and before the last (our final step also writes a checkpoint). torch uses every CPU thread.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from absl import app, flags

_BATCH = flags.DEFINE_integer("batch", 8, "Examples per optimizer step.")
_LENGTH = flags.DEFINE_integer("length", 256, "Tokens per example (padded).")
_STEPS = flags.DEFINE_integer("steps", 8, "Optimizer steps (>= 3: the first and last are not timed).")
_SIDE = flags.DEFINE_enum("side", None, ("jax", "torch"), "Internal: run one side and print its JSON result.")
_CHAINS = "experiments/data/demo_chains.jsonl"


def _examples():
    from jaxprune.checkpoints import load_tokenizer
    from jaxprune.data.records import read_chains
    from jaxprune.distill.examples import training_example

    tokenizer = load_tokenizer("packaged:SmolLM2-135M-Instruct")
    chains = [record for _, record in read_chains(_CHAINS)]
    return [training_example(tokenizer, record, record["reasoning"]) for record in chains]


def _timed_rate(stamps):
    """Padded tokens/s over the steps after the first and before the last."""
    middle = stamps[-2] - stamps[1]
    return (len(stamps) - 3) * _BATCH.value * _LENGTH.value / middle


def _run_jax():
    from jaxprune.checkpoints import load_model
    from jaxprune.distill.train import TrainConfig, train

    model, _ = load_model("packaged:SmolLM2-135M-Instruct")
    stamps = [time.perf_counter()]
    config = TrainConfig(steps=_STEPS.value, batch_size=_BATCH.value, max_length=_LENGTH.value, learning_rate=1e-5,
                         checkpoint_every=10 ** 6)
    losses = []
    with tempfile.TemporaryDirectory() as directory:
        train(model, _examples(), config, directory,
              on_step=lambda step, loss: (stamps.append(time.perf_counter()), losses.append(loss)))
    return {"tokens_per_s": _timed_rate(stamps), "first_loss": losses[0]}


def _run_torch():
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from jaxprune.checkpoints.resolve import packaged_model_path
    from jaxprune.distill.train import example_indices, make_batch

    directory, name = os.path.split(packaged_model_path("SmolLM2-135M-Instruct"))
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
    examples = _examples()
    stamps, losses = [time.perf_counter()], []
    for step in range(_STEPS.value):
        indices = example_indices(step * _BATCH.value, _BATCH.value, len(examples), seed=0)
        tokens, loss_mask, valid = (torch.from_numpy(np.asarray(x)) for x in
                                    make_batch(examples, indices, _LENGTH.value))
        labels = torch.where(loss_mask, tokens.long(), torch.tensor(-100))
        loss = model(input_ids=tokens.long(), attention_mask=valid.long(), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
        stamps.append(time.perf_counter())
    return {"tokens_per_s": _timed_rate(stamps), "first_loss": losses[0]}


def main(argv):
    del argv
    if _STEPS.value < 3:
        raise app.UsageError("--steps must be >= 3")
    if _SIDE.value:
        result = _run_jax() if _SIDE.value == "jax" else _run_torch()
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(result))
        return
    results = {}
    for side in ("jax", "torch"):
        flags_now = [f"--batch={_BATCH.value}", f"--length={_LENGTH.value}", f"--steps={_STEPS.value}",
                     f"--side={side}"]
        out = subprocess.run([sys.executable, __file__, *flags_now], capture_output=True, text=True, check=True)
        results[side] = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
    ours, theirs = results["jax"], results["torch"]
    print(f"SmolLM2-135M full fine-tuning, batch {_BATCH.value} x {_LENGTH.value} tokens, AdamW, {_STEPS.value} steps")
    print(f"  first-step loss: jaxprune {ours['first_loss']:.4f}, torch {theirs['first_loss']:.4f}")
    print(f"  tokens/s: jaxprune {ours['tokens_per_s']:.0f}, torch {theirs['tokens_per_s']:.0f}, "
          f"ratio {ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x")
    print(f"  peak memory: jaxprune {ours['peak_rss_mib']:.0f} MiB, torch {theirs['peak_rss_mib']:.0f} MiB, "
          f"ratio {ours['peak_rss_mib'] / theirs['peak_rss_mib']:.2f}x")


if __name__ == "__main__":
    app.run(main)
