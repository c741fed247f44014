"""`--model` resolution, GGUF refusals, and the export CLI end to end."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import tiny_torch_model, torch_logits

from jaxprune.checkpoints import CheckpointError, load_gguf_model, load_model


def write_gguf(path, architecture):
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_of_unsupported_architecture_is_refused(tmp_path):
    path = tmp_path / "model.gguf"
    write_gguf(path, "phi3")
    with pytest.raises(CheckpointError, match=r"model\.gguf: field 'general\.architecture'='phi3' is not supported"):
        load_gguf_model(str(path))


def test_file_that_is_not_gguf_is_refused(tmp_path):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"this is not a gguf file at all")
    with pytest.raises(CheckpointError, match=r"broken\.gguf: not a readable GGUF file"):
        load_model(str(path))


def test_pickle_model_file_is_refused(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(CheckpointError, match=r"model\.bin: a model file must be GGUF"):
        load_model(str(path))


@pytest.mark.parametrize("spec, message", [("./no/such/dir", "not an existing file or directory"),
                                           ("packaged:NoSuchModel", "unknown packaged model")])
def test_unresolvable_model_values_are_refused(spec, message):
    with pytest.raises(CheckpointError, match=message):
        load_model(spec)


def test_default_model_resolves_to_packaged_smollm2(smollm2_path):
    from jaxprune.checkpoints.resolve import DEFAULT_MODEL, local_model_path

    assert local_model_path(DEFAULT_MODEL) == smollm2_path
    assert os.path.getsize(smollm2_path) > 50_000_000


def test_export_cli_converts_a_directory_that_transformers_reloads(tmp_path):
    import transformers

    reference = tiny_torch_model("qwen2", tie_word_embeddings=True)
    reference.save_pretrained(tmp_path / "source")
    result = subprocess.run([sys.executable, "-m", "jaxprune.experiments.export", f"--source={tmp_path / 'source'}",
                             f"--output={tmp_path / 'out'}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path / "out"))
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids = np.random.RandomState(0).randint(0, 128, (1, 12))
    np.testing.assert_allclose(torch_logits(reloaded, ids), torch_logits(reference, ids), atol=1e-5, rtol=0)


def test_export_of_packaged_smollm2_reloads_in_transformers(smollm2, smollm2_torch, tmp_path):
    import transformers

    from jaxprune.checkpoints import save_hf_model

    model, tokenizer = smollm2
    save_hf_model(model, str(tmp_path), tokenizer)
    reloaded_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = "<|im_start|>user\nJohn has 12 pencils.<|im_end|>"
    assert reloaded_tokenizer(text).input_ids == tokenizer(text).input_ids
    assert reloaded_tokenizer.chat_template == tokenizer.chat_template
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = np.asarray([tokenizer(text).input_ids])
    np.testing.assert_allclose(torch_logits(reloaded, ids), torch_logits(smollm2_torch[0], ids), atol=1e-5, rtol=0)
