"""The scoring kernel: the log-likelihood of every deletion candidate of one greedy step, sharing the prefix.

A step sees the compact chain `x = prompt + reasoning_left + answer` (length T, prompt length P, n reasoning
tokens). Candidate c (a reasoning position) is `x` without `x[c]`. Its score splits into three parts:

* targets before c: unchanged by the deletion; prefix sums of the base pass's log-probabilities;
* the target `x[c+1]`, now predicted from the hidden state at `c-1`, which is also unchanged: the base pass scores
  this "skip" token for every position at once;
* targets from `c+2` on: their queries `x[c+1:T-1]` must be recomputed (positions shift down by one), attending to
  the base pass's keys/values of `x[:c]` and to each other.

Only that suffix is recomputed. The suffixes of all candidates are packed first-fit into rows of a fixed width
(`packing.py`), so a row holds several candidates, each attending to its own visible prefix of the shared KV and,
block-diagonally, to itself. Steps of several chains can share kernel calls (`Scorer.score_steps`): a row holds one
chain's suffixes and reads that chain's cache. Rows are padded to a few bucketed shapes so the loop compiles rarely;
rows can be sharded over devices.
Log-probabilities are computed in float32 and summed on the host in float64.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jaxprune import sharding as sharding_lib
from jaxprune.models.llama import Llama, init_cache, positions_from_keep
from jaxprune.pruning.packing import (ROW_BUCKETS, ChainSuffixes, PackedRows, call_rows, pack_suffixes, round_up,
                                      suffix_lengths)

LENGTH_BUCKET = 32   # base-pass lengths are rounded up to a multiple of this
# Window widths of incremental base passes: about 1.25x apart, so a chain's steps compile a few programs.
BASE_WIDTHS = tuple(sorted({-(-int(32 * 1.25 ** k) // 32) * 32 for k in range(40)}))


@dataclasses.dataclass(frozen=True)
class StepScores:
    """Log-likelihoods after deleting each candidate: of the reasoning tokens left and of the answer span."""

    candidates: np.ndarray  # compact positions, [k]
    reasoning: np.ndarray   # [k] float64
    answer: np.ndarray      # [k] float64
    token_forwards: int = 0  # spent in the kernel on this chain's suffixes, its share of padding included

    def objective(self, name: str) -> np.ndarray:
        return self.reasoning + self.answer if name == "joint" else self.answer


@dataclasses.dataclass(frozen=True)
class BasePass:
    """What one forward over the current chain gives: log-probs of every token and its KV cache."""

    cache: tuple                    # per layer LayerCache [1, kv_heads, L, head_dim]
    next_log_probs: np.ndarray      # [L] log p(x[t+1] | x[:t+1])
    skip_log_probs: np.ndarray      # [L] log p(x[t+2] | x[:t+1])
    attention_received: np.ndarray | None  # [L] attention each token receives, summed over layers, heads, queries

    def token_log_probs(self, length: int) -> np.ndarray:
        """log p(x[t] | x[:t]) for t = 0..length-1 (0 for t = 0, which is never scored)."""
        return np.concatenate([[0.0], self.next_log_probs[: length - 1].astype(np.float64)])


@dataclasses.dataclass(frozen=True)
class StepRequest:
    """One greedy step of one chain to score: the compact chain, its prompt and reasoning lengths, its base pass,
    the candidates (compact positions; None: every reasoning token) and the suffix limit (`Scorer.score_step`)."""

    tokens: np.ndarray
    prompt_length: int
    reasoning_length: int
    base: BasePass
    candidates: np.ndarray | None = None
    suffix_limit: int | None = None

    def with_candidates(self) -> "StepRequest":
        if self.candidates is not None:
            return self
        every = np.arange(self.prompt_length, self.prompt_length + self.reasoning_length)
        return dataclasses.replace(self, candidates=every)

    def unchanged_parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Each candidate's reasoning and answer log-likelihood over the targets its deletion leaves to the base
        pass (before it, the skipped token, after its limited suffix), and which targets are reasoning / answer."""
        length, candidates = len(self.tokens), self.candidates
        target_log_probs = self.base.token_log_probs(length)
        is_reasoning = np.zeros(length + 1)
        is_reasoning[self.prompt_length: self.prompt_length + self.reasoning_length] = 1.0
        is_answer = np.zeros(length + 1)
        is_answer[self.prompt_length + self.reasoning_length: length] = 1.0
        lengths = suffix_lengths(length, candidates, self.suffix_limit)  # targets after c + 1 + lengths: untouched
        scores = []
        for weights in (is_reasoning, is_answer):
            before = np.concatenate([[0.0], np.cumsum(weights[:length] * target_log_probs)])
            skip = weights[candidates + 1] * self.base.skip_log_probs[candidates - 1].astype(np.float64)
            untouched = before[length] - before[np.minimum(candidates + 2 + lengths, length)]
            scores.append(before[candidates] + skip + untouched)
        return scores[0], scores[1], is_reasoning, is_answer


