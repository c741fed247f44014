"""Analysis report: which functional roles each pruning method keeps, as tables, a plot and a chain viewer.

    python -m jaxprune.experiments.analyze --flagfile=experiments/analyze_cpu.flags

--pruned takes prune-CLI outputs (one per method or objective). Every reasoning token is tagged with its functional
role (`jaxprune/analysis/roles.py`, in the pruner's tokens); the report folder gets patterns.md / patterns.json
(each role's retention and ratio to uniform deletion per method and keep ratio), patterns.png, and chains.html (the
first chains of each file pruned with the first file's pruner, coloured by deletion step or by role). With the
pruner loaded: importance.md / importance.json (--importance_chains chains of the greedy file, or of an approximate
mode's when there is none: attention received against the deletion step, an MLP from attention to post-deletion
likelihood, re-evaluated against first rankings) and preservation.md / .json / .png (--preservation_chains per file:
the teacher's answer reached from the pruned reasoning at each keep ratio), and annotation.json (--annotate_chains:
the model labels roles itself, agreement with the tagger). Everything lands in report.md too.
"""

import collections
import json
import os

from absl import app, flags, logging

from jaxprune.checkpoints.spec import DTYPES
from jaxprune.experiments import cli

_PRUNED = flags.DEFINE_list("pruned", None, "Prune-CLI output files (JSONL), one per method or objective.",
                            required=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Report folder.", required=True)
_KEEP_RATIOS = flags.DEFINE_list("keep_ratios", ["0.9", "0.8", "0.7"], "Keep ratios at which retention is read.")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "Pruner tokenizer (default: each file's `pruner`).")
_VIEW_CHAINS = flags.DEFINE_integer("view_chains", 10, "Chains per file in chains.html.")
_MODEL = flags.DEFINE_string("model", None, "Pruner for the model-based analyses (default: the first file's "
                             "`pruner`).")
_IMPORTANCE_CHAINS = flags.DEFINE_integer("importance_chains", 0, "Greedy chains for attention-vs-pruning and "
                                          "dynamic-vs-static importance (0: skip; needs the model).")
_PRESERVATION_CHAINS = flags.DEFINE_integer("preservation_chains", 0, "Chains per file for answer preservation "
                                            "(0: skip; needs the model).")
_ANNOTATE_CHAINS = flags.DEFINE_integer("annotate_chains", 0, "Chains the model labels with functional roles, "
                                        "compared with the deterministic tagger (0: skip).")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 256, "Answer preservation: tokens decoded at most.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", DTYPES, "Pruner dtype for the model-based analyses.")
_MESH = flags.DEFINE_string("mesh", "data=-1", "Device mesh for the model-based analyses: rows over data (and "
                            "fsdp), weights over fsdp and tensor, e.g. fsdp=-1.")


GREEDY_SIDE = ("greedy", "approx", "lazy", "k_per_step")  # exact greedy first, then the modes that approximate it


def _label(records) -> str:
    """A file's name in the report: its method, with the objective when it is not the joint one."""
    first = records[0][1]
    method, objective = first.get("method", "greedy"), first.get("objective", "joint")
    return method if objective == "joint" or method != "greedy" else f"{method} ({objective})"


def main(argv):
    del argv
    from jaxprune.analysis import patterns
    from jaxprune.analysis.chain_view import html_view
    from jaxprune.checkpoints import ModelSpec
    from jaxprune.data.records import RecordError, read_chains, write_text_atomic

    try:
        keep_ratios = sorted((float(r) for r in _KEEP_RATIOS.value), reverse=True)
    except ValueError as error:
        raise app.UsageError(f"--keep_ratios: {error}") from None
    files = collections.OrderedDict()
    for path in _PRUNED.value:
        records = read_chains(path)
        for where, record in records:
            for field in ("reasoning_token_ids", "deletion_order"):
                if not isinstance(record.get(field), list):
                    raise RecordError(f"{where}: field '{field}' is missing; --pruned takes the prune CLI's output")
        if not records:
            raise app.UsageError(f"{path}: no chains")
        label = _label(records)
        if label in files:
            label = f"{label} [{os.path.basename(path)}]"
        files[label] = [record for _, record in records]

    tokenizers = {}
    results, views, view_roles = {}, [], []
    for label, records in files.items():
        spec = _TOKENIZER.value or records[0].get("pruner")
        if not spec:
            raise app.UsageError(f"{label}: records name no `pruner`; pass --tokenizer")
        if spec not in tokenizers:
            tokenizers[spec] = ModelSpec(spec).tokenizer()
        tokenizer = tokenizers[spec]
        roles = [patterns.chain_roles(record, tokenizer) for record in records]
        results[label] = patterns.retention(records, roles, keep_ratios)
        if spec == next(iter(tokenizers)):  # the viewer decodes with one tokenizer: the first file's pruner
            views += records[:_VIEW_CHAINS.value]
            view_roles += roles[:_VIEW_CHAINS.value]

    sections = ["# Analysis report", "", "## Functional roles kept, against uniform deletion", "",
                "Ratio of each role's kept share to the overall kept share (1 = uniform deletion).", "",
                patterns.markdown_table(results)]
    write_text_atomic(os.path.join(_OUTPUT_DIR.value, "patterns.md"), "\n".join(sections[4:]))
    write_text_atomic(os.path.join(_OUTPUT_DIR.value, "patterns.json"), json.dumps(results, indent=2))
    patterns.plot(results, os.path.join(_OUTPUT_DIR.value, "patterns.png"))
    write_text_atomic(os.path.join(_OUTPUT_DIR.value, "chains.html"),
                      html_view(views, tokenizers[next(iter(tokenizers))], view_roles))
    if _IMPORTANCE_CHAINS.value or _PRESERVATION_CHAINS.value or _ANNOTATE_CHAINS.value:
        sections += _model_analyses(files)
    write_text_atomic(os.path.join(_OUTPUT_DIR.value, "report.md"), "\n".join(sections))
    print("\n".join(sections))
    print(f"report -> {_OUTPUT_DIR.value}/report.md (tables), patterns.png, chains.html")


