"""The LLMLingua-2 baseline: keep probabilities from a token classifier, word mapping, length matching."""

import json

import numpy as np
import pytest

from jaxprune.pruning import llmlingua2
from jaxprune.pruning.greedy import PruneConfig, deletions_for
from jaxprune.pruning.methods import make_method
from jaxprune.pruning.runner import RunConfig, prune_dataset


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, smollm2):
    """A tiny random token classifier (XLM-R architecture, 2 labels) with a fast tokenizer, saved as safetensors."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForTokenClassification

    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=49152, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, num_labels=2, max_position_embeddings=600, pad_token_id=2)
    directory = tmp_path_factory.mktemp("classifier")
    XLMRobertaForTokenClassification(config).eval().save_pretrained(directory)
    smollm2[1].save_pretrained(directory)
    return str(directory)


def test_word_probabilities_are_mean_token_keep_probabilities(classifier_dir):
    import torch

    classifier = llmlingua2.KeepClassifier(classifier_dir)
    text = "Natalia sold 48/2 = 24 clips in May.\nAltogether: 48+24 = 72 clips."
    words, word_probs = classifier.word_probabilities(text)
    assert [text[s:e] for s, e in words][:4] == ["Natalia", "sold", "48/2", "="]
    encoding = classifier.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    with torch.no_grad():
        keep = torch.softmax(classifier.model(torch.tensor([encoding["input_ids"]])).logits[0], -1)[:, 1].numpy()
    for (start, end), probability in zip(words, word_probs):
        inside = [k for k, (s, e) in zip(keep, encoding["offset_mapping"]) if s < end and e > start]
        assert probability == pytest.approx(np.mean(inside), abs=1e-6)


def test_long_text_is_scored_in_chunks_without_gaps(classifier_dir):
    classifier = llmlingua2.KeepClassifier(classifier_dir)
    text = " ".join(f"step {i}: add {i} apples." for i in range(120))
    assert len(classifier.tokenizer(text, add_special_tokens=False).input_ids) > llmlingua2.CHUNK_TOKENS
    words, word_probs = classifier.word_probabilities(text)
    assert len(words) == 5 * 120 and np.all(word_probs > 0)


def test_tokens_map_onto_words_and_whitespace_follows_the_word_before():
    words = [(0, 3), (4, 9), (11, 14)]  # "Tom", "has 3", "ok" in "Tom has3\n\nok"-like spans
    tokens = [(0, 3), (3, 4), (4, 7), (7, 9), (9, 11), (11, 14)]
    assert llmlingua2.token_words(tokens, words).tolist() == [0, 0, 1, 1, 1, 2]
    order = llmlingua2.deletion_order(np.array([0, 0, 1, 1, 1, 2]), np.array([0.9, 0.2, 0.5]))
    assert order == [2, 3, 4, 5, 0, 1]


def test_dataset_rate_search_meets_the_target_mean_keep_ratio():
    rng = np.random.default_rng(0)
    chains = []
    for _ in range(40):
        words = rng.integers(20, 60)
        token_word = np.sort(rng.integers(0, words, rng.integers(words, 2 * words)))
        chains.append((token_word, rng.random(words)))
    rate = llmlingua2.dataset_rate(chains, 0.7)
    ratios = []
    for token_word, word_probs in chains:
        kept = llmlingua2.words_kept_at_rate(word_probs, rate)
        ratios.append(np.mean([w in kept for w in token_word]))
    assert abs(np.mean(ratios) - 0.7) <= 0.005


@pytest.mark.parametrize("matching", ["example", "dataset"])
def test_prune_cli_runs_llmlingua2(tmp_path, smollm2, classifier_dir, matching):
    model, tokenizer = smollm2
    chains = [{"id": f"c{i}", "question": "How many apples?", "answer": "#### 8",
               "reasoning": f"Tom has {i} apples and buys 5 more, so he has {i} + 5 = {i + 5} apples.\n"}
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


def test_llmlingua2_needs_a_classifier(tmp_path):
    with pytest.raises(ValueError, match="--classifier"):
        RunConfig(input="a", output="b", prune=PruneConfig(keep_ratio=0.5), method="llmlingua2")