def _stacked_caches(bases: Sequence[BasePass]) -> tuple:
    """The chains' base-pass caches as one `[chains, kv_heads, slots, head_dim]` prefix per layer: one chain's as
    it is; several padded to a common bucketed slot count and a bucketed chain count (so shapes repeat)."""
    if len(bases) == 1:
        return bases[0].cache
    slots = max(base.cache[0].k.shape[2] for base in bases)
    slots = next(width for width in BASE_WIDTHS if width >= slots)
    chains = next(bucket for bucket in ROW_BUCKETS if bucket >= len(bases))

    def stack(*arrays):
        padded = [jnp.pad(a, ((0, 0), (0, 0), (0, slots - a.shape[2]), (0, 0))) for a in arrays]
        return jnp.concatenate(padded + [jnp.zeros_like(padded[0])] * (chains - len(arrays)))

    return jax.tree.map(stack, *[base.cache for base in bases])


@functools.partial(jax.jit, static_argnames=("graphdef", "vocab_chunk", "with_attention"))
def _base_pass(graphdef, params, tokens, length, *, vocab_chunk, with_attention):
    model: Llama = nnx.merge(graphdef, params)
    slots = tokens.shape[1]
    index = jnp.arange(slots)
    valid = index < length
    mask = (index[:, None] >= index[None, :])[None] & valid[None, None, :]
    cache = init_cache(model.config, 1, slots, model.embed_tokens[...].dtype)
    hidden, cache, attentions = model.hidden_states(tokens, index[None], mask, cache=cache, key_positions=index[None],
                                                    return_attention=with_attention)
    targets = jnp.stack([jnp.roll(tokens[0], -1), jnp.roll(tokens[0], -2)], axis=-1)
    log_probs = model.token_log_probs(hidden[0], targets, vocab_chunk)
    received = None
    if with_attention:  # attention each key receives from the queries after it, all layers and heads
        later = (index[:, None] > index[None, :]) & valid[:, None]
        received = sum(jnp.einsum("hqk,qk->k", layer[0], later.astype(jnp.float32)) for layer in attentions)
    return cache, log_probs[:, 0], log_probs[:, 1], received


@functools.partial(jax.jit, static_argnames=("graphdef", "vocab_chunk"))
def _base_pass_from(graphdef, params, cache, tokens, start, length, *, vocab_chunk):
    """The base pass of a chain that agrees with the cached one before `start`: only queries `start` on are run
    (`width` of them: the window's static size), writing their keys/values into the cache in place."""
    model: Llama = nnx.merge(graphdef, params)
    width, slots = tokens.shape[1] // 3, cache[0].k.shape[2]
    window, following, skipped = tokens[0, :width], tokens[0, width: 2 * width], tokens[0, 2 * width:]
    query = start + jnp.arange(width)
    key = jnp.arange(slots)
    mask = ((key[None, :] <= query[:, None]) & (key[None, :] < length))[None]
    hidden, cache, _ = model.hidden_states(window[None], query[None], mask, cache=cache, cache_index=start,
                                           key_positions=key[None])
    log_probs = model.token_log_probs(hidden[0], jnp.stack([following, skipped], axis=-1), vocab_chunk)
    return cache, log_probs[:, 0], log_probs[:, 1]


