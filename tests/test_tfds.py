"""Chains as a TFDS ArrayRecord dataset: records come back exactly, the distill CLI trains on the same batches as
from the JSONL and resumes at the loader position its checkpoint saved, each process reads only its own rows, and
refusals name the file, line or record and the field."""

import json

import grain
import numpy as np
import pytest

from jaxprune.data.records import RecordError
from jaxprune.data.tfds_chains import TfdsChains, export_chains
from jaxprune.distill.run import DistillConfig, distill
from jaxprune.distill.streamed import EpochSampler
from jaxprune.distill.train import TrainConfig, example_indices


def chain(id, question, reasoning_token_ids, deletion_order, **extra):
    """A pruned record as the prune CLI writes it (the tokens are SmolLM2 ids; the tiny test model's tokenizer)."""
    return {"id": id, "question": question, "reasoning": f"Work for {question}", "answer": "#### 30",
            "reasoning_token_ids": reasoning_token_ids, "deletion_order": deletion_order, "method": "greedy",
            "pruning_mode": {"method": "greedy", "exact": True, "top_k": None}, "keep_ratio": 0.5,
            "step_log_likelihoods": {"joint": [-1.2345678901234567, -2.5], "answer": [-0.1, -0.30000000000000004]},
            "original_log_likelihoods": {"joint": -3.141592653589793, "answer": -0.05}, "token_forwards": 2**40,
            "is_correct": True, "notes": [], **extra}


# Hand-written: ids of both types, `system` in some records only, a null setting, unicode, floats float32 would round.
CHAINS = [
    chain("c0", "Each ticket costs $6. How much do 5 tickets cost?", [1206, 2340, 314, 253, 30, 216, 38],
          [3, 0, 5, 1], system="Be brief."),
    chain(7, "Zoë has 12 pears and eats 4. How many are left?", [504, 1234, 77, 2048, 9, 310], [5, 2, 0]),
    chain("c2", "A box holds 8 eggs. How many eggs are in 3 boxes?", [88, 99, 111, 222, 333, 444, 555, 666],
          [7, 6, 1, 0], system="Show your work.", is_correct=False),
    chain("c3", "What is 15 + 27?", [401, 402, 403, 404, 405, 406], [0, 1, 2], pruning_mode={"method": "greedy",
          "exact": False, "top_k": 4}),
    chain("c4", "Half of 90 is what?", [1500, 1600, 1700, 1800, 1900, 2000, 2100], [6, 5, 4, 3]),
]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
    return str(path)


