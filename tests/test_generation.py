"""KV-cache generation against a naive loop, batching and padding, sampling reproducibility, stopping."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxprune.generation import Decoder, Job, SamplingConfig, decode_window, generate
from jaxprune.models import Llama, ModelConfig, causal_mask, positions_from_keep

CONFIG = ModelConfig(model_type="llama", vocab_size=61, hidden_size=32, intermediate_size=64, num_layers=2,
                     num_heads=4, num_kv_heads=2, head_dim=8)


@pytest.fixture(scope="module")
def model():
    return Llama(CONFIG, rngs=nnx.Rngs(0))


def naive_greedy(model, prompt, steps, stop=(), buffer=64):
    """Full forward over the whole sequence at every step, no cache: the reference.

    The sequence is right-padded into a fixed buffer (causal attention never sees the padding) so that the
    reference compiles once.
    """
    graphdef, params = nnx.split(model)

    @jax.jit
    def next_token(params, ids, length):
        keep = jnp.ones(ids.shape, bool)
        logits = nnx.merge(graphdef, params)(ids, positions_from_keep(keep), causal_mask(keep)).logits
        return jnp.argmax(logits[0, length - 1])

    tokens = list(prompt)
    for _ in range(steps):
        ids = np.zeros((1, buffer), np.int32)
        ids[0, :len(tokens)] = tokens
        tokens.append(int(next_token(params, ids, len(tokens))))
        if tokens[-1] in stop:
            break
    return tokens[len(prompt):]


PROMPTS = [[5, 9, 2, 33], [7], list(range(1, 40))]


def test_batched_greedy_equals_naive_loop_for_each_prompt(model):
    outputs = generate(model, PROMPTS, SamplingConfig(max_new_tokens=12))
    assert outputs == [naive_greedy(model, prompt, 12) for prompt in PROMPTS]


def test_stops_at_stop_token_and_keeps_it(model):
    free = naive_greedy(model, PROMPTS[0], 12)
    stop = free[4]
    first = free.index(stop)
    outputs = generate(model, [PROMPTS[0], PROMPTS[2]], SamplingConfig(max_new_tokens=12, stop_token_ids=(stop,)))
    assert outputs[0] == free[:first + 1]
    assert outputs[1] == naive_greedy(model, PROMPTS[2], 12, stop=(stop,))


def test_sampling_is_reproducible_by_seed_and_varies_across_seeds(model):
    sampling = SamplingConfig(max_new_tokens=16, temperature=1.5, top_p=0.95)
    first = generate(model, PROMPTS, sampling, seed=11)
    assert first == generate(model, PROMPTS, sampling, seed=11)
    assert any(generate(model, PROMPTS, sampling, seed=s) != first for s in (12, 13, 14))


def test_tiny_top_p_is_greedy(model):
    sampled = generate(model, PROMPTS, SamplingConfig(max_new_tokens=10, temperature=1.0, top_p=1e-6), seed=5)
    assert sampled == generate(model, PROMPTS, SamplingConfig(max_new_tokens=10))


def test_top_p_samples_only_from_the_nucleus():
    from jaxprune.sampling import pick_tokens

    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
    sampling = SamplingConfig(temperature=1.0, top_p=0.7)
    steps = jnp.zeros(1, jnp.int32)
    picks = {int(pick_tokens(logits, jax.random.key(s)[None], steps, sampling)[0]) for s in range(200)}
    assert picks == {0, 1}


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_sampled_token_frequencies_follow_softmax_of_logits_over_temperature(temperature):
    from jaxprune.sampling import pick_tokens

    rows = 20_000  # one row per draw: standard error of each frequency under 0.004
    logits = jnp.log(jnp.asarray([0.5, 0.3, 0.15, 0.05]))
    picks = pick_tokens(jnp.tile(logits, (rows, 1)), jax.random.split(jax.random.key(3), rows),
                        jnp.zeros(rows, jnp.int32), SamplingConfig(temperature=temperature))
    frequencies = np.bincount(np.asarray(picks), minlength=4) / rows
    expected = np.exp(np.asarray(logits) / temperature)
    np.testing.assert_allclose(frequencies, expected / expected.sum(), atol=0.015)


@pytest.mark.parametrize("bad", [dict(max_new_tokens=0), dict(temperature=-1.0), dict(top_p=0.0)])
def test_invalid_sampling_settings_are_refused(bad):
    with pytest.raises(ValueError):
        SamplingConfig(**bad)


def test_ragged_prompts_do_not_change_results(model):
    alone = generate(model, [PROMPTS[1]], SamplingConfig(max_new_tokens=8))[0]
    in_batch = generate(model, PROMPTS, SamplingConfig(max_new_tokens=8))[1]
    assert alone == in_batch == naive_greedy(model, PROMPTS[1], 8)
    assert np.asarray(alone).dtype.kind == "i"


def test_a_rows_sample_depends_on_its_stream_not_on_its_batch(model):
    """Rejection sampling resumes with other batch compositions; a sample must not change with them."""
    sampling = SamplingConfig(max_new_tokens=12, temperature=1.0)
    together = generate(model, PROMPTS, sampling, seed=3, stream_ids=[[0, 1], [1, 1], [2, 1]])
    alone = generate(model, [PROMPTS[2]], sampling, seed=3, stream_ids=[[2, 1]], batch_size=4)
    assert alone[0] == together[2]
    other_attempt = generate(model, [PROMPTS[2]], sampling, seed=3, stream_ids=[[2, 2]])
    assert other_attempt[0] != together[2]


def test_batch_split_over_eight_devices_equals_one_device(model):
    from jaxprune.sharding import make_mesh

    mesh = make_mesh({"data": 8})
    sampling = SamplingConfig(max_new_tokens=10, temperature=0.8)
    assert generate(model, PROMPTS, sampling, seed=1, mesh=mesh) == generate(model, PROMPTS, sampling, seed=1)


def test_rows_refilled_mid_batch_give_the_same_completions(model):
    """Continuous batching: with 2 rows for 6 prompts, finished rows take new prompts while others decode on."""
    prompts = PROMPTS + [[3, 4], list(range(20, 31)), [8] * 5]
    free = naive_greedy(model, prompts[0], 12)
    stop = free[3]  # some rows stop early, others run to max_new_tokens
    greedy = SamplingConfig(max_new_tokens=12, stop_token_ids=(stop,))
    assert generate(model, prompts, greedy, batch_size=2) == [naive_greedy(model, p, 12, stop=(stop,))
                                                              for p in prompts]
    sampled = dataclasses.replace(greedy, temperature=1.0)
    assert generate(model, prompts, sampled, seed=4, batch_size=2) == generate(model, prompts, sampled, seed=4)


def test_decoding_over_windows_of_the_ring_equals_naive_loop(model):
    """Rows that start together read only the ring slots since the oldest unfinished row started; with 2 rows and
    staggered refills the windows move round the ring (and wrap) and widen as rows age. Same tokens as a full
    forward at every step, and with more than one window width used, so the windowed path is what ran."""
    prompts = [list(range(k, k + 3 + 2 * k)) for k in range(1, 9)]
    free = naive_greedy(model, prompts[0], 24)
    stop = free[5]
    greedy = SamplingConfig(max_new_tokens=24, stop_token_ids=(stop,))
    decoder = Decoder(model, greedy, batch_size=2, max_prompt_length=max(map(len, prompts)), refill_rows=1)
    queue = iter([Job(r, prompt, [r]) for r, prompt in enumerate(prompts)])
    outputs = {job.key: tokens for job, tokens in decoder.run(lambda: next(queue, None))}
    assert [outputs[r] for r in range(len(prompts))] == [naive_greedy(model, p, 24, stop=(stop,)) for p in prompts]
    assert len([w for w in decoder.windows_used if w < greedy.max_new_tokens]) >= 2, decoder.windows_used


def test_decode_window_covers_every_unfinished_rows_steps_with_room_to_grow():
    assert decode_window(100, [], 512) == (100, 128)  # no row yet: the smallest window
    assert decode_window(100, [90, 97], 512) == (90, 128)  # 11 steps since row 90 started, + 64 of room
    assert decode_window(200, [90, 197], 512) == (90, 256)  # 111 + 64 > 128
    assert decode_window(300, [90, 297], 512) == (90, 512)  # 211 + 64 > 256: the whole ring


# A Gemma 3-style model: a sliding layer with a 4-token window (shorter than every cache here), its own rotary base,
# q/k norms, sandwich norms with (1 + weight) scaling, scaled embeddings, tanh-GELU.
WINDOWED = dataclasses.replace(CONFIG, layer_types=("sliding_attention", "full_attention"), sliding_window=4,
                               local_rope_theta=100.0, qk_norm=True, sandwich_norms=True, norm_offset=True,
                               scale_embeddings=True, hidden_act="gelu_pytorch_tanh")


def test_sliding_window_decoding_equals_naive_loop_over_the_window():
    model = Llama(WINDOWED, rngs=nnx.Rngs(1))
    outputs = generate(model, PROMPTS, SamplingConfig(max_new_tokens=12))
    assert outputs == [naive_greedy(model, prompt, 12) for prompt in PROMPTS]
    # The window changes what this model writes, so the equality above checks that decoding applies it.
    unwindowed = Llama(dataclasses.replace(WINDOWED, sliding_window=64), rngs=nnx.Rngs(1))
    assert generate(unwindowed, PROMPTS, SamplingConfig(max_new_tokens=12)) != outputs