@functools.partial(jax.jit, static_argnames=("graphdef", "vocab_chunk"))
def _suffix_pass(graphdef, params, prefix, row_chain, tokens, positions, visible_prefix, segment, targets, *,
                 vocab_chunk):
    """Log-probabilities of the packed rows' targets. `prefix` holds the base-pass caches of the call's chains
    stacked (`[chains, kv_heads, slots, head_dim]` per layer); row r attends to chain `row_chain[r]`'s."""
    model: Llama = nnx.merge(graphdef, params)
    chains, slots, width = prefix[0].k.shape[0], prefix[0].k.shape[2], tokens.shape[1]
    if chains > 1:  # each row reads its own chain's keys (one chain: shared by every row without a copy)
        prefix = jax.tree.map(lambda array: array[row_chain], prefix)
    sees_prefix = jnp.arange(slots)[None, None, :] < visible_prefix[:, :, None]
    column = jnp.arange(width)
    sees_own = ((segment[:, :, None] == segment[:, None, :]) & (column[:, None] >= column[None, :])[None]
                & (segment[:, None, :] >= 0))
    mask = jnp.concatenate([sees_prefix, sees_own], axis=-1)
    # Slot s of a chain's cache holds the chain's position s; a row's own tokens carry theirs.
    key_positions = jnp.concatenate([jnp.broadcast_to(jnp.arange(slots), (tokens.shape[0], slots)), positions], 1)
    hidden, _, _ = model.hidden_states(tokens, positions, mask, prefix=prefix, key_positions=key_positions)
    return model.token_log_probs(hidden, targets[..., None], vocab_chunk)[..., 0]


@functools.partial(jax.jit, static_argnames=("graphdef", "vocab_chunk"))
def _full_pass(graphdef, params, tokens, length, deleted, *, vocab_chunk):
    """Unshared reference path: each candidate's whole chain, its token masked out, one vmapped forward."""
    model: Llama = nnx.merge(graphdef, params)
    slots = tokens.shape[1]
    index = jnp.arange(slots)

    def one_candidate(c):
        keep = (index < length) & (index != c)
        mask = (index[:, None] >= index[None, :]) & keep[None, :]
        hidden, _, _ = model.hidden_states(tokens, positions_from_keep(keep)[None], mask[None])
        target_index = jnp.where(index + 1 == c, index + 2, index + 1)
        targets = tokens[0, jnp.minimum(target_index, slots - 1)]
        return model.token_log_probs(hidden[0], targets[:, None], vocab_chunk)[:, 0], target_index

    return jax.vmap(one_candidate)(deleted)


def compiled_programs() -> dict[str, int]:
    """How many programs each scoring kernel has compiled in this process (one per distinct shape bucket)."""
    kernels = {"base pass": _base_pass, "incremental base pass": _base_pass_from, "suffix pass": _suffix_pass,
               "full pass": _full_pass}
    return {name: kernel._cache_size() for name, kernel in kernels.items()}


