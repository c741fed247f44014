"""Analysis report: which functional roles each pruning method keeps, as tables, a plot and a chain viewer.

    python -m jaxprune.experiments.analyze --flagfile=experiments/analyze_cpu.flags

--pruned takes prune-CLI outputs (one per method or objective). Every reasoning token is tagged with its functional
role (`jaxprune/analysis/roles.py`, in the pruner's tokens); the report folder gets patterns.md / patterns.json
(each role's retention and ratio to uniform deletion per method and keep ratio), patterns.png, and chains.html (the
first chains of each file pruned with the first file's pruner, coloured by deletion step or by role).
"""

import collections
import json
import os

from absl import app, flags

_PRUNED = flags.DEFINE_list("pruned", None, "Prune-CLI output files (JSONL), one per method or objective.",
                            required=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Report folder.", required=True)
_KEEP_RATIOS = flags.DEFINE_list("keep_ratios", ["0.9", "0.8", "0.7"], "Keep ratios at which retention is read.")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "Pruner tokenizer (default: each file's `pruner`).")
_VIEW_CHAINS = flags.DEFINE_integer("view_chains", 10, "Chains per file in chains.html.")


def _label(records) -> str:
    """A file's name in the report: its method, with the objective when it is not the joint one."""
    first = records[0][1]
    method, objective = first.get("method", "greedy"), first.get("objective", "joint")
    return method if objective == "joint" or method != "greedy" else f"{method} ({objective})"


def main(argv):
    del argv
    from jaxprune.analysis import patterns
    from jaxprune.analysis.chain_view import html_view
    from jaxprune.checkpoints import load_tokenizer
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
        tokenizer = tokenizers.setdefault(spec, load_tokenizer(spec))
        roles = [patterns.chain_roles(record, tokenizer) for record in records]
        results[label] = patterns.retention(records, roles, keep_ratios)
        if spec == next(iter(tokenizers)):  # the viewer decodes with one tokenizer: the first file's pruner
            views += records[:_VIEW_CHAINS.value]
            view_roles += roles[:_VIEW_CHAINS.value]

    table = patterns.markdown_table(results)
    write_text_atomic(os.path.join(_OUTPUT_DIR.value, "patterns.md"),
                      "Ratio of each role's kept share to the overall kept share (1 = uniform deletion).\n\n" + table)
    write_text_atomic(os.path.join(_OUTPUT_DIR.value, "patterns.json"), json.dumps(results, indent=2))
    patterns.plot(results, os.path.join(_OUTPUT_DIR.value, "patterns.png"))
    write_text_atomic(os.path.join(_OUTPUT_DIR.value, "chains.html"),
                      html_view(views, tokenizers[next(iter(tokenizers))], view_roles))
    print(table)
    print(f"report -> {_OUTPUT_DIR.value}/ (patterns.md, patterns.json, patterns.png, chains.html)")


if __name__ == "__main__":
    app.run(main)
