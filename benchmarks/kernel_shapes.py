"""How many suffix-kernel programs exact greedy compiles over a dataset of varied lengths, and at what padding.

    python benchmarks/kernel_shapes.py [--min_reasoning=40 --max_reasoning=250 --chains=32 --keep_ratio=0.5]

No model runs: every greedy step of every chain (all reasoning tokens are candidates; `--chains` reasoning lengths
evenly spread over the range, with a `--prompt`-token prompt and an `--answer`-token answer) is packed as the
library packs it (`jaxprune.pruning.packing`), and the distinct kernel shapes (rows per call, row width, cache slots)
are counted; each is one compilation. Padding is the kernel's token-forwards over the suffix tokens it needs. Row
width rules compared side by side: the library's (powers of two, `packing.row_widths`) and the earlier one (any
multiple of 16 between the longest suffix and twice it). Prints a markdown table.
"""

from absl import app, flags
import numpy as np

from jaxprune.pruning import packing
from jaxprune.pruning.scoring import LENGTH_BUCKET

_MIN = flags.DEFINE_integer("min_reasoning", 40, "Shortest chain's reasoning tokens.")
_MAX = flags.DEFINE_integer("max_reasoning", 250, "Longest chain's reasoning tokens.")
_CHAINS = flags.DEFINE_integer("chains", 32, "How many chains.")
_PROMPT = flags.DEFINE_integer("prompt", 100, "Prompt tokens of every chain (system prompt and question).")
_ANSWER = flags.DEFINE_integer("answer", 10, "Answer tokens of every chain.")
_KEEP_RATIO = flags.DEFINE_float("keep_ratio", 0.5, "Greedy deletes down to this share of the reasoning.")
_TOKEN_BUDGET = flags.DEFINE_integer("token_budget", 4096, "Tokens per kernel call (prune's default).")


def multiples_of_16(longest: int) -> list[int]:
    """The earlier rule: every multiple of 16 from the longest suffix to twice it."""
    return list(range(packing.round_up(longest, 16), packing.round_up(2 * longest, 16) + 1, 16))


def count_shapes(reasoning_lengths, widths) -> tuple[set, float]:
    """The distinct kernel shapes `(rows, width, slots)` of exact greedy over the chains, and its padded over needed
    tokens."""
    library_rule, packing.row_widths = packing.row_widths, widths
    try:
        shapes, padded, needed = set(), 0, 0
        for reasoning in reasoning_lengths:
            for left in range(reasoning, int(reasoning * _KEEP_RATIO.value), -1):
                length = _PROMPT.value + left + _ANSWER.value
                chain = packing.ChainSuffixes(np.zeros(length, np.int32),
                                              np.arange(_PROMPT.value, _PROMPT.value + left))
                rows, width = packing.pack_suffixes([chain], _TOKEN_BUDGET.value).tokens.shape
                for call in packing.call_rows(rows, width, _TOKEN_BUDGET.value):
                    shapes.add((call, width, packing.round_up(length, LENGTH_BUCKET)))
                    padded += call * width
                needed += int(chain.lengths.sum())
    finally:
        packing.row_widths = library_rule
    return shapes, padded / needed


def main(argv):
    del argv
    lengths = np.linspace(_MIN.value, _MAX.value, _CHAINS.value).round().astype(int).tolist()
    print(f"{len(lengths)} chains of {lengths[0]}-{lengths[-1]} reasoning tokens, prompt {_PROMPT.value}, answer "
          f"{_ANSWER.value}, exact greedy to keep {_KEEP_RATIO.value}, token_budget {_TOKEN_BUDGET.value}\n")
    print("| row widths | kernel programs | distinct row counts / widths / cache slots | token-forwards / needed |")
    print("| --- | ---: | ---: | ---: |")
    for name, rule in (("powers of two (library)", packing.row_widths), ("any multiple of 16 (before)",
                                                                          multiples_of_16)):
        shapes, padding = count_shapes(lengths, rule)
        distinct = " / ".join(str(len({shape[axis] for shape in shapes})) for axis in range(3))
        print(f"| {name} | {len(shapes)} | {distinct} | {padding:.3f} |")


if __name__ == "__main__":
    app.run(main)
