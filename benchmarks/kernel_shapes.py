"""How many suffix-kernel programs a pruning run compiles over chains of varied lengths, and at what padding, under
several row-width rules side by side.

    python benchmarks/kernel_shapes.py [--min_reasoning=40 --max_reasoning=250 --chains=32 --keep_ratio=0.5]
    python benchmarks/kernel_shapes.py --replay_mode=approx [--replay_mode=lazy --replay_chains=4]

Without `--replay_mode` no model runs: every step of exact greedy over `--chains` reasoning lengths evenly spread
over the range (all reasoning tokens are candidates; a `--prompt`-token prompt and an `--answer`-token answer) is
packed as the library packs it (`jaxprune.pruning.packing`). With `--replay_mode`, that mode
(`jaxprune.pruning.methods`, settings as in `benchmarks/approx_agreement.py`) prunes the first `--replay_chains`
chains of `benchmarks/data/exact_references.jsonl` to keep 0.5 with SmolLM2 in float32, each scoring call's
candidate suffixes are recorded, and those same calls are packed again under every rule (paired: the same steps).
Each distinct kernel shape (rows per call, row width, cache slots) is one compilation; padding is the kernel's
token-forwards over the suffix tokens it needs. Prints one markdown table per workload.
"""

import time

from absl import app, flags
import numpy as np

from jaxprune.pruning import packing
from jaxprune.pruning.scoring import LENGTH_BUCKET
from mode_spec import parse_mode  # benchmarks/, beside this file

_MIN = flags.DEFINE_integer("min_reasoning", 40, "Shortest chain's reasoning tokens.")
_MAX = flags.DEFINE_integer("max_reasoning", 250, "Longest chain's reasoning tokens.")
_CHAINS = flags.DEFINE_integer("chains", 32, "How many chains.")
_PROMPT = flags.DEFINE_integer("prompt", 100, "Prompt tokens of every chain (system prompt and question).")
_ANSWER = flags.DEFINE_integer("answer", 10, "Answer tokens of every chain.")
_KEEP_RATIO = flags.DEFINE_float("keep_ratio", 0.5, "Greedy deletes down to this share of the reasoning.")
_TOKEN_BUDGET = flags.DEFINE_integer("token_budget", 4096, "Tokens per kernel call (prune's default).")
_REPLAY_MODES = flags.DEFINE_multi_string("replay_mode", [], "A pruning mode, method[:setting=value,...], whose "
                                          "recorded scoring calls are packed again under each rule; repeatable.")
_REPLAY_CHAINS = flags.DEFINE_integer("replay_chains", 4, "How many reference chains each replayed mode prunes.")
_REFERENCES = flags.DEFINE_string("references", "benchmarks/data/exact_references.jsonl", "Chains to replay on.")


def multiples_of_16(longest: int) -> list[int]:
    """The first rule: every multiple of 16 from the longest suffix to twice it."""
    return list(range(packing.round_up(longest, 16), packing.round_up(2 * longest, 16) + 1, 16))


def powers_of_two(longest: int) -> list[int]:
    """The second rule: the power of two that holds the longest suffix, and twice it when that is no wider than twice
    the longest."""
    first = max(16, 1 << (longest - 1).bit_length())
    return [first] + ([2 * first] if first == longest else [])


def quarter_octaves(longest: int) -> list[int]:
    """A finer one: multiples of 16 of the form m * 2^k, m in 4..7 (16, 32, 48, 64, 80, 96, 112, 128, 160, ...), from
    the first that holds the longest suffix up to twice the longest."""
    widths = sorted({w for k in range(2, 20) for m in (4, 5, 6, 7) if (w := m << k) % 16 == 0})
    first = next(w for w in widths if w >= longest)
    return [w for w in widths if w == first or first < w <= 2 * longest]


RULES = {"powers of two (before)": powers_of_two, "quarter octaves": quarter_octaves,
         "any multiple of 16 (first)": multiples_of_16}


def exact_greedy_calls():
    """One scoring call per exact-greedy step of every synthetic chain: all remaining reasoning tokens scored."""
    for reasoning in np.linspace(_MIN.value, _MAX.value, _CHAINS.value).round().astype(int):
        for left in range(reasoning, int(reasoning * _KEEP_RATIO.value), -1):
            length = _PROMPT.value + left + _ANSWER.value
            yield [packing.ChainSuffixes(np.zeros(length, np.int32), np.arange(_PROMPT.value, _PROMPT.value + left))]


