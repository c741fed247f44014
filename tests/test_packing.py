"""Suffix packing against a naive reference: every candidate's suffix lands in exactly one row, intact, and rows
have few distinct widths."""

import numpy as np
import pytest

from jaxprune.pruning.packing import ChainSuffixes, call_rows, pack_suffixes, row_widths


@pytest.mark.parametrize("longest", [1, 15, 16, 17, 40, 48, 64, 65, 97, 200, 250, 1000, 2049])
def test_row_widths_are_the_twos_and_threes_from_the_one_that_holds_the_longest_suffix_up_to_twice_it(longest):
    def odd_part(width):
        while width % 2 == 0:
            width //= 2
        return width

    allowed = [w for w in range(16, 8 * longest + 64, 16) if odd_part(w) in (1, 3)]  # 16, 32, 48, 64, 96, ...
    smallest = next(w for w in allowed if w >= longest)
    assert row_widths(longest) == [w for w in allowed if w == smallest or smallest < w <= 2 * longest]


def naive_suffixes(tokens, candidates, suffix_limit=None):
    """Candidate c's queries are x[c+1 : T-1] (at most suffix_limit), each predicting the next token."""
    out = {}
    for index, c in enumerate(candidates):
        end = len(tokens) - 1 if suffix_limit is None else min(len(tokens) - 1, c + 1 + suffix_limit)
        queries = list(range(c + 1, end))
        out[index] = ([int(tokens[q]) for q in queries], [q - 1 for q in queries],
                      [int(tokens[q + 1]) for q in queries])
    return out


@pytest.mark.parametrize("suffix_limit", [None, 7])
def test_every_candidates_suffix_is_packed_once_and_intact_for_several_chains(suffix_limit):
    rng = np.random.default_rng(0)
    # Random candidates, plus the last two (suffixes of one query and of none).
    chains = [ChainSuffixes(rng.integers(1, 100, size=length).astype(np.int32),
                            np.union1d(rng.choice(np.arange(5, length - 3), size=count, replace=False),
                                       [length - 3, length - 2]), suffix_limit)
              for length, count in ((40, 20), (23, 9), (61, 30))]
    packed = pack_suffixes(chains, token_budget=256)
    rows, width = packed.tokens.shape
    assert width in row_widths(max(int(c.lengths.max()) for c in chains))
    assert sum(call_rows(rows, width, 256)) >= rows
    for index, chain in enumerate(chains):
        expected = naive_suffixes(chain.tokens, chain.candidates, suffix_limit)
        found = {}
        for r in np.flatnonzero(packed.chain == index):
            for segment in set(packed.segment[r][packed.segment[r] >= 0].tolist()):
                where = packed.segment[r] == segment
                candidate = set(packed.candidate[r][where].tolist())
                assert len(candidate) == 1, "a segment holds one candidate's suffix"
                candidate = candidate.pop()
                assert candidate not in found, "a suffix is packed once"
                found[candidate] = (packed.tokens[r][where].tolist(), packed.positions[r][where].tolist(),
                                    packed.targets[r][where].tolist())
                assert (packed.visible_prefix[r][where] == chain.candidates[candidate]).all()
        assert found == {k: v for k, v in expected.items() if v[0]}
