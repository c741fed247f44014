"""Shared fixtures: 8 simulated CPU devices, tiny random PyTorch reference models, the packaged SmolLM2."""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # libtpu is installed for the compile check; no test wants a TPU

import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# The checkout: the relative paths of tests, flagfiles and CLIs mean it, wherever pytest is started from.
ROOT = pathlib.Path(__file__).resolve().parent.parent

ONE_DEVICE = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # CLI runs as a user would start it

TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256)
# Every Gemma 3 feature in three layers: local / global layers with their own rotary bases (the global one scaled),
# a window shorter than the test sequences, query_pre_attn_scalar unlike head_dim, final-logit soft-capping.
GEMMA3 = dict(num_hidden_layers=3, head_dim=16, query_pre_attn_scalar=24, sliding_window=8,
              layer_types=["sliding_attention", "full_attention", "sliding_attention"], final_logit_softcapping=3.0,
              rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6},
                               "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}


def tiny_torch_model(kind: str, seed: int = 0, **overrides):
    """A tiny random `transformers` model of the given family ('llama', 'llama3', 'qwen2', 'qwen3', 'mistral',
    'gemma3')."""
    import torch
    import transformers

    config_classes = {"llama": transformers.LlamaConfig, "llama3": transformers.LlamaConfig,
                      "qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config,
                      "mistral": transformers.MistralConfig, "gemma3": transformers.Gemma3TextConfig}
    model_classes = {"llama": transformers.LlamaForCausalLM, "llama3": transformers.LlamaForCausalLM,
                     "qwen2": transformers.Qwen2ForCausalLM, "qwen3": transformers.Qwen3ForCausalLM,
                     "mistral": transformers.MistralForCausalLM, "gemma3": transformers.Gemma3ForCausalLM}
    fields = dict(TINY)
    if kind == "llama3":
        fields["rope_parameters"] = dict(LLAMA3_ROPE)
    if kind == "gemma3":
        fields.update(GEMMA3)
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


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, smollm2):
    """A tiny random Llama with SmolLM2's tokenizer and chat template, saved as a Hugging Face directory."""
    from flax import nnx

    from jaxprune.checkpoints import save_hf_model
    from jaxprune.models import Llama, ModelConfig

    config = ModelConfig(model_type="llama", vocab_size=49152, hidden_size=32, intermediate_size=64, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=8, max_position_embeddings=256, tie_word_embeddings=True,
                         eos_token_ids=(2,))
    directory = tmp_path_factory.mktemp("tiny")
    save_hf_model(Llama(config, rngs=nnx.Rngs(0)), str(directory), smollm2[1])
    return str(directory)


def cli(module: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Runs `python -m module args` as a user would (one device), capturing its output."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout,
                          env=ONE_DEVICE, cwd=ROOT)


def kill_after_lines(module: str, args, path, lines: int) -> int:
    """Starts `python -m module args`, kills it with SIGKILL once `path` has `lines` lines; returns the lines
    written by then."""
    process = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=ONE_DEVICE, cwd=ROOT)
    deadline = time.time() + 300
    while time.time() < deadline and (not path.exists() or path.read_text().count("\n") < lines):
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return path.read_text().count("\n")


def run_processes(module: str, args, count: int, timeout: int = 600) -> list[subprocess.CompletedProcess]:
    """Runs `count` processes of `python -m module args` as one multi-process JAX run on this machine."""
    import socket

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    processes = [subprocess.Popen([sys.executable, "-m", module, *args, f"--coordinator_address=localhost:{port}",
                                   f"--num_processes={count}", f"--process_id={index}"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=ONE_DEVICE) for index in range(count)]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


def scripted_model(tokenizer, first_after: int, script: str, hidden_size: int = 64):
    """A real Llama whose weights make it a bigram machine: after `first_after` it writes the tokens of `script`,
    then end-of-turn. Attention and MLP outputs are zero, so the next token depends on the current one only: each
    token of the chain gets its own unit embedding, and the head maps it onto its successor."""
    from flax import nnx

    from jaxprune.models import Llama, ModelConfig

    script_ids = tokenizer(script, add_special_tokens=False).input_ids
    chain = [first_after, *script_ids, tokenizer.eos_token_id]
    assert len(set(chain[:-1])) == len(chain) - 1 <= hidden_size, "a bigram script needs distinct tokens"
    config = ModelConfig(model_type="llama", vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=32,
                         num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8, max_position_embeddings=512,
                         tie_word_embeddings=False, eos_token_ids=(tokenizer.eos_token_id,))
    model = Llama(config, rngs=nnx.Rngs(0))
    embed = np.zeros((config.vocab_size, hidden_size), np.float32)
    head = np.zeros((hidden_size, config.vocab_size), np.float32)
    for slot, (token, successor) in enumerate(zip(chain, chain[1:])):
        embed[token, slot] = 1.0
        head[slot, successor] = 10.0
    model.embed_tokens[...] = embed
    model.lm_head.kernel[...] = head
    for layer in model.layers:
        layer.self_attn.o_proj.kernel[...] = np.zeros_like(layer.self_attn.o_proj.kernel[...])
        layer.mlp.down_proj.kernel[...] = np.zeros_like(layer.mlp.down_proj.kernel[...])
    return model
