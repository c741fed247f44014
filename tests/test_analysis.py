"""Analysis statistics on constructed inputs with known answers: functional roles (a hand-labelled passage covering
every priority rule) and pruning patterns (planted deletion orders)."""

import math

import pytest

from jaxprune.analysis.patterns import markdown_table, plot, retention
from jaxprune.analysis.roles import CATEGORIES, tag_words, token_roles

QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
            "How many clips did Natalia sell altogether?")
S, M, C, E, V, F = CATEGORIES  # symbolic math, meta-discourse, coreference, entity name, verbal math, function
# (word, role) by hand; whitespace is left out. Each line exercises a rule or a priority between two rules.
LABELLED = [
    ("First", M), (",", F), ("we", M), ("need", M), ("to", M), ("find", M),  # a discourse phrase beats coreference
    ("how", F), ("many", F), ("clips", E), ("she", C), ("sold", F), ("in", F), ("May", E), (":", F),
    ("48", S), ("/", S), ("2", S), ("=", S), ("24", S), ("clips", E), (".", F),
    ("Step", M), ("2", M), (":", F),                                          # a step number is discourse
    ("So", M), ("Natalia", E), ("sold", F), ("48", S), ("+", S), ("24", S), ("=", S), ("$72", S),
    ("clips", E), ("altogether", V), (".", F),
    ("Let", M), ("x", S), ("=", S), ("5", S), (",", F), ("and", F),          # a variable beside '=' is symbolic
    ("0.2", S), ("x", S), ("50", S), ("is", F), ("twice", V), ("this", C), (".", F),  # 'x' between numbers
    ("1", M), (".", F), ("The", M), ("final", M), ("answer", M), ("is", M), ("1,200", S), (".", F),  # list marker
    ("-", M), ("Her", C), ("friends", E), ("got", F), ("5", S), ("more", V), ("each", V), (".", F),
    ("Working", F), ("50", S), ("minutes", E), ("at", F), ("25%", S), ("per", V), ("hour", F), ("is", F),
    ("a", F), ("rate", V), ("of", F), ("3", S), ("dozen", V), ("Bob", E), ("knows", F), ("it", C), ("!", F),
]
TEXT = ("First, we need to find how many clips she sold in May: 48/2 = 24 clips.\nStep 2: So Natalia sold "
        "48 + 24 = $72 clips altogether. Let x = 5, and 0.2 x 50 is twice this.\n1. The final answer is 1,200.\n"
        "- Her friends got 5 more each.\nWorking 50 minutes at 25% per hour is a rate of 3 dozen Bob knows it!")


def test_tagger_matches_a_hand_labelled_passage_covering_every_rule():
    words = [(w.text, w.role) for w in tag_words(TEXT, QUESTION) if w.kind != "space"]
    assert [w for w, _ in words] == [w for w, _ in LABELLED]
    mismatches = [(i, word, role, expected) for i, ((word, role), (_, expected)) in enumerate(zip(words, LABELLED))
                  if role != expected]
    assert not mismatches
    assert {role for _, role in LABELLED} == set(CATEGORIES)


def test_same_word_in_the_same_role_gets_the_same_label_everywhere():
    text = "The clips were red. She bought 3 clips, and the clips broke, so 2 more clips of hers were sold."
    roles = [(w.text, w.role) for w in tag_words(text) if w.text in ("clips", "more")]
    assert roles == [("clips", E)] * 3 + [("more", V), ("clips", E)]  # counted once: an entity everywhere


def test_model_tokens_take_the_strongest_role_they_overlap():
    tokens = ["She", " sold", " 48", "/", "2", "=$", "24", " clips", ".\n", "So", " it", " is", " half", "."]
    assert token_roles(tokens, QUESTION) == [C, F, S, S, S, S, S, E, F, M, C, F, V, F]
    assert token_roles([" ", "\n\n"]) == [F, F]


def _record(order):
    return {"deletion_order": order}


def test_retention_against_uniform_on_a_planted_order():
    """Ten tokens: four FUNCTION deleted first, then two COREFERENCE; numbers never."""
    roles = [F, S, F, C, S, F, C, S, F, V]
    order = [0, 2, 5, 8, 3, 6]
    result = retention([_record(order)], [roles], [0.8, 0.6, 0.4])
    at_08, at_06, at_04 = result["rows"]
    assert at_08["overall_kept"] == 0.8 and at_08["retention"][F] == 0.5 and at_08["retention"][S] == 1.0
    assert at_08["ratio_to_uniform"][F] == pytest.approx(0.625) and at_08["ratio_to_uniform"][S] == pytest.approx(1.25)
    assert at_06["retention"][F] == 0.0 and at_06["retention"][C] == 1.0
    assert at_04["retention"][C] == 0.0 and at_04["retention"][V] == 1.0 and at_04["chains"] == 1
    assert E not in at_04["retention"]  # no entity tokens: no number rather than a division by zero
    short = retention([_record(order[:2])], [roles], [0.4])["rows"][0]
    assert short["chains"] == 0  # a chain pruned only to 0.8 says nothing about 0.4


