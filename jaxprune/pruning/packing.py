"""Packs deletion candidates' suffixes (the queries a deletion changes) into fixed-width rows for the scoring kernel.

Candidate c of a compact chain `x` (length T) recomputes the queries `x[c+1 : T-1]` (`scoring.py` says why). Those
suffixes are packed first-fit-decreasing into rows of one width, several candidates to a row (block-diagonal
masking keeps them apart). Several chains can share a kernel call: each row holds suffixes of one chain only, so
it attends to that chain's cached prefix alone, and a call's rows come from as many chains as fill it. Row counts
are padded to a few buckets and row widths are 2^k or 3 * 2^k tokens, so that the kernel compiles rarely.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

ROW_WIDTHS = tuple(sorted({1 << k for k in range(4, 31)} | {3 << k for k in range(4, 30)}))  # 16, 32, 48, 64, 96..
ROW_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def round_up(value: int, multiple: int) -> int:
    return max(multiple, -(-value // multiple) * multiple)


def suffix_lengths(length: int, candidates: np.ndarray, suffix_limit: int | None = None) -> np.ndarray:
    """How many queries each candidate's suffix recomputes: `x[c+1 : length-1]`, at most `suffix_limit`."""
    lengths = np.maximum(length - 2 - np.asarray(candidates), 0)
    return lengths if suffix_limit is None else np.minimum(lengths, suffix_limit)


@dataclasses.dataclass(frozen=True)
class ChainSuffixes:
    """One chain's step to pack: the compact chain, the candidates scored (compact positions), and how many
    queries after each are recomputed (None: all of them)."""

    tokens: np.ndarray
    candidates: np.ndarray
    suffix_limit: int | None = None

    @property
    def lengths(self) -> np.ndarray:
        return suffix_lengths(len(self.tokens), self.candidates, self.suffix_limit)


@dataclasses.dataclass(frozen=True)
class PackedRows:
    """Candidate suffixes packed into rows `[rows, width]`; `segment` is -1 on padding."""

    tokens: np.ndarray
    positions: np.ndarray
    visible_prefix: np.ndarray  # how many of its chain's base-pass keys (x[:c]) each query may see
    segment: np.ndarray         # index of the candidate within the row's segments, for block-diagonal masking
    targets: np.ndarray         # token id each query predicts
    target_position: np.ndarray  # compact position of that target in x (-1 on padding)
    candidate: np.ndarray       # which candidate (index into its chain's candidate list) the query belongs to
    chain: np.ndarray           # [rows]: which chain (index into the packed chains) the row belongs to


def row_widths(longest: int) -> list[int]:
    """The row widths tried for suffixes of at most `longest` queries: of `ROW_WIDTHS`, the first that holds the
    longest suffix and any others up to twice the longest (one to three). A dataset of varied lengths then meets few
    distinct widths, each a compiled kernel, for a little more padding; the 3 * 2^k steps between the powers of two
    save the approximate modes' few long suffixes about a tenth of their token-forwards
    (`benchmarks/kernel_shapes.py`)."""
    first = next(width for width in ROW_WIDTHS if width >= longest)
    return [width for width in ROW_WIDTHS if width == first or first < width <= 2 * longest]


def first_fit_decreasing(lengths: np.ndarray, width: int) -> list[list[int]]:
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
        calls.append(min(cap, round_up(next((b for b in ROW_BUCKETS if b >= rows), rows), row_multiple)))
        rows -= calls[-1]
    return calls


def pack_suffixes(chains: Sequence[ChainSuffixes], token_budget: int = 4096, row_multiple: int = 1) -> PackedRows:
    """Packs every chain's candidate suffixes into rows of one width, each chain's rows after the previous one's.

    The width is the one of `row_widths` whose packing needs the fewest padded tokens once the rows are split into
    bucketed kernel calls.
    """
    lengths = [chain.lengths for chain in chains]
    longest = max([int(each.max(initial=1)) for each in lengths] + [1])
    best = None
    for width in row_widths(longest):
        packing = [(c, members) for c, each in enumerate(lengths) for members in first_fit_decreasing(each, width)]
        cost = width * sum(call_rows(len(packing), width, token_budget, row_multiple))
        if best is None or cost < best[0]:
            best = (cost, width, packing)
    _, width, rows = best
    shape = (max(len(rows), 1), width)
    packed = {name: np.full(shape, fill, np.int32) for name, fill in (
        ("tokens", 0), ("positions", 0), ("visible_prefix", 0), ("segment", -1), ("targets", 0),
        ("target_position", -1), ("candidate", -1))}
    packed["chain"] = np.zeros(shape[0], np.int32)
    for r, (chain_index, members) in enumerate(rows):
        chain, column = chains[chain_index], 0
        packed["chain"][r] = chain_index
        for segment, index in enumerate(members):
            c, size = int(chain.candidates[index]), int(lengths[chain_index][index])
            span = slice(column, column + size)
            queries = np.arange(c + 1, c + 1 + size)
            packed["tokens"][r, span] = chain.tokens[queries]
            packed["positions"][r, span] = queries - 1
            packed["visible_prefix"][r, span] = c
            packed["segment"][r, span] = segment
            packed["targets"][r, span] = chain.tokens[queries + 1]
            packed["target_position"][r, span] = queries + 1
            packed["candidate"][r, span] = index
            column = span.stop
    return PackedRows(**packed)
