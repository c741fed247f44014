"""Student SFT: the loss against a naive log-softmax reference, learning, the data order, and stop / resume;
rematerialisation; the state's shardings and an ahead-of-time compile of the step on abstract parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxprune.distill.examples import Example
from jaxprune.distill.train import (TrainConfig, TrainState, example_indices, init_train_state, make_batch,
                                   masked_loss, train, train_state_shardings, train_step)
from jaxprune.models import Llama, ModelConfig, causal_mask, positions_from_keep

CONFIG = ModelConfig(model_type="llama", vocab_size=50, hidden_size=32, intermediate_size=64, num_layers=2,
                     num_heads=4, num_kv_heads=2, head_dim=8)


def examples(count=6, seed=0):
    """Prompts of random tokens; the assistant turn repeats a fixed pattern a model can learn."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        prompt = rng.integers(3, 50, rng.integers(3, 8))
        answer = np.asarray([7, 8, 9, 10, 11, 2])
        out.append(Example(np.concatenate([prompt, answer]).astype(np.int32),
                           np.concatenate([np.zeros(len(prompt), bool), np.ones(len(answer), bool)])))
    return out


def test_loss_is_the_mean_nll_of_assistant_tokens_only():
    model = Llama(CONFIG, rngs=nnx.Rngs(0))
    data = examples()
    tokens, loss_mask, valid = make_batch(data, np.arange(4), max_length=16)
    reference = []
    for row in range(4):
        example = data[row]
        ids = jnp.asarray(example.tokens)[None]
        keep = jnp.ones(ids.shape, bool)
        logits = model(ids, positions_from_keep(keep), causal_mask(keep)).logits[0]
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        reference += [float(log_probs[i - 1, example.tokens[i]]) for i in range(1, len(example.tokens))
                      if example.loss_mask[i]]
    loss = masked_loss(model, *map(jnp.asarray, (tokens, loss_mask, valid)))
    assert float(loss) == pytest.approx(-np.mean(reference), rel=1e-5)


def test_training_lowers_the_loss(tmp_path):
    losses = []
    train(Llama(CONFIG, rngs=nnx.Rngs(1)), examples(), TrainConfig(steps=30, batch_size=4, max_length=16,
                                                                  learning_rate=3e-3, warmup_steps=3),
          str(tmp_path / "ckpt"), on_step=lambda step, loss: losses.append(loss))
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3])


def test_data_order_is_seeded_epochs_of_permutations():
    first = example_indices(0, 12, 6, seed=3)
    assert sorted(first[:6]) == list(range(6)) and sorted(first[6:]) == list(range(6))
    assert list(example_indices(4, 5, 6, seed=3)) == list(first[4:9])
    assert list(first) != list(example_indices(0, 12, 6, seed=4))


class Crash(Exception):
    pass


def crash_at(step_to_crash):
    def on_step(step, loss):
        if step == step_to_crash:
            raise Crash
    return on_step


def test_a_run_that_crashes_resumes_to_the_parameters_of_an_uninterrupted_run(tmp_path):
    config = TrainConfig(steps=8, batch_size=3, max_length=16, learning_rate=1e-2, warmup_steps=2, accumulation=2,
                         checkpoint_every=2)
    straight = train(Llama(CONFIG, rngs=nnx.Rngs(2)), examples(), config, str(tmp_path / "straight"))
    with pytest.raises(Crash):  # dies after step 5, maybe while step 4's checkpoint is still being written
        train(Llama(CONFIG, rngs=nnx.Rngs(2)), examples(), config, str(tmp_path / "resumed"), on_step=crash_at(5))
    steps = []
    resumed = train(Llama(CONFIG, rngs=nnx.Rngs(9)), examples(), config, str(tmp_path / "resumed"),
                    on_step=lambda step, loss: steps.append(step))  # other initial weights: all from the checkpoint
    assert steps in ([3, 4, 5, 6, 7, 8], [5, 6, 7, 8])  # from the newest complete checkpoint, step 2 or 4
    for a, b in zip(jax.tree.leaves(nnx.state(straight)), jax.tree.leaves(nnx.state(resumed))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)


