"""What pruning a chain costs: token-forwards, FLOPs and weight traffic of the greedy kernel, and chains per hour.

Greedy pruning of a chain with prompt P, reasoning N and answer A tokens down to keep ratio k takes
S = N - int(N k) steps. At a step with n reasoning tokens left (sequence length L = P + n + A) the kernel runs one
base pass over L tokens, then, for each candidate at reasoning index i, only the queries after it, minus the one the
base pass already predicts: L - 2 - (P + i) of them. A step therefore costs

    L + n (n - 1) / 2 + n (A - 1)   token-forwards     (full recomputation per candidate, as in the authors' code:
                                                        L + n L)

Deleting `deletions_per_step` tokens at once divides the number of steps; lazy greedy scores only
`candidates_per_step` candidates per step after its first (the cost then depends on where they sit: the bound below
assumes the earliest, the dearest).
A token-forward costs 2 x (matrix parameters) FLOPs plus 4 x layers x heads x head_dim x context for attention.
Kernel calls hold at most `token_budget` tokens and read every weight once, which bounds the time from below by
weight traffic as well as by FLOPs.
"""

from __future__ import annotations

import dataclasses
import math

from jaxprune.models.config import ModelConfig
from jaxprune.pruning.greedy import deletions_for


@dataclasses.dataclass(frozen=True)
class Chip:
    """One accelerator chip: peak dense bfloat16 FLOP/s, HBM bandwidth and size (published figures)."""

    name: str
    peak_flops: float
    bandwidth: float
    memory: float


CHIPS = {  # TPU figures from Google Cloud's TPU pages; GPUs dense (no sparsity), SXM
    "v5e": Chip("TPU v5e", 197e12, 819e9, 16 * 2**30),
    "v5p": Chip("TPU v5p", 459e12, 2765e9, 95 * 2**30),
    "v6e": Chip("TPU v6e", 918e12, 1640e9, 32 * 2**30),
    "v4": Chip("TPU v4", 275e12, 1228e9, 32 * 2**30),
    "h100": Chip("NVIDIA H100 SXM", 989e12, 3.35e12, 80e9),
    "h200": Chip("NVIDIA H200", 989e12, 4.8e12, 141e9),
}


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """Peak dense bfloat16 FLOP/s and memory bandwidth of a whole machine (all its chips)."""

    name: str
    peak_flops: float
    bandwidth: float   # bytes / s
    memory: float      # bytes


def machine(chip: str, chips: int, name: str) -> Accelerator:
    c = CHIPS[chip]
    return Accelerator(name, chips * c.peak_flops, chips * c.bandwidth, chips * c.memory)


ACCELERATORS = {
    "tpu-v5e-8": machine("v5e", 8, "TPU v5e-8 (8 chips)"),
    "tpu-v5p-8": machine("v5p", 4, "TPU v5p-8 (4 chips)"),
    "tpu-v6e-8": machine("v6e", 8, "TPU v6e-8 (8 chips)"),
    "h100": machine("h100", 1, "NVIDIA H100 SXM"),
    "h200": machine("h200", 1, "NVIDIA H200"),
}


def step_token_forwards(prompt: int, reasoning_left: int, answer: int, candidates: int | None = None,
                        shared_prefix: bool = True) -> int:
    """Token-forwards of one greedy step with `reasoning_left` tokens; `candidates` scored (default: all; lazy greedy
    scores fewer, here the earliest ones)."""
    n = reasoning_left
    length = prompt + n + answer
    scored = n if candidates is None else min(candidates, n)
    if not shared_prefix:
        return length + scored * length
    return length + sum(max(length - 2 - (prompt + i), 0) for i in range(scored))


def _steps(reasoning: int, keep_ratio: float, deletions_per_step: int) -> list[int]:
    """Reasoning tokens left at each scoring step."""
    target, deleted, left = deletions_for(reasoning, keep_ratio), 0, []
    while deleted < target:
        left.append(reasoning - deleted)
        deleted += min(deletions_per_step, target - deleted)
    return left


def chain_token_forwards(prompt: int, reasoning: int, answer: int, keep_ratio: float, *, deletions_per_step: int = 1,
                         candidates_per_step: int | None = None, shared_prefix: bool = True) -> int:
    """Token-forwards to prune one chain down to `keep_ratio` (including the final pass that measures it)."""
    left = _steps(reasoning, keep_ratio, deletions_per_step)
    final = reasoning - deletions_for(reasoning, keep_ratio)
    return sum(step_token_forwards(prompt, n, answer, candidates_per_step, shared_prefix) for n in left) + (
        prompt + final + answer)