def test_patterns_table_and_plot(tmp_path):
    roles = [F, S, F, C, S, F, C, S, F, V]
    results = {"greedy": retention([_record([0, 2, 5, 8])], [roles], [0.8, 0.6]),
               "uniform": retention([_record([1, 3, 9, 4])], [roles], [0.8, 0.6])}
    table = markdown_table(results).splitlines()
    assert table[0].startswith("| method | keep ratio | SYMBOLIC_MATH") and len(table) == 2 + 4
    assert table[3].startswith("| greedy | 0.6 | 1.67 |")  # all three numbers kept of 60%
    plot(results, str(tmp_path / "patterns.png"))
    assert (tmp_path / "patterns.png").read_bytes()[:4] == b"\x89PNG"


def test_analyze_cli_reports_patterns_of_pruned_files(tmp_path, tiny_dir):
    import json

    from conftest import cli
    from jaxprune.analysis.annotator import annotation_words
    from jaxprune.analysis.patterns import chain_roles
    from jaxprune.checkpoints import load_model
    from jaxprune.pruning.greedy import PruneConfig
    from jaxprune.pruning.runner import RunConfig, prune_dataset

    chain = {"question": QUESTION, "answer": "#### 72", "system": "Be brief.",
             "reasoning": "She sold 48 / 2 = 24 clips in May.\nSo Natalia sold 48 + 24 = 72 clips altogether.\n"}
    (tmp_path / "chains.jsonl").write_text("".join(json.dumps(dict(chain, id=f"c{i}")) + "\n" for i in range(2)))
    model, tokenizer = load_model(tiny_dir)
    for method in ("approx", "uniform"):  # approx: the greedy side when there is no exact greedy file
        prune_dataset(RunConfig(input=str(tmp_path / "chains.jsonl"), output=str(tmp_path / f"{method}.jsonl"),
                                prune=PruneConfig(keep_ratio=0.7), method=method, model=tiny_dir), model, tokenizer)
    result = cli("jaxprune.experiments.analyze", f"--pruned={tmp_path / 'approx.jsonl'},{tmp_path / 'uniform.jsonl'}",
                 f"--output_dir={tmp_path / 'report'}", "--keep_ratios=0.9,0.7", "--importance_chains=2",
                 "--preservation_chains=2", "--max_new_tokens=8", "--annotate_chains=1")
    assert result.returncode == 0, result.stderr[-3000:]
    importance = json.loads((tmp_path / "report" / "importance.json").read_text())
    assert importance["chains"] == 2 and importance["held_out_chains"] == 1
    assert len(importance["spearman_per_layer"]) == 2 and set(importance["dynamic_vs_static"]) == {
        "0.0", "0.25", "0.5", "0.75"}
    preserved = json.loads((tmp_path / "report" / "preservation.json").read_text())
    assert set(preserved) == {"approx", "uniform"} and preserved["uniform"]["0.7"]["chains"] == 2
    report_text = (tmp_path / "report" / "report.md").read_text()
    assert "## Answer preservation" in report_text and "## Attention and dynamic importance (approx)" in report_text
    annotation = json.loads((tmp_path / "report" / "annotation.json").read_text())
    assert annotation["words"] == len(annotation_words(chain["reasoning"], QUESTION))
    report = json.loads((tmp_path / "report" / "patterns.json").read_text())
    assert list(report) == ["approx", "uniform"]
    records = [json.loads(line) for line in (tmp_path / "uniform.jsonl").read_text().splitlines()]
    expected = retention(records, [chain_roles(r, tokenizer) for r in records], [0.9, 0.7])
    assert report["uniform"] == json.loads(json.dumps(expected))
    page = (tmp_path / "report" / "chains.html").read_text()
    assert page.count('class="chain"') == 4 and 'data-rolecolour="#f4a3a3"' in page  # symbolic math shown
    assert (tmp_path / "report" / "patterns.png").exists() and "| uniform | 0.7 |" in (
        tmp_path / "report" / "patterns.md").read_text()

    bad = tmp_path / "teacher.jsonl"
    bad.write_text(json.dumps(dict(chain, id="c0")) + "\n")
    refused = cli("jaxprune.experiments.analyze", f"--pruned={bad}", f"--output_dir={tmp_path / 'r2'}")
    assert refused.returncode != 0 and f"{bad}:1: field 'reasoning_token_ids' is missing" in refused.stderr


