"""The LLMLingua-2 / TokenSkip baseline: our labels against the `llmlingua` package's own, word mapping, lengths."""

import json
import string

import numpy as np
import pytest

from jaxprune.pruning import llmlingua2
from jaxprune.pruning.greedy import PruneConfig, deletions_for
from jaxprune.pruning.methods import make_method
from jaxprune.pruning.runner import RunConfig, prune_dataset

WORDS = ("Step Natalia sold clips in May Altogether she the answer is apples and pears Each ticket costs dollars so "
         "tickets cost add Done We multiply price by number of has buys more").split()


def _xlmr_style_tokenizer():
    """A small SentencePiece-style (Unigram, '▁' word starts) tokenizer built here, wrapped as XLM-R's."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import XLMRobertaTokenizerFast

    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    characters = sorted(set(string.ascii_letters + string.digits + string.punctuation))
    pieces = ([(s, 0.0) for s in special] + [("▁" + w, -2.0) for w in WORDS] + [(w.lower(), -4.0) for w in WORDS]
              + [("▁", -5.0)] + [(c, -8.0) for c in characters] + [("▁" + c, -7.0) for c in characters])
    vocab = list(dict(reversed(pieces)).items())[::-1]  # first occurrence of each piece, in order
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    tokenizer.normalizer = normalizers.Replace("\n", " ")
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return XLMRobertaTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """A tiny random XLM-R token classifier (2 labels) with its tokenizer, saved as safetensors. The folder name holds
    'xlm-roberta-large' because the llmlingua package picks its word rules by model name."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForTokenClassification

    tokenizer = _xlmr_style_tokenizer()
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, num_labels=2, max_position_embeddings=520,
                              pad_token_id=tokenizer.pad_token_id)
    directory = tmp_path_factory.mktemp("models") / "tiny-xlm-roberta-large"
    model = XLMRobertaForTokenClassification(config).eval()
    with torch.no_grad():  # a classifier whose keep probabilities spread over (0, 1)
        model.classifier.weight.mul_(40.0)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


CHAIN = ("Step 1: Natalia sold 48/2 = 24 clips in May.\nStep 2: Altogether she sold 48 + 24 = 72 clips.\n"
         "Step 3: : : the answer is 72.\nEach ticket costs 6 dollars, so 5 tickets cost 30 dollars.")
LONG = " ".join(f"Step {i}: she sold {i} clips and {i + 1} apples in May. We add the price." for i in range(40))


@pytest.mark.parametrize("rate", [0.3, 0.5, 0.7, 0.9])
def test_kept_words_equal_the_llmlingua_packages_own_compression(classifier_dir, monkeypatch, rate):
    import tiktoken
    from llmlingua import PromptCompressor

    # llmlingua asks tiktoken for GPT-3.5's encoding, which tiktoken downloads: give it the bundled copy.
    monkeypatch.setattr(tiktoken, "encoding_for_model", lambda name: llmlingua2.counting_encoding())
    reference = PromptCompressor(model_name=classifier_dir, device_map="cpu", use_llmlingua2=True,
                                 model_config={"trust_remote_code": False})
    ours = llmlingua2.Compressor(classifier_dir)
    assert len(ours.tokenizer.tokenize(LONG)) > llmlingua2.WINDOW  # several chunks
    for text in (CHAIN, LONG):
        result = reference.compress_prompt([text], rate=rate, force_tokens=["Step", ":"], force_reserve_digit=True,
                                           drop_consecutive=True, return_word_label=True)
        theirs = [pair.rsplit(" ", 1) for pair in result["fn_labeled_original_prompt"].split("\t\t|\t\t")]
        chunks = ours.chunks(text)
        labels = ours.keep_labels(chunks, rate)
        mine = [[word.lstrip("▁"), str(int(label))] for chunk, chunk_labels in zip(chunks, labels)
                for word, label in zip(chunk.words, chunk_labels)]
        assert mine == theirs
        assert 0 < sum(int(label) for _, label in mine) < len(mine)


def test_words_are_located_in_order_and_tokens_take_the_word_they_overlap():
    text = "Tom has 3\n\nok"
    assert llmlingua2.word_spans(text, ["▁Tom", "▁has", "▁3", "▁ok", "▁zzz"]) == [(0, 3), (4, 7), (8, 9), (11, 13),
                                                                                   None]
    tokens = [(0, 3), (3, 4), (4, 7), (7, 9), (9, 11), (11, 13)]  # "Tom", " ", "has", " 3", "\n\n", "ok"
    token_word = llmlingua2.token_words(tokens, [(0, 3), (4, 7), (8, 9), None, (11, 13)])
    assert token_word.tolist() == [0, 0, 1, 2, 2, 4]
    assert llmlingua2.deletion_order(token_word, np.array([0.9, 0.2, 0.5, 0.0, 0.7])) == [2, 3, 4, 5, 0, 1]


