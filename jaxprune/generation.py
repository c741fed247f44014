"""Batched decoding with the KV cache and continuous batching: greedy or temperature / top-p sampling.

A `Decoder` keeps `batch_size` rows decoding together in one jitted `lax.while_loop`. When a few rows have finished
(stop token or `max_new_tokens`), the loop returns, their tokens are handed back, and new prompts are prefilled into
those rows while the others keep their place; so one long completion does not hold a whole batch idle, and jobs can
be added while decoding (rejection sampling adds an attempt when one fails).

Cache layout: each row has a prompt region (prompts left-padded to a length rounded up to `PROMPT_BUCKET`) and a
ring of `max_new_tokens` slots. At decode step t every row writes at ring slot `t % max_new_tokens`, so a step is one
in-place slice update for the whole batch, whatever step each row is at; a row's tokens occupy consecutive ring
slots from the step it started. Attention does not care where a key sits: positions are explicit and the mask says
which slots a row sees. A decode call whose unfinished rows all started within the last quarter or half of the ring
attends over just those steps' slots (`decode_window`), since keys cost a decode step as many bytes as weights.

Every row draws from its own random stream (the seed folded with the job's stream ids, then with the token index),
so a sample does not depend on which batch or row it ran in. With a mesh the rows are split over its devices.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Hashable, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxprune.models.llama import KVCache, Llama, init_cache, positions_from_keep
from jaxprune.sampling import SamplingConfig, finished, pick_tokens
from jaxprune.sharding import (batch_shards, batch_sharding, logical_sharding, mesh_context, mesh_of,
                               replicate_unplaced)

PROMPT_BUCKET = 32
_CACHE_AXES = ("activation_batch", "activation_kv_heads", None, None)  # [batch, kv_heads, slots, head_dim]


@dataclasses.dataclass(frozen=True)
class Job:
    """One completion to generate: `prompt` token ids and the ints naming its random stream."""

    key: Hashable
    prompt: Sequence[int]
    stream: Sequence[int]


class RowState(NamedTuple):
    """Decoding state: the global step `t`, and per row its cache, visible cache slots, last token and its
    position, tokens generated so far, whether it is finished, its output ring, the step it started and its key."""

    t: jax.Array          # [] int32
    cache: KVCache
    key_valid: jax.Array  # [batch, slots] bool
    key_position: jax.Array  # [batch, slots] int32, each slot's position (sliding-window layers read it)
    last: jax.Array       # [batch] int32
    position: jax.Array   # [batch] int32
    steps: jax.Array      # [batch] int32
    done: jax.Array       # [batch] bool
    out: jax.Array        # [batch, max_new_tokens] int32: token i of a row at ring slot (start + i) % max_new_tokens
    start: jax.Array      # [batch] int32
    keys: jax.Array       # [batch] PRNG keys


@functools.partial(jax.jit, static_argnames=("graphdef", "sampling"), donate_argnames=("state",))
def _prefill_rows(graphdef, params, state: RowState, rows, tokens, valid, keys, *, sampling: SamplingConfig):
    """Starts new prompts `tokens` `[n, prompt]` (left-padded, `valid` marks real tokens) in `rows` `[n]` of the
    state; a row index >= batch is padding and dropped. Each row's whole cache is rewritten."""
    model: Llama = nnx.merge(graphdef, params)
    count, prompt_length = tokens.shape
    ring = sampling.max_new_tokens
    slots = state.key_valid.shape[1]
    key_valid = jnp.zeros((count, slots), bool).at[:, :prompt_length].set(valid)
    mask = (jnp.arange(slots)[None, None, :] <= jnp.arange(prompt_length)[None, :, None]) & key_valid[:, None, :]
    positions = positions_from_keep(valid)
    cache = init_cache(model.config, count, slots, state.cache[0].k.dtype)
    key_position = jnp.zeros((count, slots), jnp.int32).at[:, :prompt_length].set(positions)
    hidden, cache, _ = model.hidden_states(tokens, positions, mask, cache=cache, cache_index=0,
                                           key_positions=key_position)
    first = pick_tokens(model.logits(hidden[:, -1]), keys, jnp.zeros(count, jnp.int32), sampling)
    steps = jnp.ones(count, jnp.int32)
    out = jnp.zeros((count, ring), jnp.int32).at[:, state.t % ring].set(first)
    put = lambda old, new: old.at[rows].set(new, mode="drop")  # noqa: E731
    return RowState(state.t, jax.tree.map(put, state.cache, cache), put(state.key_valid, key_valid),
                    put(state.key_position, key_position),
                    put(state.last, first), put(state.position, positions[:, -1] + 1), put(state.steps, steps),
                    put(state.done, finished(first, steps, sampling)), put(state.out, out),
                    put(state.start, jnp.full(count, state.t)), put(state.keys, keys))