def test_every_record_comes_back_from_the_arrayrecord_dataset_exactly_as_its_jsonl_line(tmp_path):
    import tensorflow_datasets as tfds
    from conftest import cli

    jsonl = write_jsonl(tmp_path / "pruned.jsonl", CHAINS)
    output = tmp_path / "tfds" / "pruned_chains"
    result = cli("jaxprune.experiments.export_tfds", f"--chains={jsonl}", f"--output={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"--chains=tfds:{output}" in result.stdout
    assert list(output.glob("1.0.0/pruned_chains-train.array_record-*"))
    builder = tfds.builder_from_directory(str(output / "1.0.0"))
    assert set(builder.info.features.keys()) == {field for record in CHAINS for field in record}  # one per field
    chains = TfdsChains(f"tfds:{output}")
    assert [where for where, _ in chains] == [f"tfds:{output}[{i}]" for i in range(len(CHAINS))]
    assert [record for _, record in chains] == CHAINS  # every value, floats to the last bit, absent stays absent
    assert chains[1][1]["id"] == 7 and "system" not in chains[1][1]
    again = cli("jaxprune.experiments.export_tfds", f"--chains={jsonl}", f"--output={output}")
    assert again.returncode == 2 and f"{output} already exists" in again.stderr.strip().splitlines()[-1]


@pytest.fixture
def batches(monkeypatch):
    """Every batch `train` feeds its step, as numpy (tokens, loss mask, valid)."""
    from jaxprune.distill import train as train_module

    seen, real = [], train_module.train_step

    def recording(graphdef, frozen, trainable, opt_state, tokens, loss_mask, valid, **settings):
        seen.append([np.asarray(field) for field in (tokens, loss_mask, valid)])
        return real(graphdef, frozen, trainable, opt_state, tokens, loss_mask, valid, **settings)

    monkeypatch.setattr(train_module, "train_step", recording)
    return seen


def test_distill_from_tfds_trains_on_the_jsonl_batches_and_a_rerun_resumes_at_the_saved_position(
        tmp_path, tiny_dir, batches):
    records = [dict(record, pruner=tiny_dir) for record in CHAINS]
    jsonl = write_jsonl(tmp_path / "pruned.jsonl", records)
    dataset = export_chains(jsonl, str(tmp_path / "tfds" / "pruned_chains"))

    def run(chains, output, steps):  # 4 rows a batch over 5 chains: batches straddle epochs
        distill(DistillConfig(chains=chains, output_dir=str(tmp_path / output), keep_ratio=0.5, student=tiny_dir,
                              train=TrainConfig(steps=steps, batch_size=4, max_length=96, seed=3),
                              mesh="data=2,fsdp=2,tensor=2"))  # one row per device pair: the placed path
        taken = list(batches)
        batches.clear()
        return taken

    from_jsonl = run(jsonl, "jsonl", steps=4)
    first = run(dataset, "tfds", steps=2)
    assert (tmp_path / "tfds" / "checkpoints" / "2" / "data_loader" / "process_0-of-1.json").is_file()
    resumed = run(dataset, "tfds", steps=4)  # the rerun continues from step 2's checkpoint
    assert len(from_jsonl) == 4 and len(first) == 2 and len(resumed) == 2
    # A resumed loader that restarted at the first example would feed batches 1-2 again, which differ:
    assert any((a != b).any() for a, b in zip(from_jsonl[0], from_jsonl[2]))
    for step, (expected, got) in enumerate(zip(from_jsonl, first + resumed), start=1):
        for name, a, b in zip(("tokens", "loss_mask", "valid"), expected, got):
            np.testing.assert_array_equal(b, a, err_msg=f"step {step} {name}")
    provenance = json.loads((tmp_path / "tfds" / "student" / "distillation.json").read_text())
    assert provenance["examples"] == 5 and provenance["method"] == "greedy"


@pytest.mark.parametrize("rows", [[[0, 1], [2, 3]], [[0, 2], [1, 3]]], ids=["blocks", "interleaved"])
def test_each_of_two_processes_reads_only_its_rows_of_the_batches_the_jsonl_order_gives(tmp_path, rows):
    chains = TfdsChains(export_chains(write_jsonl(tmp_path / "c.jsonl", CHAINS), str(tmp_path / "tfds" / "c")))
    steps, batch_size, seed = 4, 4, 3
    whole = np.full((steps, batch_size), -1)
    for process in (0, 1):  # grain's per-process shard of the one sampler, as each host builds it
        loader = grain.DataLoader(data_source=chains, sampler=EpochSampler(len(chains), seed, batch_size, rows, steps),
                                  shard_options=grain.sharding.ShardOptions(shard_index=process, shard_count=2),
                                  worker_count=0)
        read = [CHAINS.index(record) for _, record in loader]
        assert len(read) == steps * len(rows[process])  # its own rows, nothing more
        for element, index in enumerate(read):
            step, row = divmod(element, len(rows[process]))
            whole[step, rows[process][row]] = index
    for step in range(steps):
        assert whole[step].tolist() == example_indices(step * batch_size, batch_size, len(chains), seed).tolist()


def test_refusals_name_the_file_line_or_record_and_the_field(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [CHAINS[0], dict(CHAINS[2], **{"bad-name": 1})])
    with pytest.raises(RecordError, match=f"{bad}:2: field 'bad-name' cannot be a TFDS feature name"):
        export_chains(bad, str(tmp_path / "tfds" / "bad"))
    good = write_jsonl(tmp_path / "good.jsonl", CHAINS)
    with pytest.raises(RecordError, match="'Bad-Name' must be lower case"):
        export_chains(good, str(tmp_path / "tfds" / "Bad-Name"))
    with pytest.raises(RecordError, match="'mnist' is the name of a dataset TFDS ships"):
        export_chains(good, str(tmp_path / "tfds" / "mnist"))
    with pytest.raises(RecordError, match="tfds:/nowhere/chains: no TFDS dataset there"):
        TfdsChains("tfds:/nowhere/chains")
    unpruned = [CHAINS[0], {k: v for k, v in CHAINS[1].items() if k != "deletion_order"}]
    dataset = export_chains(write_jsonl(tmp_path / "unpruned.jsonl", unpruned), str(tmp_path / "tfds" / "unpruned"))
    config = DistillConfig(chains=dataset, output_dir=str(tmp_path / "out"), train=TrainConfig(steps=1),
                           keep_ratio=0.5, pruner="unused", student=str(tmp_path / "no such model"))
    with pytest.raises(RecordError, match=rf"{dataset}\[1\]: field 'deletion_order' is missing"):
        distill(config)  # before the student loads


def test_two_processes_reading_their_shards_of_the_dataset_train_the_student_one_process_trains_from_jsonl(
        tmp_path, tiny_dir):
    """Two processes joined by jax.distributed, each with one CPU device and its own grain shard (one row of each
    batch), export the student one process trains from the JSONL; both runs stop after step 2 and are rerun to step 3
    (the learning-rate schedule follows --steps, so both do the same)."""
    from conftest import cli, run_processes
    from safetensors.numpy import load_file

    jsonl = write_jsonl(tmp_path / "pruned.jsonl", [dict(record, pruner=tiny_dir) for record in CHAINS])
    dataset = export_chains(jsonl, str(tmp_path / "tfds" / "pruned_chains"))
    args = [f"--student={tiny_dir}", "--keep_ratio=0.5", "--batch_size=2", "--max_length=96", "--learning_rate=1e-3"]
    for steps in (2, 3):
        single = cli("jaxprune.experiments.distill", *args, f"--chains={jsonl}", f"--steps={steps}",
                     f"--output_dir={tmp_path / 'one'}")
        assert single.returncode == 0, single.stderr[-3000:]
        runs = run_processes("jaxprune.experiments.distill", [*args, f"--chains={dataset}", f"--steps={steps}",
                                                              f"--output_dir={tmp_path / 'two'}"], count=2)
        assert all(run.returncode == 0 for run in runs), [run.stderr[-3000:] for run in runs]
    assert {"process_0-of-2.json", "process_1-of-2.json"} <= {  # each process's position, in the checkpoint
        p.name for p in (tmp_path / "two" / "checkpoints" / "3" / "data_loader").iterdir()}
    one, two = (load_file(str(tmp_path / name / "student" / "model.safetensors")) for name in ("one", "two"))
    for name in one:
        np.testing.assert_allclose(two[name], one[name], atol=1e-5, err_msg=name)
    losses = [[json.loads(line)["loss"] for line in open(tmp_path / name / "metrics.jsonl")] for name in ("one", "two")]
    assert len(losses[0]) == 3
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
