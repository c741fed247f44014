"""Teacher chains: rejection-sample step-by-step solutions, keep the first correct one, filter, write chain JSONL.

    python -m jaxprune.experiments.generate --flagfile=experiments/teacher_generated.flags

Every question's outcome (correct or not) goes to --all_output as soon as it is known, so a killed run resumes; the
chains that pass the SPEC section 2 filters go to --output, which `jaxprune.experiments.prune` reads; accuracy (with
a bootstrap interval), mean reasoning tokens and the filter counts go to `<output>.summary.json`. The record
schema is in `jaxprune/data/questions.py` (questions) and `jaxprune/data/teacher.py` (chains).
"""

import dataclasses
import json
import os

from absl import app, flags, logging

from jaxprune import distributed, files
from jaxprune.checkpoints import DEFAULT_MODEL, DTYPES, ModelSpec
from jaxprune.data.answers import DATASETS
from jaxprune.data.prompts import SYSTEM_PROMPTS
from jaxprune.experiments import cli

_MODEL = flags.DEFINE_string("model", DEFAULT_MODEL, "Teacher: GGUF file, Hugging Face directory, hub id, or "
                             "packaged:NAME.")
_SOURCE = flags.DEFINE_string("source", None, "Questions: .jsonl / .parquet file, a directory with {split}.jsonl, a "
                              "hub id (openai/gsm8k, simplescaling/openaimath, TIGER-Lab/MMLU-Pro), champ, or "
                              "generated:N.", required=True)
_DATASET = flags.DEFINE_enum("dataset", None, DATASETS, "Answer format; inferred from --source when it tells.")
_SPLIT = flags.DEFINE_string("split", "test", "Split of a directory or hub source.")
_SUBSET = flags.DEFINE_string("subset", None, "Hub dataset configuration (openai/gsm8k: main by default).")
_LIMIT = flags.DEFINE_integer("limit", None, "Only the first N questions.")
_OUTPUT = flags.DEFINE_string("output", None, "Filtered chains (JSONL) for the pruner.", required=True)
_ALL_OUTPUT = flags.DEFINE_string("all_output", None, "Every question's outcome, the resume log "
                                  "(default: --output with .all.jsonl).")
