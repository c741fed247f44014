"""The one interface every pruning method implements, and the registry the runner and the CLI read.

A method is a small frozen dataclass whose fields are its settings (they become `prune` CLI flags and are recorded
in each output's `pruning_mode`). The runner calls `prepare` once with the dataset's valid chains, then `steps` per
chain (the pruning as a generator of greedy steps to score, so that several chains' steps can share kernel calls;
`prune` is the same run scored one step at a time); `record_fields` adds the method's own fields to each output
record. Methods built from greedy steps subclass `SteppedMethod` and define `steps`; the others define `prune`. A
new method is one module that subclasses `PruningMethod`, decorates the class with `@register`, and is imported in
`methods/__init__.py`.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, ClassVar, Sequence

from jaxprune.data.prompts import TokenSplit
from jaxprune.pruning.greedy import PruneConfig, PruneSteps, PruneTrace, score_alone
from jaxprune.pruning.scoring import Scorer

OnStep = Callable[[int, int], None]  # (deletions done, deletions in total)


@dataclasses.dataclass(frozen=True)
class PruningMethod(abc.ABC):
    name: ClassVar[str]
    help: ClassVar[str]
    # True for methods that build their order step by step and can extend a saved one (resume / lower keep ratio)
    extends_saved_orders: ClassVar[bool] = False

    def check(self) -> None:
        """Raises ValueError on bad settings (called at construction)."""

    def __post_init__(self):
        self.check()

    def prepare(self, chains: Sequence[tuple[dict[str, Any], TokenSplit]], tokenizer, config: PruneConfig) -> None:
        """Dataset-level work before any chain is pruned (every process sees the same chains)."""

    @abc.abstractmethod
    def prune(self, scorer: Scorer, split: TokenSplit, record: dict[str, Any], config: PruneConfig, *,
              start: PruneTrace | None = None, on_step: OnStep | None = None) -> PruneTrace:
        """The chain's deletion order to `config.keep_ratio`, with log-likelihoods."""

    def steps(self, scorer: Scorer, split: TokenSplit, record: dict[str, Any], config: PruneConfig, *,
              start: PruneTrace | None = None, on_step: OnStep | None = None) -> PruneSteps:
        """The pruning as a generator of greedy steps to score (`greedy.PruneSteps`). This default, for methods
        that score no greedy steps, prunes at once and yields nothing."""
        return self.prune(scorer, split, record, config, start=start, on_step=on_step)
        yield  # unreachable: makes this method a generator

    def is_exact(self, dtype: str) -> bool:
        """Whether this method with a model in `dtype` gives the paper's exact greedy orders."""
        del dtype
        return False

    def settings(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.init}

    def mode(self, dtype: str) -> dict[str, Any]:
        """What each record's `pruning_mode` holds: the method's name, its settings, the dtype, exactness."""
        return {"method": self.name, **self.settings(), "dtype": dtype, "exact": self.is_exact(dtype)}

    def record_fields(self) -> dict[str, Any]:
        """Fields of this method's own that each output record carries at top level."""
        return {}


class SteppedMethod(PruningMethod):
    """A method made of greedy steps: it defines `steps`; `prune` scores them one chain at a time."""

    @abc.abstractmethod
    def steps(self, scorer: Scorer, split: TokenSplit, record: dict[str, Any], config: PruneConfig, *,
              start: PruneTrace | None = None, on_step: OnStep | None = None) -> PruneSteps:
        """The chain's greedy steps (see `PruningMethod.steps`)."""

    def prune(self, scorer: Scorer, split: TokenSplit, record: dict[str, Any], config: PruneConfig, *,
              start: PruneTrace | None = None, on_step: OnStep | None = None) -> PruneTrace:
        return score_alone(scorer, self.steps(scorer, split, record, config, start=start, on_step=on_step))


METHODS: dict[str, type[PruningMethod]] = {}


def register(cls: type[PruningMethod]) -> type[PruningMethod]:
    if cls.name in METHODS:
        raise ValueError(f"pruning method {cls.name!r} registered twice")
    METHODS[cls.name] = cls
    return cls


def make_method(name: str, **settings) -> PruningMethod:
    """A registered method by name; `settings` override its defaults."""
    if name not in METHODS:
        raise ValueError(f"unknown pruning method {name!r} (known: {', '.join(METHODS)})")
    cls = METHODS[name]
    known = {field.name for field in dataclasses.fields(cls) if field.init}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"method {name!r} has no setting {', '.join(unknown)} (its settings: "
                         f"{', '.join(sorted(known)) or 'none'})")
    return cls(**settings)
