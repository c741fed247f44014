"""The whole experiment, generate -> prune -> distill -> evaluate -> compare, as one resumable command.

    python -m jaxprune.experiments.pipeline --flagfile=experiments/cpu_distill/pipeline.flags [--dry_run]

Each stage is the stage's own CLI run with a flagfile (`--*_flags`) plus the paths this driver owns under
--work_dir:

    chains/<flagfile name>.jsonl   one generate run per --chain_flags file; chains/train.jsonl joins them
    pruned/<method>.jsonl          each method prunes the training chains once, to the lowest keep ratio (higher
                                   ratios are prefixes of its deletion order)
    students/<name>/               a student per seed: unpruned, and per method and keep ratio (distill CLI)
    eval/<name>.jsonl              its evaluation (evaluate CLI; accuracy in eval/<name>.summary.json)
    report/comparison.*            the table and plot across methods and keep ratios (compare CLI)
    stage_times.jsonl              each stage run's wall time; report/stage_times.md sums them per kind of stage
    compilation_cache/             JAX's persistent cache, shared by the stages (unless JAX_COMPILATION_CACHE_DIR is set)

Students are trained and evaluated seed by seed, so a partial run already compares every method. A stage whose
result exists is skipped, and the pruning and distillation CLIs resume themselves, so rerunning after a kill
continues where it stopped. --dry_run prints the commands instead. Started on every host of a multi-process run
(`--coordinator_address`, see `jaxprune/distributed.py`), it passes the same flags to each stage; --work_dir must
then be a folder every host sees (NFS, a mounted bucket), since finished stages are recognised by their files.
"""

import os
import shlex
import socket
import subprocess
import sys
import time

from absl import app, flags, logging

from jaxprune import distributed, files
from jaxprune.data.records import JsonlAppender, read_jsonl, write_text_atomic
from jaxprune.experiments import cli
from jaxprune.pruning.methods import METHODS

_WORK_DIR = flags.DEFINE_string("work_dir", None, "Where every stage's outputs go.", required=True)
_CHAIN_FLAGS = flags.DEFINE_list("chain_flags", None, "Generate-CLI flagfiles of the training chains (teacher "
                                 "samples or --from_solutions), one run each.", required=True)
_PRUNE_FLAGS = flags.DEFINE_string("prune_flags", None, "Prune-CLI flagfile (pruner, objective, mode).",
                                   required=True)
_DISTILL_FLAGS = flags.DEFINE_string("distill_flags", None, "Distill-CLI flagfile (student, training settings).",
                                     required=True)
_EVALUATE_FLAGS = flags.DEFINE_string("evaluate_flags", None, "Evaluate-CLI flagfile (held-out questions, prompt).",
                                      required=True)
_METHODS = flags.DEFINE_list("methods", ["greedy", "uniform", "surprisal", "h2o"], "Pruning methods compared; the "
                             "first is the reference the others are paired with (greedy, or approx standing in).")
_KEEP_RATIOS = flags.DEFINE_list("keep_ratios", ["0.9", "0.8", "0.7"], "Training keep ratios, each in (0, 1).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Distillation seeds (data order, LoRA initialisation).")
_BASE_MODEL = flags.DEFINE_string("base_model", None, "Also evaluate this model untrained (the student before "
                                  "distillation), as the table's reference row.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands, run nothing.")
STAGE_TIMES = "stage_times.jsonl"


class StageError(ValueError):
    """A stage CLI failed; it printed its own error above, so the pipeline only names the stage (one line)."""


def _cli(module: str, *args: str) -> list[str]:
    """A stage command; in a multi-process run every stage joins it with the same flags (compare needs no JAX)."""
    joined = distributed.join_flags() if module != "compare" else []
    return [sys.executable, "-m", f"jaxprune.experiments.{module}", *args, *joined]


def _run(stage: str, command: list[str], done: bool) -> None:
    text = shlex.join(["python", *command[1:]])
    if _DRY_RUN.value:
        print(("# done: " if done else "") + text)
    elif done:
        logging.info("done already: %s", text)
    else:
        logging.info("running: %s", text)
        started = time.perf_counter()
        returncode = subprocess.run(command, env=stage_environment(_WORK_DIR.value)).returncode
        if returncode:
            raise StageError(f"stage {stage} exited with status {returncode} (its error is above); fix it and rerun: "
                             "finished stages are kept")
        _record_time(stage, time.perf_counter() - started)


def stage_environment(work_dir: str, environ=None) -> dict[str, str]:
    """The stages' environment: JAX's persistent compilation cache under <work_dir>/compilation_cache unless the
    user set one. Every student trains with the same program and every evaluation decodes with the same one, so
    after the first of each a stage loads its programs instead of compiling them (on the 2-core CPU about a minute
    a stage)."""
    env = dict(os.environ if environ is None else environ)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(work_dir, "compilation_cache"))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
    return env


def _record_time(stage: str, seconds: float) -> None:
    """Appends a finished stage's wall time to <work_dir>/stage_times.jsonl (process 0 only: a shared output)."""
    if distributed.process_id() != 0:
        return
    with JsonlAppender(os.path.join(_WORK_DIR.value, STAGE_TIMES)) as times:
        times.append({"id": stage, "stage": stage.split(":")[0], "seconds": round(seconds, 1)})


