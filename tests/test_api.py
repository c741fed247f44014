"""The Python API: `jaxprune.Pruner` gives the prune CLI's records, in memory, against independent references."""

import json
import subprocess
import sys

import pytest

import jaxprune
from jaxprune.data.records import RecordError
from jaxprune.pruning.greedy import PruneConfig
from jaxprune.pruning.runner import RunConfig, prune_dataset
from tests.test_pruning_exact import naive_greedy

CHAINS = [
    {"id": "a", "question": "Tom has 3 apples and buys 5 more. How many?", "reasoning": "3 + 5 = 8 apples.\n",
     "answer": "#### 8"},
    {"id": 7, "question": "Each ticket costs $6. How much do 5 tickets cost?", "system": "Be brief.",
     "reasoning": "We multiply the price by the number of tickets: 5 * 6 = 30 dollars.\n", "answer": "#### 30"},
]


@pytest.fixture(scope="module")
def pruner(tiny_dir):
    return jaxprune.Pruner(tiny_dir, mesh=None, system_prompt="Solve step by step.")


def test_a_pruned_record_equals_the_prune_clis_and_its_order_naive_greedy(pruner, tiny_dir, tmp_path):
    record = pruner.prune(**{k: CHAINS[1][k] for k in ("question", "reasoning", "answer", "system")}, id=7,
                          keep_ratio=0.5)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(c) + "\n" for c in CHAINS))
    prune_dataset(RunConfig(input=str(tmp_path / "in.jsonl"), output=str(tmp_path / "out.jsonl"),
                            prune=PruneConfig(keep_ratio=0.5), model=tiny_dir, system_prompt="Solve step by step."),
                  *_model(tiny_dir))
    from_file = [json.loads(line) for line in open(tmp_path / "out.jsonl")][1]
    assert record == from_file
    split = pruner._chains.split(CHAINS[1])
    assert record["deletion_order"] == naive_greedy(_model(tiny_dir)[0], split, 0.5, "joint")
    assert record["pruning_mode"] == {"method": "greedy", "dtype": "float32", "exact": True}
    assert record["pruner"] == tiny_dir and record["token_forwards"] > 0


def _model(tiny_dir, cache={}):  # noqa: B006 (one load per test session)
    from jaxprune.checkpoints import load_model

    if tiny_dir not in cache:
        cache[tiny_dir] = load_model(tiny_dir)
    return cache[tiny_dir]


def test_prune_many_takes_a_datasets_dataset_and_keeps_the_order(pruner):
    import datasets

    rows = [dict(c, system=c.get("system", "")) for c in CHAINS]
    table = datasets.Dataset.from_list([dict(r, id=str(r["id"])) for r in rows])
    from_dataset = pruner.prune_many(table, keep_ratio=0.6, progress=False)
    from_list = pruner.prune_many([dict(r, id=str(r["id"])) for r in rows], keep_ratio=0.6, progress=False)
    assert [r["id"] for r in from_dataset] == ["a", "7"]
    assert [r["deletion_order"] for r in from_dataset] == [r["deletion_order"] for r in from_list]


def test_a_chain_that_cannot_be_pruned_is_named_before_any_pruning(pruner):
    before = pruner._chains.scorer.forward_tokens
    with pytest.raises(RecordError, match=r"chains\[1\] \(id 'b'\): empty reasoning"):
        pruner.prune_many([CHAINS[0], dict(CHAINS[0], id="b", reasoning="")], keep_ratio=0.5)
    with pytest.raises(RecordError, match=r"chains\[0\]: missing field 'answer'"):
        pruner.prune_many([{"id": 1, "question": "q", "reasoning": "r"}])
    assert pruner._chains.scorer.forward_tokens == before


def test_methods_and_their_settings_are_chosen_by_keyword(tiny_dir):
    approx = jaxprune.Pruner(tiny_dir, "lazy", mesh=None, top_k=3)
    assert approx.method.name == "lazy" and approx.method.top_k == 3
    record = approx.prune(question=CHAINS[0]["question"], reasoning=CHAINS[0]["reasoning"], answer="#### 8",
                          keep_ratio=0.5)
    assert record["pruning_mode"]["top_k"] == 3 and record["method"] == "lazy"
    with pytest.raises(ValueError, match="method 'greedy' has no setting top_k"):
        jaxprune.Pruner(tiny_dir, mesh=None, top_k=3)


def test_importing_jaxprune_does_not_import_jax():
    code = "import sys, jaxprune; print('jax' in sys.modules); jaxprune.Pruner; print('jax' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True"]