class Replay:
    """Runs pruning modes with SmolLM2 and records every scoring call's suffixes, and how fast this machine compiles
    (XLA, all programs) and runs (token-forwards a second outside compilation)."""

    def __init__(self):
        import jax.monitoring
        from jaxprune.checkpoints import load_model

        self.model, _ = load_model()
        self.compile_seconds = self.run_seconds = 0.0
        self.programs = self.token_forwards = 0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event: str, seconds: float, **kwargs) -> None:
        if event.startswith("/jax/core/compile/"):  # tracing, lowering and XLA's compile of each new program
            self.compile_seconds += seconds

    def calls(self, spec: str) -> list[list[packing.ChainSuffixes]]:
        """Every scoring call's suffixes while mode `spec` prunes the first `--replay_chains` reference chains."""
        from jaxprune.data.prompts import TokenSplit
        from jaxprune.data.records import read_jsonl
        from jaxprune.pruning import scoring
        from jaxprune.pruning.greedy import PruneConfig
        from jaxprune.pruning.methods import make_method

        name, settings = parse_mode(spec)
        method, scorer, calls = make_method(name, **settings), scoring.Scorer(self.model), []
        library_pack = scoring.pack_suffixes

        def recording_pack(chains, *args, **kwargs):
            calls.append(list(chains))
            return library_pack(chains, *args, **kwargs)

        programs, compile_seconds, begin = sum(scoring.compiled_programs().values()), self.compile_seconds, time.time()
        scoring.pack_suffixes = recording_pack
        try:
            for _, record in list(read_jsonl(_REFERENCES.value))[: _REPLAY_CHAINS.value]:
                split = TokenSplit(*(tuple(record[f"{part}_token_ids"]) for part in ("prompt", "reasoning", "answer")))
                method.prune(scorer, split, record, PruneConfig(keep_ratio=0.5))
        finally:
            scoring.pack_suffixes = library_pack
        self.programs += sum(scoring.compiled_programs().values()) - programs
        self.run_seconds += time.time() - begin - (self.compile_seconds - compile_seconds)
        self.token_forwards += scorer.forward_tokens
        return calls

    def estimate_seconds(self, programs: int, token_forwards: int) -> float:
        """Compiling `programs` and running `token_forwards` at this run's mean rates."""
        return programs * self.compile_seconds / self.programs + token_forwards * self.run_seconds / self.token_forwards


def count_shapes(calls, widths) -> tuple[set, int, float]:
    """The distinct kernel shapes `(rows, width, slots)` of the calls packed with row-width rule `widths`, their
    token-forwards, and token-forwards over needed suffix tokens."""
    library_rule, packing.row_widths = packing.row_widths, widths
    try:
        shapes, padded, needed = set(), 0, 0
        for chains in calls:
            rows, width = packing.pack_suffixes(chains, _TOKEN_BUDGET.value).tokens.shape
            slots = packing.round_up(max(len(chain.tokens) for chain in chains), LENGTH_BUCKET)
            for call in packing.call_rows(rows, width, _TOKEN_BUDGET.value):
                shapes.add((call, width, slots))
                padded += call * width
            needed += sum(int(chain.lengths.sum()) for chain in chains)
    finally:
        packing.row_widths = library_rule
    return shapes, padded, padded / needed


def print_table(title: str, calls: list, replay: Replay | None) -> None:
    print(f"{title}\n")
    print("| row widths | kernel programs | distinct row counts / widths / cache slots | token-forwards | "
          "token-forwards / needed |" + (" estimated suffix seconds |" if replay else ""))
    print("| --- | ---: | ---: | ---: | ---: |" + (" ---: |" if replay else ""))
    for name, rule in [("2^k and 3 * 2^k (library, `packing.row_widths`)", packing.row_widths), *RULES.items()]:
        shapes, forwards, padding = count_shapes(calls, rule)
        distinct = " / ".join(str(len({shape[axis] for shape in shapes})) for axis in range(3))
        estimate = f" {replay.estimate_seconds(len(shapes), forwards):,.0f} |" if replay else ""
        print(f"| {name} | {len(shapes)} | {distinct} | {forwards:,} | {padding:.3f} |{estimate}")
    print()


def main(argv):
    del argv
    replay = Replay() if _REPLAY_MODES.value else None
    replayed = {spec: replay.calls(spec) for spec in _REPLAY_MODES.value}
    if replay:
        print(f"replays: {replay.programs} programs compiled in {replay.compile_seconds:.1f} s "
              f"({replay.compile_seconds / replay.programs:.2f} s each), {replay.token_forwards:,} token-forwards in "
              f"{replay.run_seconds:.1f} s besides ({replay.token_forwards / replay.run_seconds:.0f} a second); "
              "the estimates below use these rates\n")
    print_table(f"exact greedy, {_CHAINS.value} synthetic chains of {_MIN.value}-{_MAX.value} reasoning tokens, "
                f"prompt {_PROMPT.value}, answer {_ANSWER.value}, to keep {_KEEP_RATIO.value}, token_budget "
                f"{_TOKEN_BUDGET.value}", list(exact_greedy_calls()), replay)
    for spec, calls in replayed.items():
        print_table(f"{spec}, replayed: {len(calls)} scoring calls over the first {_REPLAY_CHAINS.value} reference "
                    f"chains, to keep 0.5", calls, replay)


if __name__ == "__main__":
    app.run(main)