def matrix_parameters(config: ModelConfig) -> int:
    """Parameters a token multiplies through: attention and MLP projections of every layer, and the output head."""
    c = config
    attention = c.hidden_size * (c.num_heads + 2 * c.num_kv_heads) * c.head_dim + c.num_heads * c.head_dim * c.hidden_size
    mlp = 3 * c.hidden_size * c.intermediate_size
    return c.num_layers * (attention + mlp) + c.hidden_size * c.vocab_size


def flops_per_token(config: ModelConfig, context: int) -> float:
    """Forward FLOPs of one token attending to `context` keys."""
    return 2.0 * matrix_parameters(config) + 4.0 * config.num_layers * config.num_heads * config.head_dim * context


def chain_cost(config: ModelConfig, prompt: int, reasoning: int, answer: int, keep_ratio: float, *,
               deletions_per_step: int = 1, candidates_per_step: int | None = None, shared_prefix: bool = True,
               token_budget: int = 65536, bytes_per_parameter: int = 2) -> dict[str, float]:
    """Token-forwards, FLOPs (attention context taken as the whole chain, an upper bound) and the bytes of matrix
    weights read (once per kernel call; the input embedding is only gathered)."""
    forwards = chain_token_forwards(prompt, reasoning, answer, keep_ratio, deletions_per_step=deletions_per_step,
                                    candidates_per_step=candidates_per_step, shared_prefix=shared_prefix)
    calls, kv_bytes = 1, 0.0  # the final base pass; then per step a base pass and the candidate calls
    kv_per_slot = 2 * config.num_layers * config.num_kv_heads * config.head_dim * bytes_per_parameter
    for n in _steps(reasoning, keep_ratio, deletions_per_step):
        candidates = step_token_forwards(prompt, n, answer, candidates_per_step, shared_prefix) - (prompt + n + answer)
        calls += 1 + math.ceil(candidates / token_budget)
        if shared_prefix:  # each packed row (about one longest suffix wide) reads its copy of the prefix cache
            kv_bytes += candidates / max(n + answer - 2, 1) * (prompt + n + answer) * kv_per_slot
    return {"token_forwards": forwards,
            "flops": forwards * flops_per_token(config, prompt + reasoning + answer),
            "weight_bytes": calls * matrix_parameters(config) * bytes_per_parameter, "kv_bytes": kv_bytes}


def chains_per_hour(cost: dict[str, float], accelerator: Accelerator, utilisation: float = 1.0) -> float:
    """Chains an hour when FLOPs run at `utilisation` of peak, or the bytes read (weights once per kernel call, the
    prefix cache once per packed row) stream at full bandwidth if that is slower: with utilisation 1, the
    roofline, a bound no implementation beats."""
    memory = cost["weight_bytes"] + cost.get("kv_bytes", 0.0)
    seconds = max(cost["flops"] / (accelerator.peak_flops * utilisation), memory / accelerator.bandwidth)
    return 3600.0 / seconds


# What one compiled program computes, counted the way XLA does (dense attention over every key slot, masked or not),
# so that the count can be checked against `compiled.cost_analysis()` (`jaxprune/compile_check.py`).

def matmul_flops(config: ModelConfig, *, tokens: int, head_tokens: int) -> float:
    """The weight matmuls of a forward of `tokens` tokens, with the vocabulary layer run for `head_tokens` of them
    (all, when every token is scored; the last one, when only the next token is picked)."""
    head = config.hidden_size * config.vocab_size
    return 2.0 * tokens * (matrix_parameters(config) - head) + 2.0 * head_tokens * head


def attention_flops(config: ModelConfig, *, tokens: int, keys: int) -> float:
    """Scores and weighted values of `tokens` queries over `keys` slots each, in every layer and head."""
    return 4.0 * config.num_layers * config.num_heads * config.head_dim * tokens * keys


def forward_flops(config: ModelConfig, *, tokens: int, keys: int, head_tokens: int) -> float:
    return matmul_flops(config, tokens=tokens, head_tokens=head_tokens) + attention_flops(config, tokens=tokens,
                                                                                           keys=keys)


def train_step_flops(config: ModelConfig, *, batch: int, length: int, remat: str) -> float:
    """Model FLOPs of one optimizer step on `batch` sequences of `length` tokens: forward plus backward (twice the
    forward: gradients of activations and of weights; LoRA needs the latter too, for the merged weight), plus one
    more forward of the layers when they are rematerialised in full."""
    tokens = batch * length
    forward = forward_flops(config, tokens=tokens, keys=length, head_tokens=tokens)
    layers_only = forward - 2.0 * tokens * config.hidden_size * config.vocab_size
    return 3.0 * forward + (layers_only if remat == "full" else 0.0)
