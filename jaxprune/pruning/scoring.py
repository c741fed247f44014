"""The scoring kernel: the log-likelihood of every deletion candidate of one greedy step, sharing the prefix.

A step sees the compact chain `x = prompt + reasoning_left + answer` (length T, prompt length P, n reasoning
tokens). Candidate c (a reasoning position) is `x` without `x[c]`. Its score splits into three parts:

* targets before c: unchanged by the deletion; prefix sums of the base pass's log-probabilities;
* the target `x[c+1]`, now predicted from the hidden state at `c-1`, which is also unchanged: the base pass scores
  this "skip" token for every position at once;
* targets from `c+2` on: their queries `x[c+1:T-1]` must be recomputed (positions shift down by one), attending to
  the base pass's keys/values of `x[:c]` and to each other.

Only that suffix is recomputed. The suffixes of all candidates are packed first-fit into rows of a fixed width, so a
row holds several candidates, each attending to its own visible prefix of the shared KV and, block-diagonally, to
itself. Rows are padded to a few bucketed shapes so the loop compiles rarely; rows can be sharded over devices.
Log-probabilities are computed in float32 and summed on the host in float64.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jaxprune import sharding as sharding_lib
from jaxprune.models.llama import Llama, init_cache, positions_from_keep

LENGTH_BUCKET = 32   # base-pass lengths are rounded up to a multiple of this
WIDTH_MULTIPLE = 16  # row widths of the packed suffixes are multiples of this
# Window widths of incremental base passes: about 1.25x apart, so a chain's steps compile a few programs.
BASE_WIDTHS = tuple(sorted({-(-int(32 * 1.25 ** k) // 32) * 32 for k in range(40)}))
ROW_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


@dataclasses.dataclass(frozen=True)
class StepScores:
    """Log-likelihoods after deleting each candidate: of the reasoning tokens left and of the answer span."""

    candidates: np.ndarray  # compact positions, [k]
    reasoning: np.ndarray   # [k] float64
    answer: np.ndarray      # [k] float64

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


def _round_up(value: int, multiple: int) -> int:
    return max(multiple, -(-value // multiple) * multiple)


@dataclasses.dataclass(frozen=True)
class PackedRows:
    """Candidate suffixes packed into rows `[rows, width]`; `segment` is -1 on padding."""

    tokens: np.ndarray
    positions: np.ndarray
    visible_prefix: np.ndarray  # how many base-pass keys (x[:c]) each query may see
    segment: np.ndarray         # index of the candidate within the row's segments, for block-diagonal masking
    targets: np.ndarray         # token id each query predicts
    target_position: np.ndarray  # compact position of that target in x (-1 on padding)
    candidate: np.ndarray       # which candidate (index into the step's candidate list) the query belongs to


def _first_fit_decreasing(lengths: np.ndarray, width: int) -> list[list[int]]:
    """Bins (rows) of item indices, each holding at most `width` in total; zero-length items are left out."""
    rows: list[list[int]] = []
    free: list[int] = []
    for index in np.argsort(-lengths, kind="stable"):
        if lengths[index] == 0:
            continue
        row = next((r for r, space in enumerate(free) if space >= lengths[index]), None)
        if row is None:
            rows.append([])
            free.append(width)
            row = len(rows) - 1
        rows[row].append(int(index))
        free[row] -= int(lengths[index])
    return rows


def call_rows(rows: int, width: int, token_budget: int, row_multiple: int = 1) -> list[int]:
    """Row counts of the kernel calls that cover `rows` rows: at most `token_budget` tokens a call, the last one
    padded up to a bucket so that shapes repeat."""
    cap = max(row_multiple, token_budget // width // row_multiple * row_multiple)
    calls = []
    while rows > 0:
        calls.append(min(cap, _round_up(next((b for b in ROW_BUCKETS if b >= rows), rows), row_multiple)))
        rows -= calls[-1]
    return calls


def suffix_lengths(length: int, candidates: np.ndarray, suffix_limit: int | None = None) -> np.ndarray:
    """How many queries each candidate's suffix recomputes: `x[c+1 : length-1]`, at most `suffix_limit`."""
    lengths = np.maximum(length - 2 - np.asarray(candidates), 0)
    return lengths if suffix_limit is None else np.minimum(lengths, suffix_limit)


