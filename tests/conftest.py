"""Shared fixtures: 8 simulated CPU devices, tiny random PyTorch reference models, the packaged SmolLM2."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256)
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}


def tiny_torch_model(kind: str, seed: int = 0, **overrides):
    """A tiny random `transformers` model of the given family ('llama', 'llama3', 'qwen2', 'mistral')."""
    import torch
    import transformers

    config_classes = {"llama": transformers.LlamaConfig, "llama3": transformers.LlamaConfig,
                      "qwen2": transformers.Qwen2Config, "mistral": transformers.MistralConfig}
    model_classes = {"llama": transformers.LlamaForCausalLM, "llama3": transformers.LlamaForCausalLM,
                     "qwen2": transformers.Qwen2ForCausalLM, "mistral": transformers.MistralForCausalLM}
    fields = dict(TINY)
    if kind == "llama3":
        fields["rope_parameters"] = dict(LLAMA3_ROPE)
    fields.update(overrides)
    torch.manual_seed(seed)
    model = model_classes[kind](config_classes[kind](**fields)).eval()
    with torch.no_grad():  # biases start at zero; give every parameter some signal
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model


def torch_logits(model, ids: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor(ids)).logits.float().numpy()


@pytest.fixture(scope="session")
def smollm2_path():
    from jaxprune.checkpoints.resolve import packaged_model_path

    return packaged_model_path("SmolLM2-135M-Instruct")


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    """Our SmolLM2 model and tokenizer, loaded once per test session."""
    from jaxprune.checkpoints import load_gguf_model, load_gguf_tokenizer

    return load_gguf_model(smollm2_path), load_gguf_tokenizer(smollm2_path)


@pytest.fixture(scope="session")
def smollm2_torch(smollm2_path):
    """`transformers`' own loading of the same GGUF file (model, tokenizer): the independent reference."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, name = os.path.split(smollm2_path)
    return (AutoModelForCausalLM.from_pretrained(directory, gguf_file=name).eval(),
            AutoTokenizer.from_pretrained(directory, gguf_file=name))