def _ring_window(prompt_length: int, ring: int, first_step: jax.Array, window: int) -> jax.Array:
    """The cache slots decode steps `first_step ... first_step + window - 1` use: the prompt region, then those
    steps' ring slots in step order (indices into the full cache)."""
    return jnp.concatenate([jnp.arange(prompt_length), prompt_length + (first_step + jnp.arange(window)) % ring])


@functools.partial(jax.jit, static_argnames=("graphdef", "sampling", "window"), donate_argnames=("state",))
def _decode(graphdef, params, state: RowState, finish_count, first_step, *, sampling: SamplingConfig, window: int):
    """Decodes every unfinished row until `finish_count` more rows have finished, or all have, or (with a `window`
    shorter than the ring) the next step falls outside the window.

    A step attends over the prompt region and the ring; with `window` < ring, only over the ring slots of steps
    `first_step ...` (every unfinished row started at or after `first_step`, so nothing it sees is left out): the
    prompt region and those slots are gathered once into a smaller cache that the loop updates in place, and its
    ring part is put back at the end. Keys cost as many bytes as weights here, so reading fewer of them is the
    speed-up; the scores are the same, since the slots left out are masked anyway.
    """
    model: Llama = nnx.merge(graphdef, params)
    ring = sampling.max_new_tokens
    prompt_length = state.key_valid.shape[1] - ring
    done_at_entry = state.done
    windowed = window < ring
    if windowed:
        slots = _ring_window(prompt_length, ring, first_step, window)
        full = state
        state = state._replace(cache=jax.tree.map(lambda x: x[:, :, slots], state.cache),
                               key_valid=state.key_valid[:, slots], key_position=state.key_position[:, slots])

    def keep_going(state: RowState):
        newly_done = jnp.sum(state.done & ~done_at_entry)
        in_window = (state.t - first_step < window) if windowed else True
        return (newly_done < finish_count) & ~jnp.all(state.done) & in_window

    def step(state: RowState):
        # where every row's last token's keys and values go
        slot = prompt_length + (state.t - first_step if windowed else state.t % ring)
        key_valid = state.key_valid.at[:, slot].set(True)
        key_position = state.key_position.at[:, slot].set(state.position)
        hidden, cache, _ = model.hidden_states(state.last[:, None], state.position[:, None], key_valid[:, None, :],
                                               cache=state.cache, cache_index=slot, key_positions=key_position)
        token = pick_tokens(model.logits(hidden[:, 0]), state.keys, state.steps, sampling)
        live = ~state.done
        column = (state.t + 1) % ring
        out = state.out.at[:, column].set(jnp.where(live, token, state.out[:, column]))
        steps = state.steps + live
        return RowState(state.t + 1, cache, key_valid, key_position, jnp.where(live, token, state.last),
                        state.position + live,
                        steps, state.done | finished(token, steps, sampling), out, state.start, state.keys)

    state = jax.lax.while_loop(keep_going, step, state)
    if windowed:
        ring_slots = slots[prompt_length:]
        state = state._replace(
            cache=jax.tree.map(lambda big, small: big.at[:, :, ring_slots].set(small[:, :, prompt_length:]),
                               full.cache, state.cache),
            key_valid=full.key_valid.at[:, ring_slots].set(state.key_valid[:, prompt_length:]),
            key_position=full.key_position.at[:, ring_slots].set(state.key_position[:, prompt_length:]))
    return state