def pack_suffixes(tokens: np.ndarray, length: int, candidates: np.ndarray, token_budget: int = 4096,
                  row_multiple: int = 1, suffix_limit: int | None = None) -> PackedRows:
    """Packs, for each candidate c, the queries `x[c+1 : length-1]` (the first `suffix_limit` of them if set)
    first-fit-decreasing into rows.

    The row width is the multiple of WIDTH_MULTIPLE (between the longest suffix and twice that) whose packing
    needs the fewest padded tokens once the rows are split into bucketed kernel calls.
    """
    lengths = suffix_lengths(length, candidates, suffix_limit)
    longest = max(int(lengths.max(initial=1)), 1)
    best = None
    for width in range(_round_up(longest, WIDTH_MULTIPLE), _round_up(2 * longest, WIDTH_MULTIPLE) + 1,
                       WIDTH_MULTIPLE):
        packing = _first_fit_decreasing(lengths, width)
        cost = width * sum(call_rows(len(packing), width, token_budget, row_multiple))
        if best is None or cost < best[0]:
            best = (cost, width, packing)
    _, width, rows = best
    shape = (max(len(rows), 1), width)
    packed = {name: np.full(shape, fill, np.int32) for name, fill in (
        ("tokens", 0), ("positions", 0), ("visible_prefix", 0), ("segment", -1), ("targets", 0),
        ("target_position", -1), ("candidate", -1))}
    for r, members in enumerate(rows):
        column = 0
        for segment, index in enumerate(members):
            c = int(candidates[index])
            span = slice(column, column + int(lengths[index]))
            queries = np.arange(c + 1, c + 1 + int(lengths[index]))
            packed["tokens"][r, span] = tokens[queries]
            packed["positions"][r, span] = queries - 1
            packed["visible_prefix"][r, span] = c
            packed["segment"][r, span] = segment
            packed["targets"][r, span] = tokens[queries + 1]
            packed["target_position"][r, span] = queries + 1
            packed["candidate"][r, span] = index
            column = span.stop
    return PackedRows(**packed)


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
def _suffix_pass(graphdef, params, prefix, tokens, positions, visible_prefix, segment, targets, *, vocab_chunk):
    model: Llama = nnx.merge(graphdef, params)
    slots, width = prefix[0].k.shape[2], tokens.shape[1]
    sees_prefix = jnp.arange(slots)[None, None, :] < visible_prefix[:, :, None]
    column = jnp.arange(width)
    sees_own = ((segment[:, :, None] == segment[:, None, :]) & (column[:, None] >= column[None, :])[None]
                & (segment[:, None, :] >= 0))
    mask = jnp.concatenate([sees_prefix, sees_own], axis=-1)
    # Slot s of the shared prefix holds the chain's position s; a row's own tokens carry theirs.
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
        slots = _round_up(len(tokens), LENGTH_BUCKET)
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
        length = len(tokens)
        if candidates is None:
            candidates = np.arange(prompt_length, prompt_length + reasoning_length)
        target_log_probs = base.token_log_probs(length)
        is_reasoning = np.zeros(length + 1)
        is_reasoning[prompt_length: prompt_length + reasoning_length] = 1.0
        is_answer = np.zeros(length + 1)
        is_answer[prompt_length + reasoning_length: length] = 1.0
        lengths = suffix_lengths(length, candidates, suffix_limit)  # targets after c + 1 + lengths are untouched
        scores = []
        for weights in (is_reasoning, is_answer):
            before = np.concatenate([[0.0], np.cumsum(weights[:length] * target_log_probs)])
            skip = weights[candidates + 1] * base.skip_log_probs[candidates - 1].astype(np.float64)
            untouched = before[length] - before[np.minimum(candidates + 2 + lengths, length)]
            scores.append(before[candidates] + skip + untouched)
        reasoning, answer = scores

        packed = pack_suffixes(np.asarray(tokens), length, candidates, self.token_budget, self.row_multiple,
                               suffix_limit)
        suffix_log_probs = self._run_rows(packed, base.cache)
        real = packed.candidate >= 0
        where = packed.target_position[real]
        np.add.at(reasoning, packed.candidate[real], is_reasoning[where] * suffix_log_probs[real])
        np.add.at(answer, packed.candidate[real], is_answer[where] * suffix_log_probs[real])
        return StepScores(candidates, reasoning, answer)

    def _run_rows(self, packed: PackedRows, cache) -> np.ndarray:
        """Runs the packed rows through the suffix kernel in calls of at most `token_budget` tokens."""
        total, width = packed.tokens.shape
        out = np.zeros((total, width), np.float64)
        start = 0
        for rows in call_rows(total, width, self.token_budget, self.row_multiple):
            chunk = {}
            for name in ("tokens", "positions", "visible_prefix", "segment", "targets"):
                block = getattr(packed, name)[start: start + rows]
                fill = -1 if name == "segment" else 0
                block = np.concatenate([block, np.full((rows - len(block), width), fill, np.int32)])
                chunk[name] = self._place(block)
            self.forward_tokens += rows * width
            with sharding_lib.mesh_context(self.mesh):
                result = _suffix_pass(self.graphdef, self.params, cache, **chunk, vocab_chunk=self.vocab_chunk)
            taken = min(rows, total - start)
            out[start: start + taken] = np.asarray(result)[:taken]
            start += taken
        return out

    def score_step_unshared(self, tokens: np.ndarray, prompt_length: int, reasoning_length: int) -> StepScores:
        """The same scores by full recomputation of every candidate (the reference path; no prefix sharing)."""
        length = len(tokens)
        slots = _round_up(length, LENGTH_BUCKET)
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