def test_deletion_ranks_and_dynamic_versus_static_on_planted_rankings():
    import numpy as np

    from jaxprune.analysis.importance import deletion_ranks, dynamic_versus_static, spearman

    record = {"reasoning_token_ids": list(range(6)), "deletion_order": [3, 1, 4, 0]}
    ranks = deletion_ranks(record)
    assert ranks.tolist() == [4, 2, 5, 1, 3, 5]  # 2 and 5 are kept: they share the last rank
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3])) and spearman([1, 2, 3], [3, 2, 1]) == -1.0
    # Re-evaluated after 2 deletions the ranking is right about the rest; the first ranking had it backwards.
    first = np.array([0.0, 9.0, 5.0, 10.0, -3.0, 5.0])  # right about the first two deletions (3, then 1) only
    later = np.array([0.5, np.nan, -2.0, np.nan, 1.0, -2.0])  # tokens 1 and 3 are gone
    result = dynamic_versus_static({0: first, 2: later}, record)
    assert result[0]["dynamic"] == result[0]["static"]
    assert result[2]["dynamic"] == 1.0 and result[2]["static"] == -1.0
    assert -1.0 <= result[2]["random"] <= 1.0


def test_mlp_predicts_a_learnable_target_and_not_noise():
    import numpy as np

    from jaxprune.analysis.importance import fit_mlp

    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 6))
    signal = np.sin(2 * x[:, 0]) + x[:, 1] ** 2 - x[:, 2] * x[:, 3]
    fitted = fit_mlp(x[:400], signal[:400], x[400:], signal[400:], hidden=64, steps=1500)
    assert fitted["pearson_r"] > 0.9
    noise = rng.standard_normal(600)
    assert abs(fit_mlp(x[:400], noise[:400], x[400:], noise[400:], steps=300)["pearson_r"]) < 0.25


def test_attention_received_and_rescoring_agree_with_the_pruning_kernel(tiny_dir, tmp_path):
    import json

    import numpy as np

    from jaxprune.analysis.importance import attention_received, record_split, rescored
    from jaxprune.checkpoints import load_model
    from jaxprune.pruning.greedy import PruneConfig
    from jaxprune.pruning.runner import RunConfig, prune_dataset
    from jaxprune.pruning.scoring import Scorer

    chain = {"id": "c0", "question": QUESTION, "answer": "#### 72", "system": "Be brief.",
             "reasoning": "She sold 48 / 2 = 24 clips in May, so 48 + 24 = 72."}
    (tmp_path / "chains.jsonl").write_text(json.dumps(chain) + "\n")
    model, tokenizer = load_model(tiny_dir)
    prune_dataset(RunConfig(input=str(tmp_path / "chains.jsonl"), output=str(tmp_path / "greedy.jsonl"),
                            prune=PruneConfig(keep_ratio=0.6)), model, tokenizer)
    record = json.loads((tmp_path / "greedy.jsonl").read_text())
    split = record_split(record)
    scorer = Scorer(model)

    received = attention_received(model, split)
    layers, heads, n = received.from_later.shape
    assert (layers, heads, n) == (2, 4, len(split.reasoning)) and received.features().shape == (n, 4)
    start = len(split.prompt)
    later_queries = len(split.prompt + split.reasoning + split.answer) - 1 - np.arange(start, start + n)
    tokens = np.asarray(split.prompt + split.reasoning + split.answer, np.int32)
    kernel = scorer.base_pass(tokens, with_attention=True).attention_received[start:start + n]
    np.testing.assert_allclose(received.from_later.sum(axis=(0, 1)) * later_queries, kernel, rtol=1e-4)

    order = record["deletion_order"]
    for step in range(len(order)):  # re-scored after s deletions, the best candidate is the (s+1)-th deletion
        scores = rescored(scorer, split, order[:step])
        assert np.isnan(scores[order[:step]]).all()
        assert int(np.nanargmax(scores)) == order[step]