def test_lora_trains_low_rank_deltas_on_the_targets_only(tmp_path):
    base = Llama(CONFIG, rngs=nnx.Rngs(3))
    before = {path: np.asarray(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.state(base))[0]}
    losses = []
    config = TrainConfig(steps=25, batch_size=4, max_length=16, learning_rate=5e-2, lora_rank=2, lora_alpha=4.0,
                         lora_targets=("q_proj", "v_proj"))
    student = train(base, examples(), config, str(tmp_path / "lora"), on_step=lambda s, loss: losses.append(loss))
    assert np.mean(losses[-5:]) < np.mean(losses[:3]) - 0.1  # it learns (slowly: attention adapters only)
    changed = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.state(student))[0]:
        delta = np.asarray(leaf) - before[path]
        name = jax.tree_util.keystr(path)
        if "q_proj" in name or "v_proj" in name:
            assert np.linalg.matrix_rank(delta, tol=1e-6) == 2  # the merged weight is base + a rank-2 update
            changed += 1
        else:
            assert not delta.any(), name  # frozen
    assert changed == 2 * CONFIG.num_layers


@pytest.mark.parametrize("lora_rank", [0, 2])
def test_sharded_training_on_eight_devices_equals_one_device(tmp_path, lora_rank):
    from jaxprune.sharding import make_mesh

    config = TrainConfig(steps=4, batch_size=4, max_length=16, learning_rate=1e-3, lora_rank=lora_rank)
    single = train(Llama(CONFIG, rngs=nnx.Rngs(4)), examples(), config, str(tmp_path / "one"))
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    sharded = train(Llama(CONFIG, rngs=nnx.Rngs(4)), examples(), config, str(tmp_path / "eight"), mesh=mesh)
    kernel = sharded.layers[0].mlp.up_proj.kernel[...]
    assert len(kernel.sharding.device_set) == 8  # really spread out, not replicated on one device
    for a, b in zip(jax.tree.leaves(nnx.state(single)), jax.tree.leaves(nnx.state(sharded))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5)


def test_a_batch_that_does_not_split_over_the_mesh_is_refused(tmp_path):
    from jaxprune.sharding import make_mesh

    with pytest.raises(ValueError, match="batch_size=6 does not split evenly over the mesh's 4 batch shards"):
        train(Llama(CONFIG, rngs=nnx.Rngs(0)), examples(), TrainConfig(steps=1, batch_size=6, max_length=16),
              str(tmp_path / "x"), mesh=make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))


def test_bfloat16_compute_trains_float32_master_weights(tmp_path):
    """bfloat16 passes give a loss near, but not equal to, float32's; the weights the optimizer keeps stay float32;
    and the run still learns."""
    runs = {}
    for dtype in ("float32", "bfloat16"):
        losses = []
        trained = train(Llama(CONFIG, rngs=nnx.Rngs(1)), examples(),
                        TrainConfig(steps=30, batch_size=4, max_length=16, learning_rate=3e-3, warmup_steps=3,
                                    compute_dtype=dtype),
                        str(tmp_path / dtype), on_step=lambda step, loss: losses.append(loss))
        runs[dtype] = losses
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(nnx.state(trained, nnx.Param)))
    assert runs["bfloat16"][0] != runs["float32"][0]
    assert runs["bfloat16"][0] == pytest.approx(runs["float32"][0], rel=2e-2)
    assert np.mean(runs["bfloat16"][-5:]) < 0.5 * np.mean(runs["bfloat16"][:3])


def primitive_names(jaxpr) -> set[str]:
    """Every primitive of `jaxpr`, nested jaxprs (jit, scan, remat) included."""
    from jax.extend import core

    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, (core.ClosedJaxpr, core.Jaxpr)):
                    names |= primitive_names(getattr(sub, "jaxpr", sub))
    return names


def test_remat_policies_give_the_same_loss_and_gradients_and_really_rematerialise():
    model = Llama(CONFIG, rngs=nnx.Rngs(5))
    graphdef, params = nnx.split(model)
    batch = list(map(jnp.asarray, make_batch(examples(), np.arange(4), max_length=16)))

    def loss_and_grads(remat):
        return jax.value_and_grad(lambda p: masked_loss(nnx.merge(graphdef, p), *batch, remat=remat))(params)

    def step_primitives(remat):
        config = TrainConfig(steps=1, batch_size=4, max_length=16, remat=remat)
        state, optimizer = init_train_state(params, config)
        jaxpr = jax.make_jaxpr(lambda s: train_step(graphdef, *s, *batch, optimizer=optimizer, lora_scale=0.0,
                                                    compute_dtype="float32", remat=remat))(state)
        return {name for name in primitive_names(jaxpr.jaxpr) if "remat" in name or "checkpoint" in name}

    loss, grads = loss_and_grads("none")
    assert not step_primitives("none")
    for remat in ("full", "dots"):
        remat_loss, remat_grads = loss_and_grads(remat)
        assert float(remat_loss) == pytest.approx(float(loss), abs=1e-5)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(remat_grads)):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-5)
        assert step_primitives(remat), remat  # the step's jaxpr holds a checkpoint (remat) primitive
    with pytest.raises(ValueError, match="remat must be one of none, full, dots"):
        TrainConfig(steps=1, remat="some")


