"""Pruning from Python: `jaxprune.Pruner`, the prune CLI's work without files.

    import jaxprune
    pruner = jaxprune.Pruner("packaged:SmolLM2-135M-Instruct")
    record = pruner.prune(question="...", reasoning="...", answer="#### 8", keep_ratio=0.7)
    record["pruned_reasoning"], record["deletion_order"]

A record is exactly what the prune CLI writes for the chain (README: token spans, `deletion_order`, step
log-likelihoods, `pruning_mode`, `token_forwards`, `pruned_reasoning`, ...). `prune_many` takes chain dicts (`id`,
`question`, `reasoning`, `answer`, optional `system`) or a `datasets.Dataset` with those columns, checks every one
before any pruning, lets the method see them all (LLMLingua-2's dataset-level rate), and returns the records in order.
"""

from __future__ import annotations

from typing import Any, Iterable

from absl import logging
from tqdm import tqdm

from jaxprune.checkpoints import DEFAULT_MODEL, LoadedModel, ModelSpec
from jaxprune.data.prompts import GSM8K_SYSTEM_PROMPT
from jaxprune.data.records import RecordError, check_fields
from jaxprune.pruning.chain_pruner import ChainPruner, SkippedChain
from jaxprune.pruning.greedy import PruneConfig
from jaxprune.pruning.methods import PruningMethod, make_method


class Pruner:
    """A pruner model with one method. `model` is any `--model` spec (packaged:NAME, a GGUF file, a Hugging Face
    directory or hub id), a `ModelSpec` (a pinned revision, its own dtype and mesh) or a `LoadedModel` already in
    memory (`pruner_name` then names it in the records); `method` a registered name with its settings as keyword
    arguments (`Pruner(m, "approx", top_k=16)`) or a `PruningMethod`; `dtype` and `mesh` go with a model named by a
    string: `mesh` a mesh shape such as "fsdp=-1" (weights split over this host's devices, candidate rows over data
    and fsdp), a `jax.sharding.Mesh`, or None for one device. The attributes `model` and `tokenizer` hold what was
    loaded, the model's weights placed on the mesh."""

    def __init__(self, model: str | ModelSpec | LoadedModel = DEFAULT_MODEL, method: PruningMethod | str = "greedy",
                 *, dtype: str = "float32", mesh: Any = "data=-1", token_budget: int = 4096,
                 system_prompt: str | None = GSM8K_SYSTEM_PROMPT, pruner_name: str | None = None,
                 **method_settings):
        if isinstance(method, str):
            method = make_method(method, **method_settings)
        elif method_settings:
            raise ValueError(f"settings {sorted(method_settings)} go with a method name, not a method object")
        if isinstance(model, LoadedModel):
            loaded, name = model, pruner_name or "in-memory model"
        else:
            if isinstance(model, str):
                model = ModelSpec(model, dtype=dtype, mesh=mesh if isinstance(mesh, str) else "data=1")
            loaded, name = model.load(mesh=None if mesh is None or isinstance(mesh, str) else mesh), model.model
        self.tokenizer = loaded.tokenizer
        self.model = loaded.model  # public so a user can see where the weights that prune live (their shardings)
        self._chains = ChainPruner(loaded.model, loaded.tokenizer, method, model_name=name,
                                   system_prompt=system_prompt, token_budget=token_budget,
                                   mesh=loaded.mesh if loaded.mesh.size > 1 else None)

    @property
    def method(self) -> PruningMethod:
        return self._chains.method

    def prune(self, question: str, reasoning: str, answer: str, *, keep_ratio: float = 0.7, objective: str = "joint",
              system: str | None = None, id: str | int = "chain",  # noqa: A002 (the record field)
              thinking: bool = False) -> dict[str, Any]:
        """The pruned record of one chain (`system` overrides the pruner's system prompt; `thinking`: the reasoning
        sits in a `<think>` block, as reasoning models write it)."""
        record = {"id": id, "question": question, "reasoning": reasoning, "answer": answer}
        if thinking:
            record["thinking"] = True
        if system is not None:
            record["system"] = system
        return self.prune_many([record], keep_ratio=keep_ratio, objective=objective, progress=False)[0]

    def prune_many(self, chains: Iterable[dict[str, Any]], *, keep_ratio: float = 0.7, objective: str = "joint",
                   progress: bool = True) -> list[dict[str, Any]]:
        """The pruned records of `chains` (dicts or a `datasets.Dataset`), in order. A chain that cannot be pruned
        (empty reasoning, no answer, longer than the model's context) is an error naming its position and id,
        raised before any pruning."""
        config = PruneConfig(keep_ratio=keep_ratio, objective=objective)
        records = [dict(chain) for chain in chains]
        splits = []
        for index, record in enumerate(records):
            where = f"chains[{index}]"
            check_fields(record, where)
            try:
                splits.append(self._chains.split(record))
            except SkippedChain as reason:
                raise RecordError(f"{where} (id {record['id']!r}): {reason}") from None
        self._chains.prepare(list(zip(records, splits)), config)
        pruned = []
        for index, (record, split) in enumerate(tqdm(list(zip(records, splits)), desc=f"pruning ({self.method.name})",
                                                     unit="chain", disable=not progress)):
            pruned.append(self._chains.prune(record, split, config, where=f"chains[{index}]"))
        logging.info("pruned %d chains with %s", len(pruned), self.method.name)
        return pruned