def _model_analyses(files) -> list[str]:
    """Attention / dynamic importance on the greedy chains, answer preservation per file and the LLM annotator, with
    the pruner (files pruned by another model are left out of these)."""
    from tqdm import tqdm

    from jaxprune.analysis import annotator, importance, preservation
    from jaxprune.checkpoints import ModelSpec
    from jaxprune.data.records import write_text_atomic

    spec = _MODEL.value or next(iter(files.values()))[0].get("pruner")
    if not spec:
        raise app.UsageError("records name no `pruner`; pass --model")
    model, tokenizer, _ = ModelSpec(spec, dtype=_DTYPE.value, mesh=_MESH.value).load()  # scorer, decoder follow it
    # Token ids only mean something to the pruner that wrote them.
    files = {label: records for label, records in files.items() if records[0].get("pruner", spec) == spec}
    sections = []
    # The greedy side: exact greedy's file if there is one, else the approximate mode standing in for it.
    method = lambda label: label.split(" ")[0]  # noqa: E731
    greedy = sorted((label for label in files if method(label) in GREEDY_SIDE),
                    key=lambda label: (GREEDY_SIDE.index(method(label)), label))
    if _IMPORTANCE_CHAINS.value and greedy:
        records = files[greedy[0]][:_IMPORTANCE_CHAINS.value]
        progress = tqdm(total=len(records), desc="attention and re-scoring", unit="chain")
        report = importance.importance_report(model, records, objective=records[0].get("objective", "joint"),
                                              progress=progress.update)
        progress.close()
        write_text_atomic(os.path.join(_OUTPUT_DIR.value, "importance.json"), json.dumps(report, indent=2))
        summary = importance.markdown_summary(report)
        write_text_atomic(os.path.join(_OUTPUT_DIR.value, "importance.md"), summary)
        sections += ["## Attention and dynamic importance (" + greedy[0] + ")", "", summary]
    elif _IMPORTANCE_CHAINS.value:
        logging.warning("--importance_chains: no file of pruner %s by %s among --pruned; skipped", spec,
                        " / ".join(GREEDY_SIDE))
    if _PRESERVATION_CHAINS.value:
        ratios = sorted({1.0, *(float(r) for r in _KEEP_RATIOS.value)}, reverse=True)
        results = {label: preservation.answer_preservation(model, tokenizer, records[:_PRESERVATION_CHAINS.value],
                                                           ratios, max_new_tokens=_MAX_NEW_TOKENS.value)
                   for label, records in files.items()}
        write_text_atomic(os.path.join(_OUTPUT_DIR.value, "preservation.json"), json.dumps(results, indent=2))
        table = preservation.markdown_table(results)
        write_text_atomic(os.path.join(_OUTPUT_DIR.value, "preservation.md"), table)
        preservation.plot(results, os.path.join(_OUTPUT_DIR.value, "preservation.png"))
        sections += ["## Answer preservation (the pruner reaches the teacher's answer from the pruned reasoning)", "",
                     table]
    if _ANNOTATE_CHAINS.value:
        records = next(iter(files.values()))[:_ANNOTATE_CHAINS.value]
        result = annotator.agreement(records, annotator.model_completer(model, tokenizer))
        write_text_atomic(os.path.join(_OUTPUT_DIR.value, "annotation.json"), json.dumps(result, indent=2))
        sections += ["## LLM annotator against the deterministic tagger", "",
                     f"{spec} labelled {result['labelled_by_llm']} of {result['words']} words of "
                     f"{len(records)} chains; agreement {result['agreement']:.3f}, Cohen's kappa "
                     f"{result['cohen_kappa']:.3f} (prompt: `jaxprune/analysis/annotator.py`).", ""]
    return sections


if __name__ == "__main__":
    cli.run(main)
