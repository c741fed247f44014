"""jaxprune: greedy pruning of LLM reasoning tokens in JAX."""

__version__ = "0.1.0"