def test_adam_moments_of_a_full_fine_tune_are_sharded_like_their_parameters():
    from jax.sharding import PartitionSpec

    from jaxprune.sharding import make_mesh

    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    _, params = nnx.split(Llama(CONFIG, rngs=nnx.Rngs(0)))
    config = TrainConfig(steps=2, accumulation=2)  # MultiSteps: accumulated gradients mirror the parameters too
    state, _ = init_train_state(params, config)
    shardings = train_state_shardings(state, mesh)
    assert jax.tree.structure(shardings) == jax.tree.structure(state)
    placed = jax.device_put(state, shardings)
    param_specs = [leaf.sharding.spec for leaf in jax.tree.leaves(placed.trainable)]
    assert PartitionSpec("tensor", "fsdp") in param_specs  # the embedding: really split, on two axes
    inner = placed.opt_state.inner_opt_state[0]  # adamw's ScaleByAdamState
    for mirror in (inner.mu, inner.nu, placed.opt_state.acc_grads):
        assert [leaf.sharding.spec for leaf in jax.tree.leaves(mirror)] == param_specs
    assert inner.count.sharding.spec == PartitionSpec() and placed.opt_state.mini_step.sharding.spec == PartitionSpec()


@pytest.mark.parametrize("lora_rank", [0, 2])
def test_the_step_compiles_ahead_of_time_on_abstract_sharded_parameters(lora_rank):
    """The compile check a large run makes before loading anything: abstract parameters (nothing allocated), the
    state's shardings on an 8-device mesh, and `train_step` lowered and compiled with remat."""
    from jaxprune.sharding import batch_sharding, make_mesh

    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    config = TrainConfig(steps=4, batch_size=4, max_length=16, lora_rank=lora_rank, remat="dots")
    graphdef, params = nnx.split(nnx.eval_shape(lambda: Llama(CONFIG, rngs=nnx.Rngs(0))))
    state = jax.eval_shape(lambda p: init_train_state(p, config)[0], params)
    assert isinstance(state, TrainState) and all(isinstance(leaf, jax.ShapeDtypeStruct)
                                                 for leaf in jax.tree.leaves(state))
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state,
                            train_state_shardings(state, mesh))
    rows = batch_sharding(mesh, 2)
    batch = [jax.ShapeDtypeStruct((4, 16), dtype, sharding=rows) for dtype in (jnp.int32, bool, bool)]
    _, optimizer = init_train_state(params, config)
    with jax.set_mesh(mesh):  # as `train` runs it: the step pins its new state to the same shardings
        compiled = train_step.lower(graphdef, *abstract, *batch, optimizer=optimizer, lora_scale=config.lora_scale,
                                    compute_dtype=config.compute_dtype, remat=config.remat).compile()
    for out, x in zip(jax.tree.leaves(compiled.output_shardings[0]), jax.tree.leaves(abstract.trainable)):
        assert out.is_equivalent_to(x.sharding, len(x.shape))  # updated parameters stay where they were
    assert compiled.memory_analysis() is not None


def test_a_batch_padded_to_its_length_bucket_gives_the_loss_and_gradients_of_one_padded_to_max_length():
    from jaxprune.distill.train import LENGTH_BUCKET, batch_length

    model = Llama(CONFIG, rngs=nnx.Rngs(0))
    rng = np.random.RandomState(0)
    examples = [Example(rng.randint(0, CONFIG.vocab_size, n).astype(np.int32), rng.rand(n) > 0.3) for n in (20, 37)]
    indices = np.arange(2)
    length = batch_length(examples, indices, 256)
    assert length == LENGTH_BUCKET  # 37 tokens round up to one bucket, not to max_length

    def loss_and_grads(padded_to):
        graphdef, params = nnx.split(model)
        batch = [jnp.asarray(a) for a in make_batch(examples, indices, padded_to)]
        return jax.value_and_grad(lambda p: masked_loss(nnx.merge(graphdef, p), *batch))(params)

    (short, short_grads), (long, long_grads) = loss_and_grads(length), loss_and_grads(256)
    np.testing.assert_allclose(short, long, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), short_grads, long_grads)
