"""Evaluation of a model (a distilled student) on held-out questions: greedy answers, checked, summarised.

    python -m jaxprune.experiments.evaluate --model=outputs/student/student --source=experiments/data/gsm8k \
        --split=test --limit=200 --max_new_tokens=1536 --output=outputs/eval/student.jsonl

This is the generate CLI with evaluation defaults (one greedy answer per question, SPEC section 5): every outcome
goes to `<output>.all.jsonl`, and accuracy with its 95% bootstrap interval and the mean reasoning tokens to
`<output>.summary.json`.
"""

from absl import flags

from jaxprune.experiments import cli, generate

EVALUATION_DEFAULTS = {"samples": 1, "temperature": 0.0, "min_reasoning_chars": 0, "length_percentile": 100.0}

if __name__ == "__main__":
    for name, value in EVALUATION_DEFAULTS.items():
        flags.FLAGS.set_default(name, value)
    cli.run(generate.main)
