"""The paper's comparison table: students by pruning method and keep ratio, from evaluation summaries.

    python -m jaxprune.experiments.compare --summaries='outputs/cpu_distill/eval/*.summary.json' \
        --output_dir=outputs/cpu_distill/report

Writes comparison.md (the accuracy table and the paired comparisons with greedy), comparison.json (the same rows) and
comparison.png (accuracy, reasoning length and the paired differences against keep ratio); see
`jaxprune/comparison.py` for what each column means and `jaxprune/statistics.py` for the tests.
"""

import json
import os

from absl import app, flags

from jaxprune import files
from jaxprune.experiments import cli

_SUMMARIES = flags.DEFINE_list("summaries", None, "Evaluation summary files or glob patterns "
                               "(the evaluate CLI's <output>.summary.json).", required=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the table, rows and plot go.", required=True)
_BASE_NAME = flags.DEFINE_string("base_name", "base model", "Row name of models evaluated without distillation.")
_REFERENCE = flags.DEFINE_string("reference", "greedy", "The method every other row is paired with (greedy, or the "
                                 "approximate mode that stood in for it).")


def main(argv):
    del argv
    from jaxprune.comparison import comparison_rows, markdown_table, plot
    from jaxprune.data.records import write_text_atomic

    paths = sorted({path for pattern in _SUMMARIES.value for path in files.glob(pattern)})
    if not paths:
        raise app.UsageError(f"--summaries={','.join(_SUMMARIES.value)}: no files")
    summaries = []
    for path in paths:
        try:
            summaries.append(json.loads(files.read_text(path)))
        except json.JSONDecodeError as error:
            raise app.UsageError(f"{path}:{error.lineno}: not JSON ({error.msg})") from None
        for field in ("accuracy", "correct", "questions", "mean_reasoning_tokens", "outcomes"):
            if field not in summaries[-1]:
                raise app.UsageError(f"{path}: field '{field}' is missing; is it an evaluation summary? (summaries "
                                     "written before per-question outcomes were recorded: evaluate again)")
    try:
        rows = comparison_rows(summaries, _BASE_NAME.value, _REFERENCE.value)
    except ValueError as error:
        raise app.UsageError(f"--summaries: {error}") from None
    table = markdown_table(rows)
    write_text_atomic(os.path.join(_OUTPUT_DIR.value, "comparison.md"), table)
    write_text_atomic(os.path.join(_OUTPUT_DIR.value, "comparison.json"), json.dumps(rows, indent=2))
    plot(rows, os.path.join(_OUTPUT_DIR.value, "comparison.png"))
    print(table)
    print(f"{len(paths)} summaries -> {_OUTPUT_DIR.value}/comparison.{{md,json,png}}")


if __name__ == "__main__":
    cli.run(main)
