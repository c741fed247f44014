"""The tokenizer stored in GGUF metadata, rebuilt as a Hugging Face fast tokenizer with `tokenizers` alone.

A GGUF file carries no `tokenizer.json`: only llama.cpp's description of the vocabulary (tokens, token types, merges or
scores, special token ids, a pre-tokenizer name). We rebuild the equivalent `tokenizers` pipeline from it, so that
loading a GGUF needs neither torch nor `transformers`' GGUF reader (which imports torch). Two families are covered:

- byte-level BPE (`tokenizer.ggml.model == "gpt2"`): GPT-2, SmolLM, Llama 3 (`llama-bpe`), Qwen2; they differ only in
  the regular expression that splits text before the merges;
- SentencePiece BPE (`tokenizer.ggml.model == "llama"`): Llama 2, Mistral, Gemma; the file has scores instead of merges,
  so the merges are derived from the vocabulary and ranked by score (by file position for Gemma).

The tests check each against `AutoTokenizer.from_pretrained(directory, gguf_file=name)` on the same file.
"""

from __future__ import annotations

from jaxprune.checkpoints.build import CheckpointError
from jaxprune.checkpoints.gguf_file import GGUFFile

# The split expressions of the original Hugging Face tokenizers (tiktoken style), by `tokenizer.ggml.pre`. Text is cut
# with them before byte-level encoding, so that merges never cross the boundaries the vocabulary was trained with.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_SPLITS = {"llama-bpe": _LLAMA3_SPLIT, "llama3": _LLAMA3_SPLIT, "qwen2": _QWEN2_SPLIT,
           "deepseek-r1-qwen": _QWEN2_SPLIT}
# GPT-2's own expression, which `ByteLevel(use_regex=True)` applies; SmolLM adds a split into single digits first.
_GPT2_PRES = ("gpt2", "gpt-2", "default", "smollm")
_BYTE_LEVEL_PRES = (*_GPT2_PRES, *_SPLITS)
_MODELS = ("gpt2", "llama")
# Gemma's scores are not its merge order (user-defined and byte tokens all score alike); the order of the tokens in the
# file is, as in the `tokenizer.json` the file was converted from.
_RANK_BY_POSITION = ("gemma", "gemma2", "gemma3")
# llama.cpp token types (gguf.TokenType).
_CONTROL, _USER_DEFINED = 3, 4


def _unsupported(file, key: str, value, supported) -> CheckpointError:
    return CheckpointError(f"{file.path}: field '{key}'={value!r} is not supported (supported: {', '.join(supported)})")


