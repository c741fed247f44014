"""The README's two commands stay true: CI runs exactly its test command, and the main job's module exists."""

import importlib.util
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())[:2]


def test_ci_runs_exactly_the_readme_test_command():
    _, test_command = readme_commands()
    assert "pytest" in test_command
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci_lines[-1] == test_command


def test_main_command_runs_an_existing_experiment_with_existing_flagfile():
    main_command, _ = readme_commands()
    module = re.search(r"python -m ([\w.]+)", main_command).group(1)
    assert importlib.util.find_spec(module) is not None
    for flagfile in re.findall(r"--flagfile=(\S+)", main_command):
        assert (ROOT / flagfile).is_file()


def test_the_first_python_example_runs_and_prunes_as_naive_greedy_does(smollm2):
    import ast
    import subprocess
    import sys

    from jaxprune.data.prompts import GSM8K_SYSTEM_PROMPT, split_chain
    from tests.test_pruning_exact import naive_batched_greedy

    example = re.findall(r"```python\n(.+?)\n```", (ROOT / "README.md").read_text(), re.S)[0]
    assert "jaxprune.Pruner(" in example
    result = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'method': 'greedy'" in result.stdout and "'exact': True" in result.stdout
    # The example prints the pruned text, the deletion order and the mode: the order must be exact greedy's.
    order = ast.literal_eval(re.search(r"\[[\d, ]+\]", result.stdout).group(0))
    chain = {key: ast.literal_eval(re.search(key + r"=(\"[^\"]*\")", example).group(1))
             for key in ("question", "reasoning", "answer")}
    model, tokenizer = smollm2
    split = split_chain(tokenizer, chain["question"], chain["reasoning"], chain["answer"], GSM8K_SYSTEM_PROMPT)
    width = -(-len(split.chain()) // 32) * 32
    assert order == naive_batched_greedy(model, split, 0.5, "joint", buffer=width, batch=len(split.reasoning))
    kept = [token for i, token in enumerate(split.reasoning) if i not in set(order)]
    assert result.stdout.startswith(tokenizer.decode(kept))
