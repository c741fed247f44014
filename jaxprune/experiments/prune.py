"""Greedy pruning (or a baseline) of a JSONL file of chains.

    python -m jaxprune.experiments.prune --flagfile=experiments/demo.flags

Input lines need `id`, `question`, `reasoning`, `answer` and optionally `system`; each output line keeps them and
adds the token spans, the deletion order, per-step log-likelihoods and the pruned reasoning (see
`jaxprune/pruning/runner.py`). Settings are checked before the model loads; reruns resume.
"""

from absl import app, flags, logging

from jaxprune import distributed, files
from jaxprune.checkpoints import DEFAULT_MODEL, DTYPES, ModelSpec
from jaxprune.data.prompts import GSM8K_SYSTEM_PROMPT
from jaxprune.experiments import cli
from jaxprune.experiments.method_flags import define_method_flags, method_from_flags
from jaxprune.pruning.greedy import OBJECTIVES, PruneConfig
from jaxprune.pruning.methods import METHODS
from jaxprune.pruning.runner import RunConfig

_MODEL = flags.DEFINE_string("model", DEFAULT_MODEL, "Pruner: GGUF file, Hugging Face directory, hub id, or "
                             "packaged:NAME.")
_INPUT = flags.DEFINE_string("input", None, "JSONL chains (id, question, reasoning, answer[, system]).",
                             required=True)
_OUTPUT = flags.DEFINE_string("output", None, "JSONL output; rerunning resumes it.", required=True)
_KEEP_RATIO = flags.DEFINE_float("keep_ratio", 0.7, "Fraction of reasoning tokens to keep, in [0, 1).")
_OBJECTIVE = flags.DEFINE_enum("objective", "joint", OBJECTIVES, "joint: log p(reasoning left, answer | prompt); "
                               "answer: log p(answer | prompt, reasoning left).")
_METHOD = flags.DEFINE_enum("method", "greedy", list(METHODS), " | ".join(f"{name}: {cls.help.rstrip('.')}"
                                                                          for name, cls in METHODS.items()))
define_method_flags()
_SYSTEM_PROMPT = flags.DEFINE_string("system_prompt", GSM8K_SYSTEM_PROMPT, "System prompt for records without "
                                     "a `system` field ('' for none).")
_ON_INVALID = flags.DEFINE_enum("on_invalid", "skip", ("skip", "fail"), "Chains with empty reasoning, no answer, "
                                "or too long: skip them (counted, logged) or fail.")
_MAX_CHAINS = flags.DEFINE_integer("max_chains", None, "Prune only the first N chains.")
_CHAINS_PER_CALL = flags.DEFINE_integer("chains_per_call", 1, "Chains pruned together, their greedy steps sharing "
                                        "scoring calls (fills the calls of short chains; same orders).")
_TOKEN_BUDGET = flags.DEFINE_integer("token_budget", 4096, "Tokens per scoring call (memory vs. speed).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", DTYPES, "Pruner dtype; bfloat16 is approximate.")
_MESH = flags.DEFINE_string("mesh", "data=-1", "This host's device mesh: candidate rows over data (and fsdp), "
                            "weights over fsdp and tensor, e.g. fsdp=-1 or data=2,fsdp=2,tensor=2. Each host "
                            "prunes its own chains.")
_SHOW = flags.DEFINE_integer("show", 3, "Print this many pruned chains, coloured by deletion step.")
_HTML = flags.DEFINE_string("html", None, "Also write a self-contained HTML view of the output here.")


def main(argv):
    del argv
    try:
        prune = PruneConfig(keep_ratio=_KEEP_RATIO.value, objective=_OBJECTIVE.value)
    except ValueError as error:
        raise cli.FlagError(f"--keep_ratio={_KEEP_RATIO.value}: {error}") from None
    try:
        method = method_from_flags(_METHOD.value)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    try:
        config = RunConfig(input=_INPUT.value, output=_OUTPUT.value, prune=prune, method=method, model=_MODEL.value,
                           system_prompt=_SYSTEM_PROMPT.value or None, on_invalid=_ON_INVALID.value,
                           max_chains=_MAX_CHAINS.value, chains_per_call=_CHAINS_PER_CALL.value,
                           dtype=_DTYPE.value)
        spec = ModelSpec(config.model, dtype=_DTYPE.value, mesh=_MESH.value)
    except ValueError as error:
        raise cli.FlagError(str(error)) from None

    import jax

    from jaxprune.analysis.chain_view import html_view, terminal_view
    from jaxprune.data.records import read_chains, read_jsonl, write_text_atomic
    from jaxprune.pruning.runner import prune_dataset

    read_chains(config.input)  # malformed input fails here, before the model loads
    for output in (config.output, _HTML.value):  # and so does an output folder that cannot be made
        if output:
            files.make_parent(output)
    distributed.initialize()
    # Weights go straight into their shards (fsdp / tensor axes); candidate rows are split over data and fsdp.
    model, tokenizer, mesh = spec.load()
    distributed.log_topology(mesh)
    counts = prune_dataset(config, model, tokenizer, token_budget=_TOKEN_BUDGET.value,
                           mesh=mesh if mesh.size > 1 else None)
    logging.info("done: %s", counts)
    if jax.process_index() != 0:
        return
    records = [record for _, record in read_jsonl(config.output)]
    for record in records[: _SHOW.value]:
        print(terminal_view(record, tokenizer))
    if _HTML.value:
        write_text_atomic(_HTML.value, html_view(records, tokenizer))
        print(f"HTML view: {_HTML.value}")


if __name__ == "__main__":
    cli.run(main)