class Scorer:
    """Scores greedy-pruning steps of chains with one model; jitted functions are shared across chains."""

    def __init__(self, model: Llama, *, token_budget: int = 4096, vocab_chunk: int = 4096, mesh: Mesh | None = None):
        self.graphdef, self.params = nnx.split(model)
        mesh = mesh or sharding_lib.mesh_of(self.params)  # a model loaded sharded brings its mesh
        if mesh is not None:  # candidate rows are spread over the batch axes, weights stay as loaded
            self.params = sharding_lib.replicate_unplaced(self.params, mesh)
        self.token_budget = token_budget
        self.vocab_chunk = vocab_chunk
        self.mesh = mesh
        self.row_multiple = sharding_lib.batch_shards(mesh) if mesh is not None else 1
        self.forward_tokens = 0  # token-forwards spent (padding included), for records and benchmarks
        self.base_forward_tokens = 0  # the part of them spent in base passes

    def _place(self, array: np.ndarray) -> jax.Array:
        if self.mesh is None:
            return jnp.asarray(array)
        return jax.device_put(array, sharding_lib.batch_sharding(self.mesh, array.ndim))

    def base_pass(self, tokens: np.ndarray, with_attention: bool = False) -> BasePass:
        slots = round_up(len(tokens), LENGTH_BUCKET)
        padded = np.zeros((1, slots), np.int32)
        padded[0, : len(tokens)] = tokens
        self.forward_tokens += slots
        self.base_forward_tokens += slots
        with sharding_lib.mesh_context(self.mesh):
            cache, nxt, skip, received = _base_pass(self.graphdef, self.params, jnp.asarray(padded), len(tokens),
                                                    vocab_chunk=self.vocab_chunk, with_attention=with_attention)
        return BasePass(cache, np.asarray(nxt), np.asarray(skip), None if received is None else np.asarray(received))

    def base_pass_after(self, previous: BasePass, tokens: np.ndarray, unchanged: int) -> BasePass:
        """The base pass of `tokens`, which agree with the chain `previous` was run on in their first `unchanged`
        tokens (a deletion at `unchanged`): queries from `unchanged - 2` on are rerun (their targets moved), in a
        window of a few bucketed widths, against `previous`'s cache. Same values as `base_pass(tokens)`."""
        slots = previous.cache[0].k.shape[2]
        start = max(unchanged - 2, 0)
        width = min(next(w for w in BASE_WIDTHS + (slots,) if w >= len(tokens) - start), slots)
        start = min(start, slots - width)  # the window must fit the cache (it may rerun a few unchanged queries)
        padded = np.zeros(slots + 2, np.int32)
        padded[: len(tokens)] = tokens
        window = np.concatenate([padded[start + shift: start + shift + width] for shift in range(3)])
        self.forward_tokens += width
        self.base_forward_tokens += width
        with sharding_lib.mesh_context(self.mesh):
            cache, nxt, skip = _base_pass_from(self.graphdef, self.params, previous.cache, jnp.asarray(window[None]),
                                               start, len(tokens), vocab_chunk=self.vocab_chunk)
        next_log_probs, skip_log_probs = previous.next_log_probs.copy(), previous.skip_log_probs.copy()
        next_log_probs[start: start + width] = np.asarray(nxt)
        skip_log_probs[start: start + width] = np.asarray(skip)
        return BasePass(cache, next_log_probs, skip_log_probs, None)

    def score_step(self, tokens: np.ndarray, prompt_length: int, reasoning_length: int, base: BasePass,
                   candidates: np.ndarray | None = None, suffix_limit: int | None = None) -> StepScores:
        """Scores deleting each candidate (compact positions; default: every reasoning token) from `tokens`.

        With `suffix_limit`, only the first `suffix_limit` queries after a candidate are recomputed and the targets
        after them keep their base-pass log-probabilities (approximate: a deletion's effect fades with distance).
        """
        return self.score_steps([StepRequest(tokens, prompt_length, reasoning_length, base, candidates,
                                             suffix_limit)])[0]

    def score_steps(self, requests: Sequence[StepRequest]) -> list[StepScores]:
        """`score_step` for the steps of several chains at once: their suffixes share kernel calls (a row holds
        one chain's), so chains whose steps would leave a call part-empty fill it together. Same scores."""
        requests = [request.with_candidates() for request in requests]
        packed = pack_suffixes([ChainSuffixes(np.asarray(r.tokens), r.candidates, r.suffix_limit) for r in requests],
                               self.token_budget, self.row_multiple)
        suffix_log_probs, row_tokens = self._run_rows(packed, _stacked_caches([r.base for r in requests]))
        results = []
        for index, request in enumerate(requests):
            reasoning, answer, is_reasoning, is_answer = request.unchanged_parts()
            real = (packed.candidate >= 0) & (packed.chain == index)[:, None]
            where, candidate = packed.target_position[real], packed.candidate[real]
            np.add.at(reasoning, candidate, is_reasoning[where] * suffix_log_probs[real])
            np.add.at(answer, candidate, is_answer[where] * suffix_log_probs[real])
            results.append(StepScores(request.candidates, reasoning, answer, int(row_tokens[index])))
        return results

    def _run_rows(self, packed: PackedRows, prefix) -> tuple[np.ndarray, np.ndarray]:
        """Runs the packed rows through the suffix kernel in calls of at most `token_budget` tokens; returns the
        log-probabilities and the token-forwards each chain spent (a call's padding shared by its rows' chains)."""
        total, width = packed.tokens.shape
        out = np.zeros((total, width), np.float64)
        spent = np.zeros(prefix[0].k.shape[0], np.float64)
        start = 0
        for rows in call_rows(total, width, self.token_budget, self.row_multiple):
            chunk = {}
            for name in ("tokens", "positions", "visible_prefix", "segment", "targets"):
                block = getattr(packed, name)[start: start + rows]
                fill = -1 if name == "segment" else 0
                chunk[name] = self._place(np.concatenate([block, np.full((rows - len(block), width), fill, np.int32)]))
            taken = min(rows, total - start)
            row_chain = np.concatenate([packed.chain[start: start + taken], np.zeros(rows - taken, np.int32)])
            self.forward_tokens += rows * width
            np.add.at(spent, row_chain[:taken], rows * width / taken)
            with sharding_lib.mesh_context(self.mesh):
                result = _suffix_pass(self.graphdef, self.params, prefix, self._place(row_chain), **chunk,
                                      vocab_chunk=self.vocab_chunk)
            out[start: start + taken] = np.asarray(result)[:taken]
            start += taken
        return out, np.round(spent)

    def score_step_unshared(self, tokens: np.ndarray, prompt_length: int, reasoning_length: int) -> StepScores:
        """The same scores by full recomputation of every candidate (the reference path; no prefix sharing)."""
        length = len(tokens)
        slots = round_up(length, LENGTH_BUCKET)
        padded = np.zeros((1, slots), np.int32)
        padded[0, :length] = tokens
        candidates = np.arange(prompt_length, prompt_length + reasoning_length)
        reasoning, answer = np.zeros(len(candidates)), np.zeros(len(candidates))
        per_call = max(1, self.token_budget // slots)
        for start in range(0, len(candidates), per_call):
            batch = candidates[start: start + per_call]
            deleted = np.concatenate([batch, np.full(per_call - len(batch), -1)]).astype(np.int32)
            self.forward_tokens += per_call * slots
            with sharding_lib.mesh_context(self.mesh):
                log_probs, target_index = _full_pass(self.graphdef, self.params, jnp.asarray(padded), length,
                                                     jnp.asarray(deleted), vocab_chunk=self.vocab_chunk)
            log_probs, target_index = np.asarray(log_probs, np.float64), np.asarray(target_index)
            for row, c in enumerate(batch):
                queries = np.arange(slots)
                scored = (queries != c) & (target_index[row] < length)
                targets = target_index[row][scored]
                in_reasoning = (targets >= prompt_length) & (targets < prompt_length + reasoning_length)
                in_answer = targets >= prompt_length + reasoning_length
                reasoning[start + row] = log_probs[row][scored][in_reasoning].sum()
                answer[start + row] = log_probs[row][scored][in_answer].sum()
        return StepScores(candidates, reasoning, answer)
