"""Student examples: pruned reasoning at any keep ratio the chain allows, and loss on the assistant turn only."""

import json
import pathlib

import numpy as np
import pytest

from jaxprune.checkpoints import load_model
from jaxprune.data.records import RecordError
from jaxprune.distill.examples import reasoning_at, training_example
from jaxprune.pruning.greedy import PruneConfig
from jaxprune.pruning.runner import RunConfig, prune_dataset

CHAIN = {"id": "c1", "question": "Each ticket costs $6. How much do 5 tickets cost?", "system": "Be brief.",
         "reasoning": "We multiply the price by the number of tickets: 5 * 6 = 30 dollars.\n", "answer": "#### 30"}


@pytest.fixture(scope="module")
def pruned(tiny_dir, tmp_path_factory):
    """CHAIN pruned to keep 0.5 by the prune runner (uniform baseline, tiny model), and the tokenizer."""
    directory = tmp_path_factory.mktemp("distill")
    (directory / "chains.jsonl").write_text(json.dumps(CHAIN) + "\n")
    model, tokenizer = load_model(tiny_dir)
    config = RunConfig(input=str(directory / "chains.jsonl"), output=str(directory / "pruned.jsonl"),
                       prune=PruneConfig(keep_ratio=0.5), method="uniform")
    prune_dataset(config, model, tokenizer)
    return json.loads((directory / "pruned.jsonl").read_text()), tokenizer


def test_reasoning_at_the_pruned_ratio_is_the_runners_pruned_text(pruned):
    record, tokenizer = pruned
    assert reasoning_at(record, tokenizer, 0.5) == record["pruned_reasoning"] != CHAIN["reasoning"]
    assert reasoning_at(record, tokenizer, 1.0) == CHAIN["reasoning"]
    milder = reasoning_at(record, tokenizer, 0.8)
    assert len(tokenizer(record["pruned_reasoning"]).input_ids) < len(tokenizer(milder).input_ids)
    with pytest.raises(RecordError, match="chain 'c1': field 'deletion_order' has 11 deletions; keep ratio 0.3 needs 16"):
        reasoning_at(record, tokenizer, 0.3)


def test_only_the_assistant_turn_carries_loss(pruned):
    record, tokenizer = pruned
    example = training_example(tokenizer, record, record["pruned_reasoning"])
    rendered = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": CHAIN["question"]},
         {"role": "assistant", "content": record["pruned_reasoning"] + CHAIN["answer"]}], tokenize=False)
    assert tokenizer.decode(example.tokens.tolist()) == rendered
    prompt = tokenizer.decode(example.tokens[~example.loss_mask].tolist())
    assert rendered.startswith(prompt) and prompt.endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(example.tokens[example.loss_mask].tolist()) == rendered[len(prompt):]
    assert np.all(example.loss_mask[np.argmax(example.loss_mask):])  # one contiguous assistant span at the end


def test_distill_cli_trains_and_exports_a_student_transformers_loads(tmp_path, pruned, tiny_dir):
    from conftest import cli

    record, _ = pruned
    chains = tmp_path / "pruned.jsonl"
    chains.write_text(json.dumps(dict(record, pruner=tiny_dir)) + "\n")
    args = [f"--student={tiny_dir}", f"--chains={chains}", "--steps=3", "--batch_size=2", "--max_length=64",
            f"--output_dir={tmp_path / 'out'}"]
    refused = cli("jaxprune.experiments.distill", *args, "--keep_ratio=0.3")
    assert refused.returncode != 0 and f"{chains}:1: field 'deletion_order' has 11 deletions" in refused.stderr
    result = cli("jaxprune.experiments.distill", *args, "--keep_ratio=0.5")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["step"] for line in open(tmp_path / "out" / "metrics.jsonl")] == [1, 2, 3]
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out" / "student"))
    assert student.config.vocab_size == 49152


@pytest.mark.parametrize("mesh", [["--mesh=data=-1"], ["--mesh=data=-1", "--dcn_mesh=data=2"]])
def test_two_processes_train_the_same_student_as_one(tmp_path, pruned, tiny_dir, mesh):
    """Two processes joined by jax.distributed (one CPU device each, batch rows split between them; also as two
    "slices" of a hybrid mesh) export the student one process with one device trains, and only process 0 writes."""
    from conftest import cli, run_processes
    from safetensors.numpy import load_file

    record, _ = pruned
    chains = tmp_path / "pruned.jsonl"
    chains.write_text("".join(json.dumps(dict(record, id=f"c{i}", question=f"{record['question']} ({i} tries)",
                                              pruner=tiny_dir)) + "\n" for i in range(4)))
    args = [f"--student={tiny_dir}", f"--chains={chains}", "--keep_ratio=0.5", "--steps=3", "--batch_size=2",
            "--max_length=64", "--learning_rate=1e-3", "--checkpoint_every=2"]
    single = cli("jaxprune.experiments.distill", *args, f"--output_dir={tmp_path / 'one'}")
    assert single.returncode == 0, single.stderr[-3000:]
    runs = run_processes("jaxprune.experiments.distill", [*args, *mesh, f"--output_dir={tmp_path / 'two'}"], count=2)
    assert all(run.returncode == 0 for run in runs), [run.stderr[-3000:] for run in runs]
    one, two = (load_file(str(tmp_path / name / "student" / "model.safetensors")) for name in ("one", "two"))
    base = load_file(str(next(pathlib.Path(tiny_dir).glob("*.safetensors"))))
    assert one.keys() == two.keys()
    assert any(not np.allclose(one[name], base[name]) for name in one)  # it trained
    for name in one:
        np.testing.assert_allclose(two[name], one[name], atol=1e-5, err_msg=name)
    losses = [[json.loads(line)["loss"] for line in open(tmp_path / name / "metrics.jsonl")] for name in ("one", "two")]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


def test_chains_packaged_as_parquet_read_like_the_jsonl(tmp_path, pruned):
    """Chains shared through `datasets` (a parquet file) give the same records and training examples."""
    import datasets

    from jaxprune.data.records import read_chains

    record, tokenizer = pruned
    records = [dict(record, id=f"c{i}") for i in range(3)]
    (tmp_path / "chains.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    datasets.Dataset.from_list(records).to_parquet(str(tmp_path / "chains.parquet"))
    from_jsonl, from_parquet = (read_chains(str(tmp_path / f"chains.{ext}")) for ext in ("jsonl", "parquet"))
    assert [where for where, _ in from_parquet] == [f"{tmp_path / 'chains.parquet'}:row {i}" for i in (1, 2, 3)]
    for (_, a), (_, b) in zip(from_jsonl, from_parquet):
        assert training_example(tokenizer, a, reasoning_at(a, tokenizer, 0.5)).tokens.tolist() == \
            training_example(tokenizer, b, reasoning_at(b, tokenizer, 0.5)).tokens.tolist()