def test_dataset_rate_search_meets_the_target_or_returns_the_closest():
    assert abs(llmlingua2.dataset_rate(lambda rate: rate ** 2, 0.49) ** 2 - 0.49) <= llmlingua2.RATE_TOLERANCE
    steps = lambda rate: 0.5 if rate < 0.6 else 0.9  # noqa: E731  (cannot reach 0.7)
    assert steps(llmlingua2.dataset_rate(steps, 0.7)) in (0.5, 0.9)


def test_a_classifier_without_word_start_markers_is_refused(tmp_path, smollm2):
    smollm2[1].save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="XLM-R-style classifier tokenizer"):
        llmlingua2.Compressor(str(tmp_path))


@pytest.mark.parametrize("matching", ["example", "dataset"])
def test_prune_runs_llmlingua2_and_keeps_forced_words(tmp_path, smollm2, classifier_dir, matching):
    model, tokenizer = smollm2
    chains = [{"id": f"c{i}", "question": "How many apples?", "answer": "#### 8",
               "reasoning": f"Step 1: Tom has {i} apples and buys 5 more, so he has {i} + 5 = {i + 5} apples.\n"}
              for i in range(3)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chains))
    config = RunConfig(input=str(tmp_path / "in.jsonl"), output=str(tmp_path / "out.jsonl"),
                       prune=PruneConfig(keep_ratio=0.6), system_prompt="Solve it.",
                       method=make_method("llmlingua2", classifier=classifier_dir, length_matching=matching))
    prune_dataset(config, model, tokenizer)
    records = [json.loads(line) for line in open(tmp_path / "out.jsonl")]
    assert len(records) == 3
    for record in records:
        n = len(record["reasoning_token_ids"])
        assert len(set(record["deletion_order"])) == len(record["deletion_order"]) and max(record["deletion_order"]) < n
        assert record["method"] == "llmlingua2" and record["length_matching"] == matching
        if matching == "example":
            assert len(record["deletion_order"]) == deletions_for(n, 0.6)
        kept = record["pruned_reasoning"]
        assert "Step" in kept and all(digit in kept for digit in "15")  # forced: 'Step', ':' and digits


def test_llmlingua2_needs_a_classifier(tmp_path):
    with pytest.raises(ValueError, match="--classifier"):
        RunConfig(input="a", output="b", prune=PruneConfig(keep_ratio=0.5), method="llmlingua2")


def test_dataset_matching_keeps_the_words_compress_prompt_keeps_at_one_rate_meeting_the_mean_ratio(
        tmp_path, smollm2, classifier_dir, monkeypatch):
    import tiktoken
    from llmlingua import PromptCompressor

    model, tokenizer = smollm2
    chains = [{"id": f"c{i}", "question": "How many clips?", "answer": "#### 8",
               "reasoning": " ".join(f"Step {j}: Natalia sold {i + j} clips in May and she buys more apples."
                                     for j in range(2 + i)) + "\n"} for i in range(6)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chains))
    config = RunConfig(input=str(tmp_path / "in.jsonl"), output=str(tmp_path / "out.jsonl"),
                       prune=PruneConfig(keep_ratio=0.35), system_prompt="Solve it.",
                       method=make_method("llmlingua2", classifier=classifier_dir, length_matching="dataset"))
    prune_dataset(config, model, tokenizer)
    records = [json.loads(line) for line in open(tmp_path / "out.jsonl")]
    rates = {record["llmlingua2_rate"] for record in records}
    assert len(rates) == 1  # one rate for the whole dataset
    kept = [1 - len(r["deletion_order"]) / len(r["reasoning_token_ids"]) for r in records]
    # The mean is matched (a fixed rate of 0.35 keeps 0.374 here), not each chain; forced words make rate != ratio.
    assert abs(np.mean(kept) - 0.35) <= 0.01 and np.ptp(kept) > 0
    monkeypatch.setattr(tiktoken, "encoding_for_model", lambda name: llmlingua2.counting_encoding())
    reference = PromptCompressor(model_name=classifier_dir, device_map="cpu", use_llmlingua2=True,
                                 model_config={"trust_remote_code": False})
    for record in records:  # each chain keeps what the llmlingua package keeps at that rate
        result = reference.compress_prompt([record["reasoning"]], rate=record["llmlingua2_rate"],
                                           force_tokens=["Step", ":"], force_reserve_digit=True,
                                           drop_consecutive=True, return_word_label=True)
        labelled = [pair.rsplit(" ", 1) for pair in result["fn_labeled_original_prompt"].split("\t\t|\t\t")]
        assert "".join(record["pruned_reasoning"].split()) == "".join(w for w, label in labelled if label == "1")