def test_answer_preservation_reads_the_continuation_after_the_answer_opening(smollm2):
    """A model wired to answer "7" right after the answer's opening: chains whose teacher said 7 are preserved, the one whose
    teacher said 8 is not; chains pruned short of a keep ratio are left out of it."""
    from conftest import scripted_model
    from jaxprune.analysis.preservation import answer_opening, answer_preservation, kept_prompt
    from jaxprune.data.prompts import split_chain

    tokenizer = smollm2[1]
    records = []
    for index, (answer, order) in enumerate([("#### 7", [0, 1, 2]), ("#### 7", [2]), ("#### 8", [1, 0, 3])]):
        split = split_chain(tokenizer, "What is 3 + 4?", "Three plus four is seven.\n", answer, "Be brief.")
        records.append({"id": f"c{index}", "dataset": "gsm8k", "answer": answer, "prediction": answer[5:],
                        "prompt_token_ids": list(split.prompt), "reasoning_token_ids": list(split.reasoning),
                        "answer_token_ids": list(split.answer), "deletion_order": order})
    opening = answer_opening(records[0], tokenizer)
    assert tokenizer.decode(opening).rstrip() == "####"  # up to the value (SmolLM2 splits " 7" into " ", "7")
    assert len(kept_prompt(records[0], 0.7)) == len(records[0]["prompt_token_ids"]) + 7 - 3
    model = scripted_model(tokenizer, opening[-1], "7")
    result = answer_preservation(model, tokenizer, records, [1.0, 0.7], max_new_tokens=4, batch_size=2)
    assert result[1.0]["chains"] == 3 and result[1.0]["preserved"] == 2
    assert result[0.7]["chains"] == 2 and result[0.7]["preserved"] == 1  # c1 was pruned by one token only
    z, n, rate = 1.959963984540054, 3, 2 / 3  # the Wilson score interval, written out
    centre, half = (rate + z * z / (2 * n)) / (1 + z * z / n), z / (1 + z * z / n) * math.sqrt(
        rate * (1 - rate) / n + z * z / (4 * n * n))
    assert result[1.0]["rate_ci95"] == pytest.approx([centre - half, centre + half], rel=1e-9)


def test_llm_annotations_are_parsed_leniently_and_compared_with_the_tagger():
    import json

    from jaxprune.analysis.annotator import agreement, annotation_words, cohen_kappa, parse_labels

    assert parse_labels('Sure! {"1": "symbolic math", "2": "FUNCTION", "7": "ENTITY_NAME", "x": "VERBAL_MATH"', 3) \
        == [S, F, None]  # repaired JSON, any case, out-of-range and bad keys dropped
    assert parse_labels("no idea", 2) == [None, None] and parse_labels('["FUNCTION"]', 1) == [None]
    assert cohen_kappa([S, S, F, F], [S, F, F, F]) == pytest.approx(0.5)  # observed 0.75, chance 0.5

    chains = [{"question": QUESTION, "reasoning": "She sold 48 / 2 = 24 clips."},
              {"question": QUESTION, "reasoning": "So Natalia sold 72 clips."}]
    words = [annotation_words(c["reasoning"], c["question"]) for c in chains]
    truthful = json.dumps({str(i): role for i, (_, role) in enumerate(words[0], 1)})
    wrong_first = {"1": "FUNCTION", "2": words[1][1][1].lower()}  # 'So' is META_DISCOURSE: one miss, one hit
    prompts_seen = []

    def complete(prompts):
        prompts_seen.extend(prompts)
        return [truthful, json.dumps(wrong_first)[:-1]]  # the second reply lost its closing brace

    result = agreement(chains, complete)
    assert "1:She 2:sold 3:48" in prompts_seen[0] and "SYMBOLIC_MATH" in prompts_seen[0]
    assert result["words"] == len(words[0]) + len(words[1]) and result["labelled_by_llm"] == len(words[0]) + 2
    assert result["agreement"] == pytest.approx((len(words[0]) + 1) / (len(words[0]) + 2))


def test_markdown_marks_pronoun_i_and_instructions_are_not_maths_or_names():
    words = [(w.text, w.role) for w in tag_words("**Step 1:** Find the total. I think (Total is 5 * 3) in May.",
                                                  "Find the number of apples.") if w.kind != "space"]
    assert words == [("**", F), ("Step", M), ("1", M), (":", F), ("**", F), ("Find", F), ("the", F), ("total", V),
                     (".", F), ("I", F), ("think", F), ("(", S), ("Total", V), ("is", F), ("5", S), ("*", S),
                     ("3", S), (")", S), ("in", F), ("May", E), (".", F)]
