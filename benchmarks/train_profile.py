"""Where a training step's time goes on this machine, and what the backward-pass changes bought, side by side.

    python benchmarks/train_profile.py [--batch=8 --length=256 --repeats=3]

Times, for the packaged SmolLM2-135M-Instruct (float32) on one batch of random tokens, the jitted value-and-gradient
of: the training loss (the whole model), the decoder alone (no vocabulary head) and the decoder's forward alone; each
for the library as it is and with either change undone in this process only: projections as 3-D products
(`x @ kernel` on `[batch, seq, in]`) and attention through `jax.nn.dot_product_attention` (XLA's fused attention,
differentiated by autodiff). Also one `[batch * seq, 576] x [576, 1536]` product's rate. Seconds are the mean of
`--repeats` runs after a compiling one.
"""

import contextlib
import time

from absl import app, flags

_BATCH = flags.DEFINE_integer("batch", 8, "Sequences in the batch.")
_LENGTH = flags.DEFINE_integer("length", 256, "Tokens per sequence.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per measurement.")


@contextlib.contextmanager
def _undone(three_d_projections: bool, fused_attention: bool):
    """The library with the chosen changes undone (module attributes swapped back on exit)."""
    import jax

    from jaxprune.models import layers

    saved = layers.Linear.__call__, layers.folded_attention

    def three_d(self, x):
        y = x @ self.kernel[...]
        return y + self.bias[...] if self.bias is not None else y

    def fused(q, k, v, mask):  # k, v arrive heads-major; XLA's attention wants [batch, keys, kv_heads, head_dim]
        return jax.nn.dot_product_attention(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), mask=mask[:, None])

    if three_d_projections:
        layers.Linear.__call__ = three_d
    if fused_attention:
        layers.folded_attention = fused
    try:
        yield
    finally:
        layers.Linear.__call__, layers.folded_attention = saved


def _seconds(function, *args) -> float:
    import jax

    jax.block_until_ready(function(*args))
    start = time.perf_counter()
    for _ in range(_REPEATS.value):
        jax.block_until_ready(function(*args))
    return (time.perf_counter() - start) / _REPEATS.value


def main(argv):
    del argv
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from jaxprune.checkpoints import load_model
    from jaxprune.distill.train import masked_loss
    from jaxprune.models import causal_mask, positions_from_keep

    model, _ = load_model("packaged:SmolLM2-135M-Instruct")
    graphdef, params = nnx.split(model)
    shape = (_BATCH.value, _LENGTH.value)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, model.config.vocab_size, shape), jnp.int32)
    valid = jnp.ones(shape, bool)

    def loss(p):
        return masked_loss(nnx.merge(graphdef, p), tokens, valid, valid)

    def decoder(p):
        hidden, _, _ = nnx.merge(graphdef, p).hidden_states(tokens, positions_from_keep(valid), causal_mask(valid))
        return jnp.mean(hidden ** 2)

    variants = {"library": (False, False), "3-D projections": (True, False), "XLA fused attention": (False, True),
                "both undone": (True, True)}
    print(f"SmolLM2-135M, {shape[0]} x {shape[1]} tokens, float32; seconds per call (mean of {_REPEATS.value})")
    print("| variant | loss and gradients | decoder, forward + backward | decoder, forward |")
    print("| --- | ---: | ---: | ---: |")
    for name, undo in variants.items():
        with _undone(*undo):
            timings = [_seconds(jax.jit(jax.value_and_grad(loss)), params),
                       _seconds(jax.jit(jax.value_and_grad(decoder)), params),
                       _seconds(jax.jit(decoder), params)]
        print(f"| {name} | " + " | ".join(f"{t:.2f}" for t in timings) + " |")
    a = jnp.asarray(np.random.default_rng(1).random((shape[0] * shape[1], 576)), jnp.float32)
    b = jnp.asarray(np.random.default_rng(2).random((576, 1536)), jnp.float32)
    seconds = _seconds(jax.jit(jnp.matmul), a, b)
    print(f"[{a.shape[0]}, 576] x [576, 1536] product: {2 * a.shape[0] * 576 * 1536 / seconds / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    app.run(main)
