"""`distill` as a library call: chains checked before any model loads, and a sharded, rematerialised LoRA run that
exports a student with its provenance."""

import json

import pytest

from jaxprune.data.records import RecordError
from jaxprune.distill.run import DistillConfig, distill
from jaxprune.distill.train import TrainConfig
from test_distill_examples import pruned  # noqa: F401  (the module-scoped fixture: a chain pruned to keep 0.5)


def test_malformed_chains_fail_before_the_student_loads(tmp_path, pruned):  # noqa: F811
    record, _ = pruned
    chains = tmp_path / "pruned.jsonl"
    chains.write_text(json.dumps(dict(record, pruner="tokenizer")) + "\n")
    config = DistillConfig(chains=str(chains), output_dir=str(tmp_path / "out"), train=TrainConfig(steps=1),
                           keep_ratio=0.3, student=str(tmp_path / "no such model"))
    with pytest.raises(RecordError, match=f"{chains}:1: field 'deletion_order' has 11 deletions"):
        distill(config)
    unnamed = tmp_path / "unnamed.jsonl"
    unnamed.write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=f"{unnamed}:1: no field 'pruner'"):
        distill(DistillConfig(chains=str(unnamed), output_dir=str(tmp_path / "out"), train=TrainConfig(steps=1),
                              keep_ratio=0.5, student=str(tmp_path / "no such model")))
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="mesh shape"):
        DistillConfig(chains=str(chains), output_dir="out", train=TrainConfig(steps=1), mesh="data:2")


def test_distill_trains_a_sharded_rematerialised_lora_student_and_records_how(tmp_path, pruned, tiny_dir):  # noqa: F811
    from transformers import AutoModelForCausalLM

    record, _ = pruned
    chains = tmp_path / "pruned.jsonl"
    chains.write_text("".join(json.dumps(dict(record, id=f"c{i}", pruner=tiny_dir)) + "\n" for i in range(4)))
    train = TrainConfig(steps=2, batch_size=4, max_length=64, lora_rank=2, remat="full")
    student_dir = distill(DistillConfig(chains=str(chains), output_dir=str(tmp_path / "out"), train=train,
                                        keep_ratio=0.5, student=tiny_dir, mesh="data=2,fsdp=2,tensor=2"))
    assert student_dir == str(tmp_path / "out" / "student")
    assert [json.loads(line)["step"] for line in open(tmp_path / "out" / "metrics.jsonl")] == [1, 2]
    provenance = json.loads((tmp_path / "out" / "student" / "distillation.json").read_text())
    assert provenance["method"] == "uniform" and provenance["keep_ratio"] == 0.5
    assert provenance["remat"] == "full" and provenance["lora_rank"] == 2 and provenance["examples"] == 4
    assert AutoModelForCausalLM.from_pretrained(student_dir).config.vocab_size == 49152