def _byte_level_backend(file, tokens: list[str]):
    """Byte-level BPE: the vocabulary is spelled in GPT-2's byte alphabet, and the file lists the merges."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    pre = file.field("tokenizer.ggml.pre", "default")
    if pre not in _BYTE_LEVEL_PRES:
        raise _unsupported(file, "tokenizer.ggml.pre", pre, _BYTE_LEVEL_PRES)
    merges = file.field("tokenizer.ggml.merges", None)
    if merges is None:
        raise CheckpointError(f"{file.path}: missing metadata field 'tokenizer.ggml.merges' (needed by byte-level BPE)")
    # A token written outside the byte alphabet (a converter's slip, e.g. a raw space) could never come out of the
    # merges; spelling it in the alphabet keeps it reachable and its id where the file put it.
    alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    spell = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    spelled = [t if set(t) <= alphabet else "".join(p for p, _ in spell.pre_tokenize_str(t)) for t in tokens]
    backend = Tokenizer(models.BPE(vocab={token: i for i, token in enumerate(spelled)},
                                   merges=[tuple(merge.split(" ", 1)) for merge in merges],
                                   fuse_unk=False, byte_fallback=False))
    if pre in _SPLITS:
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_SPLITS[pre]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        backend.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                                 if pre == "smollm" else byte_level)
    backend.decoder = decoders.ByteLevel()
    return backend, spelled


def _ranked_merges(tokens: list[str], rank: list[float]) -> list[tuple[str, str]]:
    """The merges a scored vocabulary implies: every split of a token into two tokens, the best-ranked token first.

    SentencePiece merges greedily by the score of the merged token; BPE with this merge order does the same. Ties
    (equal rank) go to the longer left, then longer right piece, then to vocabulary order, which is the order
    `transformers` produces, so the two tokenizers agree on every input, not just on most.
    """
    index = {token: i for i, token in enumerate(tokens)}
    candidates = []
    for order, token in enumerate(tokens):
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in index and right in index:
                candidates.append((-rank[order], -len(left), -len(right), order, index[left], index[right], cut))
    candidates.sort()
    return [(tokens[c[3]][:c[6]], tokens[c[3]][c[6]:]) for c in candidates]


def _sentencepiece_backend(file, tokens: list[str]):
    """SentencePiece BPE: `▁` marks spaces, unknown characters fall back to `<0xNN>` byte tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    # The pre-tokenizer name does not apply: llama.cpp's SentencePiece tokenizer ignores it ('default' in practice).
    architecture = file.field("general.architecture", "")
    if architecture in _RANK_BY_POSITION:
        # Gemma's tokens made of spaces are stored as spaces, while the text reaches the model with `▁` for a space.
        tokens = ["▁" * len(t) if t and set(t) == {" "} else t for t in tokens]
    merges = file.field("tokenizer.ggml.merges", None)
    if merges is not None:
        merges = [tuple(merge.split(" ", 1)) for merge in merges]
    elif architecture in _RANK_BY_POSITION:
        merges = _ranked_merges(tokens, [-float(i) for i in range(len(tokens))])
    else:
        scores = file.field("tokenizer.ggml.scores", None)
        if scores is None:
            raise CheckpointError(f"{file.path}: missing metadata field 'tokenizer.ggml.scores' (needed by "
                                  "SentencePiece without merges)")
        merges = _ranked_merges(tokens, [float(s) for s in scores])
    unknown = file.field("tokenizer.ggml.unknown_token_id", None)
    backend = Tokenizer(models.BPE(vocab={token: i for i, token in enumerate(tokens)}, merges=merges,
                                   unk_token=None if unknown is None else tokens[int(unknown)],
                                   fuse_unk=True, byte_fallback=True))
    # llama.cpp's default is to add the prefix space (Llama 2, Mistral); Gemma files say False. Like Hugging Face's
    # (non-legacy) Llama tokenizer, the prefix goes only before the start of the text, not after each special token.
    prefix = bool(file.field("tokenizer.ggml.add_space_prefix", True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first" if prefix else "never",
                                                     split=False)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    backend.decoder = decoders.Sequence(steps + [decoders.Strip(content=" ", left=1, right=0)] if prefix else steps)
    return backend, tokens


def load_gguf_tokenizer(path: str):
    """Rebuilds the tokenizer stored in GGUF metadata as a `PreTrainedTokenizerFast` (no torch needed)."""
    from tokenizers import AddedToken, processors
    from transformers import PreTrainedTokenizerFast

    file = GGUFFile(path)
    kind = file.field("tokenizer.ggml.model")
    tokens = [str(token) for token in file.field("tokenizer.ggml.tokens")]
    if kind == "gpt2":
        backend, spelled = _byte_level_backend(file, tokens)
    elif kind == "llama":
        backend, spelled = _sentencepiece_backend(file, tokens)
    else:
        raise _unsupported(file, "tokenizer.ggml.model", kind, _MODELS)
    token_types = list(file.field("tokenizer.ggml.token_type", [1] * len(tokens)))
    if len(token_types) != len(tokens):
        raise CheckpointError(f"{path}: field 'tokenizer.ggml.token_type' has {len(token_types)} entries for "
                              f"{len(tokens)} tokens")
    # Control and user-defined tokens are matched whole in the raw text, before any splitting, as llama.cpp does. One
    # the vocabulary had to respell is left to the merges: as an added token it would get a new id.
    entries = list(zip(tokens, spelled, token_types))
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t, s, type_ in entries if type_ == _CONTROL and t == s])
    backend.add_tokens([AddedToken(t, special=False, normalized=False)
                        for t, s, type_ in entries if type_ == _USER_DEFINED and t == s])

    def token(key: str) -> str | None:
        index = file.field(f"tokenizer.ggml.{key}_token_id", None)
        if index is None:
            return None
        if not 0 <= int(index) < len(tokens):
            raise CheckpointError(f"{path}: field 'tokenizer.ggml.{key}_token_id'={index} is outside the vocabulary "
                                  f"(size {len(tokens)})")
        return spelled[int(index)]

    bos, eos = token("bos"), token("eos")
    # A SentencePiece file that does not say adds BOS, which is llama.cpp's default for that vocabulary type.
    add_bos = bool(file.field("tokenizer.ggml.add_bos_token", kind == "llama")) and bos is not None
    add_eos = bool(file.field("tokenizer.ggml.add_eos_token", False)) and eos is not None
    single = " ".join([f"{bos}:0"] * add_bos + ["$A:0"] + [f"{eos}:0"] * add_eos)
    pair = " ".join([single] + [f"{bos}:1"] * add_bos + ["$B:1"] + [f"{eos}:1"] * add_eos)
    special = {t: backend.token_to_id(t) for t in [bos] * add_bos + [eos] * add_eos}
    backend.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                           special_tokens=list(special.items()))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token=eos, unk_token=token("unknown"), pad_token=token("padding"),
        add_bos_token=add_bos, add_eos_token=add_eos, chat_template=file.field("tokenizer.chat_template", None),
        clean_up_tokenization_spaces=False)
