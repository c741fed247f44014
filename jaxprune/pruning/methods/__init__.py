"""Pruning methods, one module each behind `base.PruningMethod`; importing a module registers its methods.

`METHODS` maps each name (the `prune --method` flag and each record's `method`) to its class; `make_method` builds
one with its settings.
"""

# Registration order is the order the CLI lists them in: greedy methods, then the baselines.
from jaxprune.pruning.methods import greedy, certified, auto, lazy  # noqa: F401, I001 (imported to register)
from jaxprune.pruning.methods import uniform, surprisal, h2o, llmlingua2  # noqa: F401, I001
from jaxprune.pruning.methods.base import METHODS, PruningMethod, make_method, register

__all__ = ["METHODS", "PruningMethod", "make_method", "register"]