_SAMPLES = flags.DEFINE_integer("samples", 10, "Attempts per question at most; the first correct one is kept.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.7, "Sampling temperature; 0 is greedy (use --samples=1).")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 1536, "Longest completion.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Completions per generation call (per host).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (and the seed of generated:N problems).")
_PROMPT = flags.DEFINE_enum("prompt", None, list(SYSTEM_PROMPTS), "Named system prompt; default: the dataset's.")
_SYSTEM_PROMPT = flags.DEFINE_string("system_prompt", None, "System prompt text (overrides --prompt).")
_MIN_REASONING_CHARS = flags.DEFINE_integer("min_reasoning_chars", 100, "Filter: shortest reasoning kept.")
_LENGTH_PERCENTILE = flags.DEFINE_float("length_percentile", None, "Filter: drop chains longer than this "
                                        "percentile (default 99 for GSM8K, 90 for MATH and MMLU-Pro; 100: off).")
_FROM_SOLUTIONS = flags.DEFINE_bool("from_solutions", False, "No sampling: the questions' own worked solutions "
                                     "are the chains (GSM8K train, generated:N; a solution without the dataset's "
                                     "answer marker is judged wrong and filtered); --model then only tokenizes.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", DTYPES, "Teacher dtype.")
_MESH = flags.DEFINE_string("mesh", "data=-1", "This host's device mesh: decode rows over data (and fsdp), "
                            "weights and KV heads over fsdp / tensor, e.g. fsdp=-1 for a model that does not fit one "
                            "device.")


def main(argv):
    del argv
    import jax

    from jaxprune.data.filters import filter_chains
    from jaxprune.data.questions import infer_dataset, load_questions
    from jaxprune.data.records import read_jsonl, write_jsonl_atomic, write_text_atomic
    from jaxprune.data.teacher import REFERENCE_TEACHER, TeacherConfig, reference_chains, sample_chains
    from jaxprune.evaluation import summarize
    from jaxprune.generation import SamplingConfig

    config = TeacherConfig(
        sampling=SamplingConfig(max_new_tokens=_MAX_NEW_TOKENS.value, temperature=_TEMPERATURE.value,
                                top_p=_TOP_P.value),
        samples=_SAMPLES.value, batch_size=_BATCH_SIZE.value, seed=_SEED.value, teacher=_MODEL.value)
    teacher = ModelSpec(_MODEL.value, dtype=_DTYPE.value, mesh=_MESH.value)
    dataset = _DATASET.value or infer_dataset(_SOURCE.value)
    if dataset is None:
        raise app.UsageError(f"--source={_SOURCE.value}: cannot tell the answer format; pass --dataset")
    system = _SYSTEM_PROMPT.value if _SYSTEM_PROMPT.value is not None else SYSTEM_PROMPTS[_PROMPT.value or dataset]
    all_output = _ALL_OUTPUT.value or os.path.splitext(_OUTPUT.value)[0] + ".all.jsonl"
    if files.absolute(all_output) == files.absolute(_OUTPUT.value):
        raise app.UsageError("--all_output must differ from --output")
    questions = load_questions(_SOURCE.value, dataset=dataset, split=_SPLIT.value, subset=_SUBSET.value,
                               limit=_LIMIT.value, seed=_SEED.value)  # bad records fail here, before the model loads
    if not questions:
        raise app.UsageError(f"--source={_SOURCE.value}: no questions")
    logging.info("%d questions from %s (%s)", len(questions), _SOURCE.value, dataset)
    for output in (_OUTPUT.value, all_output):  # an output folder that cannot be made fails before the model loads
        files.make_parent(output)

    distributed.initialize()

    if _FROM_SOLUTIONS.value:
        tokenizer = teacher.tokenizer()
        if jax.process_index() == 0:
            write_jsonl_atomic(all_output, reference_chains(questions, tokenizer, system or None))
        config = dataclasses.replace(config, samples=1, teacher=REFERENCE_TEACHER)
    else:
        model, tokenizer, mesh = teacher.load()  # the weights straight into their shards
        distributed.log_topology(mesh)
        sample_chains(questions, model, tokenizer, config, system or None, all_output,
                      mesh=mesh if mesh.size > 1 else None)
    if jax.process_index() != 0:
        return
    by_id = {str(record["id"]): record for _, record in read_jsonl(all_output)}
    records = [by_id[str(q["id"])] for q in questions if str(q["id"]) in by_id]
    summary = dict(summarize(records), source=_SOURCE.value, split=_SPLIT.value, model=config.teacher,
                   seed=config.seed)
    if not _FROM_SOLUTIONS.value:
        summary.update(samples=config.samples, temperature=config.sampling.temperature,
                       max_new_tokens=config.sampling.max_new_tokens)
    provenance = os.path.join(_MODEL.value, "distillation.json")
    if files.is_file(provenance):  # a student from the distill CLI: what it was trained on
        summary["distillation"] = json.loads(files.read_text(provenance))
    kept, summary["filter_counts"] = filter_chains(records, min_reasoning_chars=_MIN_REASONING_CHARS.value,
                                                   length_percentile=_LENGTH_PERCENTILE.value)
    for reason, number in sorted(summary["filter_counts"].items()):
        logging.info("filter: %s: %d", reason, number)
    write_jsonl_atomic(_OUTPUT.value, kept)
    summary_path = os.path.splitext(_OUTPUT.value)[0] + ".summary.json"
    write_text_atomic(summary_path, json.dumps(summary, indent=2))
    what = "accuracy" if config.samples == 1 else f"yield (a correct chain in {config.samples} samples)"
    low, high = summary["accuracy_ci95"]
    print(f"{what}: {summary['correct']}/{len(records)} = {summary['accuracy']:.1%} (95% bootstrap interval "
          f"{low:.1%}-{high:.1%}), mean reasoning tokens {summary['mean_reasoning_tokens']:.0f}; {len(kept)} chains "
          f"-> {_OUTPUT.value} (all outcomes: {all_output}; summary: {summary_path})")


if __name__ == "__main__":
    cli.run(main)