def decode_window(t: int, live_starts: Sequence[int], ring: int) -> tuple[int, int]:
    """`(first_step, window)` for the next decode call at step `t`: the oldest unfinished row's first step, and the
    smaller of a quarter and a half of the ring that covers every step since then with `ring / 8` to spare, else the
    whole ring. Each window is one more compiled program, and its gathered copy of the cache costs memory (at most
    the prompt region and half the ring; the compile check sizes it), so there are two."""
    first_step = min(live_starts, default=t)
    needed = t - first_step + 1 + ring // 8
    return first_step, next((w for w in (-(-ring // 4), -(-ring // 2)) if w >= needed), ring)


def empty_rows(config, batch_size: int, prompt_length: int, max_new_tokens: int, dtype, keys) -> RowState:
    """The decoding state of `batch_size` idle rows: a KV cache of `prompt_length + max_new_tokens` slots."""
    zeros = lambda: jnp.zeros(batch_size, jnp.int32)  # noqa: E731  (distinct buffers: the state is donated)
    slots = prompt_length + max_new_tokens
    return RowState(jnp.int32(0), init_cache(config, batch_size, slots, dtype), jnp.zeros((batch_size, slots), bool),
                    jnp.zeros((batch_size, slots), jnp.int32),
                    zeros(), zeros(), zeros(), jnp.ones(batch_size, bool),
                    jnp.zeros((batch_size, max_new_tokens), jnp.int32), zeros(), keys)


def row_shardings(state, mesh: Mesh):
    """Where a decoding state lives on `mesh`: rows over the batch axes; a KV cache's heads (its only 4-d arrays)
    also over `tensor`, as the weights that write them are."""
    def placement(x):
        if x.ndim == 4:
            return logical_sharding(mesh, _CACHE_AXES, x.shape)
        return batch_sharding(mesh, x.ndim) if x.ndim else NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(placement, state)


class Decoder:
    """Continuous-batching generation with one model and one sampling setting; see the module docstring."""

    def __init__(self, model: Llama, sampling: SamplingConfig, *, batch_size: int, max_prompt_length: int,
                 seed: int = 0, pad_id: int = 0, mesh: Mesh | None = None, refill_rows: int | None = None):
        self.graphdef, self.params = nnx.split(model)
        mesh = mesh or mesh_of(self.params)  # a model loaded sharded brings its mesh
        self.sampling, self.seed, self.pad_id, self.mesh = sampling, seed, pad_id, mesh
        if mesh is not None:  # rows over the batch axes; weights stay as loaded (or are copied to every device)
            self.params = replicate_unplaced(self.params, mesh)
            batch_size = -(-batch_size // batch_shards(mesh)) * batch_shards(mesh)
        self.batch_size = batch_size
        self.prompt_length = -(-max_prompt_length // PROMPT_BUCKET) * PROMPT_BUCKET
        # Prefilling costs about as much as a decode step per prompt token, so rows are refilled a few at a time.
        self.refill_rows = refill_rows or max(1, batch_size // 8)
        self.windows_used: set[int] = set()  # the ring windows decode calls attended over (see `decode_window`)
        self.state = self._place(empty_rows(model.config, batch_size, self.prompt_length, sampling.max_new_tokens,
                                            model.embed_tokens[...].dtype, self._keys([[0]] * batch_size)))

    def _place(self, tree):
        return tree if self.mesh is None else jax.device_put(tree, row_shardings(tree, self.mesh))

    def _keys(self, streams: Sequence[Sequence[int]]) -> jax.Array:
        ids = np.asarray(streams, np.uint32)
        return jax.vmap(lambda row: functools.reduce(jax.random.fold_in, row, jax.random.key(self.seed)))(ids)

    def _start(self, rows: list[int], jobs: list[Job]) -> None:
        """Prefills `jobs` into `rows`, `refill_rows` at a time (one compiled shape; unused slots are dropped)."""
        for start in range(0, len(jobs), self.refill_rows):
            self._prefill(rows[start:start + self.refill_rows], jobs[start:start + self.refill_rows])

    def _prefill(self, rows: list[int], jobs: list[Job]) -> None:
        count = self.refill_rows
        tokens = np.full((count, self.prompt_length), self.pad_id, np.int32)
        valid = np.zeros((count, self.prompt_length), bool)
        for row, job in enumerate(jobs):
            if not 0 < len(job.prompt) <= self.prompt_length:
                raise ValueError(f"prompt of job {job.key!r} has {len(job.prompt)} tokens; expected 1 to "
                                 f"{self.prompt_length}")
            tokens[row, self.prompt_length - len(job.prompt):] = job.prompt
            valid[row, self.prompt_length - len(job.prompt):] = True
        streams = [list(job.stream) for job in jobs]
        if any(len(s) != len(streams[0]) for s in streams):
            raise ValueError("every job's stream must have the same number of ids")
        streams += [[0] * len(streams[0])] * (count - len(jobs))
        row_ids = np.asarray(rows + [self.batch_size] * (count - len(jobs)), np.int32)
        with mesh_context(self.mesh):
            self.state = _prefill_rows(self.graphdef, self.params, self.state, jnp.asarray(row_ids),
                                       jnp.asarray(tokens), jnp.asarray(valid), self._keys(streams),
                                       sampling=self.sampling)

    def run(self, next_job: Callable[[], Job | None]) -> Iterator[tuple[Job, list[int]]]:
        """Yields `(job, tokens)` as completions finish (tokens end with the stop token if one was hit); asks
        `next_job()` for work whenever rows are free, until it returns None and every row is done."""
        jobs: list[Job | None] = [None] * self.batch_size
        if not bool(jnp.all(self.state.done)):  # rows left over from an abandoned run are dropped
            self.state = self.state._replace(done=self._place(jnp.ones(self.batch_size, bool)))
        while True:
            done, steps, out, start, t = jax.device_get((self.state.done, self.state.steps, self.state.out,
                                                         self.state.start, self.state.t))
            for row, job in enumerate(jobs):
                if job is not None and done[row]:
                    jobs[row] = None
                    ring = (start[row] + np.arange(steps[row])) % self.sampling.max_new_tokens
                    yield job, out[row, ring].tolist()
            rows, new = [], []
            for row in (r for r, job in enumerate(jobs) if job is None):
                job = next_job()
                if job is None:
                    break
                rows.append(row)
                new.append(job)
                jobs[row] = job
            if new:
                self._start(rows, new)
            if not any(jobs):
                return
            new_rows = set(rows)
            first_step, window = decode_window(int(t), [int(t) if row in new_rows else int(start[row])
                                                        for row, job in enumerate(jobs) if job is not None],
                                               self.sampling.max_new_tokens)
            self.windows_used.add(window)
            with mesh_context(self.mesh):
                self.state = _decode(self.graphdef, self.params, self.state, jnp.int32(self.refill_rows),
                                     jnp.int32(first_step), sampling=self.sampling, window=window)


def generate(model: Llama, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, *, seed: int = 0,
             stream_ids: Sequence[Sequence[int]] | None = None, batch_size: int | None = None, pad_id: int = 0,
             mesh: Mesh | None = None) -> list[list[int]]:
    """Continues each prompt (in order); a continuation ends with its stop token when it stopped early.

    `stream_ids[r]` (ints, e.g. question index and attempt; default the row index) picks prompt r's random stream.
    `batch_size` rows decode at once (default: all prompts)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one prompt, and every prompt needs at least one token")
    streams = stream_ids if stream_ids is not None else [[r] for r in range(len(prompts))]
    if len(streams) != len(prompts):
        raise ValueError(f"stream_ids must hold one sequence of ints per prompt, got {len(streams)}")
    decoder = Decoder(model, sampling, batch_size=batch_size or len(prompts),
                      max_prompt_length=max(len(p) for p in prompts), seed=seed, pad_id=pad_id, mesh=mesh)
    queue = iter([Job(r, prompt, stream) for r, (prompt, stream) in enumerate(zip(prompts, streams))])
    results: list[list[int]] = [[] for _ in prompts]
    for job, tokens in decoder.run(lambda: next(queue, None)):
        results[job.key] = tokens
    return results