def stage_time_table(path: str) -> str:
    """Wall time per kind of stage (generate, prune, distill, evaluate, compare) over every run recorded in `path`,
    as a markdown table; a stage run again after a kill counts each time it ran."""
    totals: dict[str, list[float]] = {}
    for _, record in read_jsonl(path):
        totals.setdefault(record["stage"], []).append(record["seconds"])
    lines = ["| stage | runs | minutes |", "| --- | ---: | ---: |"]
    lines += [f"| {stage} | {len(times)} | {sum(times) / 60:.1f} |" for stage, times in totals.items()]
    everything = [t for times in totals.values() for t in times]
    lines.append(f"| all | {len(everything)} | {sum(everything) / 60:.1f} |")
    return "\n".join(lines) + "\n"


def _join(paths: list[str], output: str) -> None:
    """Concatenates the chain files (each line a chain; ids differ between sources) into one, atomically. Each host
    of a multi-process run writes the same bytes under its own temporary name, so none reads a half-written file."""
    if _DRY_RUN.value:
        print(f"# join {' '.join(paths)} -> {output}")
        return
    files.write_atomic(output, (files.read_text(path) for path in paths),
                       temporary=f"{output}.{socket.gethostname()}-{os.getpid()}.tmp")


def _student(name: str, distill_args: list[str]) -> None:
    """Distills one student, then evaluates it."""
    work = _WORK_DIR.value
    output_dir = os.path.join(work, "students", name)
    _run(f"distill:{name}", _cli("distill", f"--flagfile={_DISTILL_FLAGS.value}", *distill_args,
                                 f"--output_dir={output_dir}"),
         done=files.exists(os.path.join(output_dir, "student", "distillation.json")))
    _evaluate(name, os.path.join(output_dir, "student"))


def _evaluate(name: str, model: str) -> None:
    output = os.path.join(_WORK_DIR.value, "eval", f"{name}.jsonl")
    _run(f"evaluate:{name}", _cli("evaluate", f"--flagfile={_EVALUATE_FLAGS.value}", f"--model={model}",
                                  f"--output={output}"),
         done=files.exists(os.path.join(_WORK_DIR.value, "eval", f"{name}.summary.json")))


def main(argv):
    del argv
    work = _WORK_DIR.value
    for path in [*_CHAIN_FLAGS.value, _PRUNE_FLAGS.value, _DISTILL_FLAGS.value, _EVALUATE_FLAGS.value]:
        if not os.path.isfile(path):
            raise app.UsageError(f"flagfile {path} does not exist")
    try:
        keep_ratios = sorted({float(r) for r in _KEEP_RATIOS.value}, reverse=True)
        seeds = [int(s) for s in _SEEDS.value]
    except ValueError as error:
        raise app.UsageError(f"--keep_ratios / --seeds: {error}") from None
    if not _METHODS.value:
        raise app.UsageError("--methods: at least one pruning method")
    unknown = sorted(set(_METHODS.value) - set(METHODS))
    if unknown:
        raise app.UsageError(f"--methods: unknown {unknown}; known: {', '.join(METHODS)}")
    if not all(0 < r < 1 for r in keep_ratios):
        raise app.UsageError(f"--keep_ratios={_KEEP_RATIOS.value}: each must be in (0, 1); 1 is the unpruned "
                             "student, trained anyway")

    stems = [os.path.splitext(os.path.basename(flagfile))[0] for flagfile in _CHAIN_FLAGS.value]
    if len(set(stems)) < len(stems) or "train" in stems:
        raise app.UsageError(f"--chain_flags={','.join(_CHAIN_FLAGS.value)}: flagfile names name the chain files, "
                             "so they must differ (and not be 'train', the joined file)")
    chain_files = []
    for flagfile in _CHAIN_FLAGS.value:
        output = os.path.join(work, "chains", os.path.splitext(os.path.basename(flagfile))[0] + ".jsonl")
        _run(f"generate:{os.path.basename(flagfile)}",
             _cli("generate", f"--flagfile={flagfile}", f"--output={output}"),
             done=files.exists(os.path.splitext(output)[0] + ".summary.json"))
        chain_files.append(output)
    train_chains = os.path.join(work, "chains", "train.jsonl")
    _join(chain_files, train_chains)

    for method in _METHODS.value:
        _run(f"prune:{method}", _cli("prune", f"--flagfile={_PRUNE_FLAGS.value}", f"--method={method}",
                                     f"--keep_ratio={keep_ratios[-1]}", f"--input={train_chains}",
                                     f"--output={os.path.join(work, 'pruned', method + '.jsonl')}"),
             done=False)  # the prune CLI resumes: a finished file costs one model load

    if _BASE_MODEL.value:
        _evaluate("base", _BASE_MODEL.value)
    for seed in seeds:
        # Unpruned: the chains every method pruned (the pruner skips invalid or overlong ones), kept whole.
        _student(f"unpruned-s{seed}", [f"--chains={os.path.join(work, 'pruned', _METHODS.value[0] + '.jsonl')}",
                                       "--keep_ratio=1", f"--seed={seed}"])
        for method in _METHODS.value:
            for ratio in keep_ratios:
                _student(f"{method}-k{ratio:g}-s{seed}", [f"--chains={os.path.join(work, 'pruned', method + '.jsonl')}",
                                                          f"--keep_ratio={ratio}", f"--seed={seed}"])

    _run("compare", _cli("compare", f"--summaries={os.path.join(work, 'eval', '*.summary.json')}",
                         f"--reference={_METHODS.value[0]}", f"--output_dir={os.path.join(work, 'report')}"),
         done=False)
    if not _DRY_RUN.value and distributed.process_id() == 0:
        table = stage_time_table(os.path.join(work, STAGE_TIMES))
        write_text_atomic(os.path.join(work, "report", "stage_times.md"), table)
        logging.info("wall time per stage:\n%s", table)


if __name__ == "__main__":
    cli.run(main)
