"""Forward-pass throughput: our jitted Flax model against transformers + torch, same model, batch and CPU.

    python benchmarks/forward.py [--batch=4 --length=256 --repeats=5]

Both load the packaged SmolLM2-135M-Instruct GGUF (float32) and run a full causal forward (logits over the whole
vocabulary for every position). Prints tokens/s of each and their ratio.
"""

import os
import statistics
import time

from absl import app, flags

_BATCH = flags.DEFINE_integer("batch", 4, "Sequences per forward.")
_LENGTH = flags.DEFINE_integer("length", 256, "Tokens per sequence.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed forwards per framework (after one warm-up).")


def median_seconds(run, repeats):
    run()  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv):
    del argv
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from flax import nnx
    from transformers import AutoModelForCausalLM

    from jaxprune.checkpoints import load_gguf_model
    from jaxprune.checkpoints.resolve import packaged_model_path
    from jaxprune.models import causal_mask, forward, positions_from_keep

    path = packaged_model_path("SmolLM2-135M-Instruct")
    ids = np.random.RandomState(0).randint(100, 40000, (_BATCH.value, _LENGTH.value))
    tokens = ids.size

    ours = load_gguf_model(path)
    graphdef, params = nnx.split(ours)
    jax_forward = jax.jit(lambda params, ids, positions, mask: forward(graphdef, params, ids, positions, mask).logits)
    keep = jnp.ones(ids.shape, bool)
    jax_args = (params, jnp.asarray(ids), positions_from_keep(keep), causal_mask(keep))
    jax_seconds = median_seconds(lambda: jax_forward(*jax_args).block_until_ready(), _REPEATS.value)

    directory, name = os.path.split(path)
    reference = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32).eval()
    torch_ids = torch.tensor(ids)

    def torch_run():
        with torch.inference_mode():
            reference(torch_ids).logits

    torch_seconds = median_seconds(torch_run, _REPEATS.value)

    print(f"model=SmolLM2-135M-Instruct float32 batch={_BATCH.value} length={_LENGTH.value} "
          f"cpu_threads={torch.get_num_threads()} devices={jax.devices()[0].platform}")
    print(f"jaxprune (jax.jit)      {tokens / jax_seconds:10.0f} tokens/s  ({jax_seconds * 1e3:.0f} ms per forward)")
    print(f"transformers + torch    {tokens / torch_seconds:10.0f} tokens/s  ({torch_seconds * 1e3:.0f} ms per forward)")
    print(f"ratio jaxprune / torch  {torch_seconds / jax_seconds:10.2f}x")


if __name__ == "__main__":
    app.run(main)
