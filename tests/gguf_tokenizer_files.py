"""Tiny GGUF files holding only a tokenizer, written with the `gguf` package from tokenizers trained here.

`transformers` reads a GGUF tokenizer from the metadata alone, so no tensors are written. The vocabularies are trained
on CORPUS with the `tokenizers` library so that their merges are real ones (digits, accents, CJK), and each file is laid
out the way llama.cpp's converter lays out the family it imitates.
"""

from __future__ import annotations

import json

from gguf import GGUFWriter, TokenType
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's what we'll do; they're sure I'd've known.",
    "Tom has 3 apples and buys 5 more. 12*34=408, 1234567 + 89 = 1234656, 3.14159 and 2/3 and -17%.",
    "  indented code:\n\tif x == 1:\n\t\treturn y  # two spaces\n\n    four spaces\r\n",
    "café naïve résumé Ünïcödé — ελληνικά and déjà vu, señor; über straße",
    "中文字符和日本語のテキスト、中文和日本語",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "<think>Let me think step by step.</think> The answer is 42.",
]
# Strings the tokenizers are compared on: digits and arithmetic, runs of spaces / newlines / tabs, accents (composed and
# decomposed), CJK and emoji outside the tiny vocabularies (byte fallback), leading and trailing spaces, control tokens
# of each family inside the text.
TEXTS = [
    "Hello world",
    "12*34=408",
    "1234567 + 0.75 = 1234567.75; 1,000,000 and 3/4 and -17",
    "  leading spaces\n\n\tnewlines and tabs  ",
    "a  b   c    d\n \n\t\t x\r\n",
    "café naïve Ünïcödé — ελληνικά, déjà vu, cafe\u0301",
    "中文字符, 日本語のテキスト, 한국어",
    "emoji 😀🧮👍🏽 and ∑√∞",
    " x",
    "   ",
    "\n",
    "It's what we'll do; THEY'RE sure I'D've known",
    "<think>step one</think> answer",
    "a<s>b</s> c<|start|>d<eos>e <bos> f",
]
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_TEMPLATE = ("{{ bos_token }}{% for message in messages %}<|start|>{{ message['role'] }}\n{{ message['content'] }}"
                 "{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|start|>assistant\n{% endif %}")


def _train(pre_tokenizer, vocab_size: int, special: list[str], alphabet: list[str] = ()) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, initial_alphabet=list(alphabet),
                                  show_progress=False)
    tokenizer.train_from_iterator(CORPUS * 3, trainer)
    return tokenizer


def _merges(tokenizer: Tokenizer) -> list[str]:
    return [" ".join(pair) if isinstance(pair, list) else pair
            for pair in json.loads(tokenizer.to_str())["model"]["merges"]]


def write_gguf(path, architecture: str, tokens: list[str], types: list[int], fields: dict, tensors=None) -> str:
    """Writes a GGUF with these tokens, token types and metadata fields, and `tensors` (name -> float32 array in
    numpy order) if given."""
    writer = GGUFWriter(str(path), architecture)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    for name, array in (tensors or {}).items():
        writer.add_tensor(name, array)
    for key, value in fields.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def byte_level_gguf(path, pre: str, architecture: str = "llama", **extra) -> str:
    """A byte-level BPE GGUF whose `tokenizer.ggml.pre` is `pre` (llama-bpe, qwen2, gpt2, ...)."""
    tokens, types, fields = byte_level_tokenizer(pre)
    return write_gguf(path, architecture, tokens, types, fields | extra)


def byte_level_tokenizer(pre: str) -> tuple[list[str], list[int], dict]:
    """Tokens, token types and `tokenizer.*` fields of a byte-level BPE whose `tokenizer.ggml.pre` is `pre`.

    Every vocabulary is trained with Llama 3's split, so it has merges of up to three digits: only the split the
    loader applies for `pre` decides whether they are used (qwen2 cuts digits one by one).
    """
    pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                                             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    special = ["<|begin_of_text|>", "<|end_of_text|>", "<|start|>", "<|pad|>"]
    tokenizer = _train(pre_tokenizer, 700, special, pre_tokenizers.ByteLevel.alphabet())
    tokens = [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    # `<think>` is a user-defined token: matched whole, but not special (it stays when decoding skips specials).
    tokens.append("<think>")
    types = [TokenType.CONTROL] * len(special) + [TokenType.NORMAL] * (len(tokens) - len(special) - 1)
    fields = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre, "tokenizer.ggml.merges": _merges(tokenizer),
              "tokenizer.ggml.bos_token_id": 0, "tokenizer.ggml.eos_token_id": 1,
              "tokenizer.ggml.padding_token_id": 3, "tokenizer.ggml.add_bos_token": True,
              "tokenizer.chat_template": CHAT_TEMPLATE}
    return tokens, types + [TokenType.USER_DEFINED], fields


def sentencepiece_gguf(path, style: str, **extra) -> str:
    """A SentencePiece-style GGUF (no merges: scores and token types), laid out as llama.cpp writes Llama 2 / Mistral
    (`style="llama"`: `<unk> <s> </s>`, bytes, pieces; prefix space) or Gemma 3 (`style="gemma"`: control tokens,
    user-defined runs of newlines, tabs and spaces stored as spaces, bytes, pieces; no prefix space)."""
    prefix = style == "llama"
    metaspace = pre_tokenizers.Metaspace(prepend_scheme="first" if prefix else "never", split=True)
    trained = _train(metaspace, 500, [])
    # SentencePiece ranks pieces by score: merged pieces in merge order first, then the single characters.
    merged = ["".join(merge.split(" ")) for merge in _merges(trained)]
    singles = [token for token in trained.get_vocab() if len(token) == 1 and token not in merged]
    pieces = list(dict.fromkeys(merged + sorted(singles)))
    byte_tokens = [f"<0x{byte:02X}>" for byte in range(256)]
    if prefix:
        control = ["<unk>", "<s>", "</s>"]
        user = []
        head_types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
        head_scores = [0.0] * 3
        ids = {"bos": 1, "eos": 2, "unknown": 0}
    else:
        control = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
        user = ["\n", "\n\n", "\n\n\n", "\t", "\t\t", "  ", "   ", "    "]
        head_types = [TokenType.CONTROL] * len(control) + [TokenType.USER_DEFINED] * len(user)
        head_scores = [-1000.0] * len(head_types)
        ids = {"padding": 0, "eos": 1, "bos": 2, "unknown": 3}
    pieces = [piece for piece in pieces if piece not in user and piece not in control]
    tokens = control + user + byte_tokens + pieces
    types = head_types + [TokenType.BYTE] * 256 + [TokenType.NORMAL] * len(pieces)
    scores = head_scores + [0.0] * 256 + [-float(rank) for rank in range(len(pieces))]
    fields = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "default", "tokenizer.ggml.scores": scores,
              "tokenizer.ggml.add_space_prefix": prefix, "tokenizer.ggml.add_bos_token": True,
              **{f"tokenizer.ggml.{name}_token_id": index for name, index in ids.items()}}
    if not prefix:
        fields["tokenizer.chat_template"] = ("{{ bos_token }}{% for message in messages %}<start_of_turn>"
                                             "{{ message['role'] }}\n{{ message['content'] }}<end_of_turn>\n"
                                             "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n"
                                             "{% endif %}")
    return write_gguf(path, "gemma3" if style == "gemma" else "llama", tokens, types, fields | extra)
