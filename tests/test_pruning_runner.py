"""The prune pipeline end to end on a tiny model: records, skips, resume after a kill, extend, baselines, devices."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import cli as run_module
from conftest import kill_after_lines, run_processes

from jaxprune import sharding
from jaxprune.checkpoints import load_model
from jaxprune.data.prompts import TokenSplit
from jaxprune.data.records import RecordError
from jaxprune.pruning.greedy import PruneConfig, deletions_for, greedy_prune
from jaxprune.pruning.methods import make_method
from jaxprune.pruning.methods.h2o import attention_received
from jaxprune.pruning.methods.surprisal import surprisal_order
from jaxprune.pruning.methods.uniform import uniform_order
from jaxprune.pruning.runner import RunConfig, prune_dataset
from jaxprune.pruning.scoring import Scorer

SYSTEM = "Solve step by step."
CHAINS = [
    {"id": "a", "question": "Tom has 3 apples and buys 5 more. How many?", "reasoning": "3 + 5 = 8 apples.\n",
     "answer": "#### 8"},
    {"id": "b", "question": "Each ticket costs $6. How much do 5 tickets cost?",
     "reasoning": "We multiply the price by the number of tickets: 5 * 6 = 30 dollars.\n", "answer": "#### 30"},
    {"id": "c", "question": "Sara had 10 candies and ate 4. How many are left?", "reasoning": "",
     "answer": "#### 6"},
    {"id": "d", "question": "Ben reads 12 pages a day. How many in 4 days?", "reasoning": "12 * 4 = 48 pages.\n",
     "answer": "  "},
    {"id": "e", "question": "How many legs do 3 cats have?", "reasoning": "Each cat has 4 legs. " * 40,
     "answer": "#### 12"},
    {"id": 6, "question": "A box holds 4 pencils. How many in 3 boxes?", "system": "Be brief.",
     "reasoning": "3 boxes * 4 pencils = 12 pencils in total.\n", "answer": "#### 12"},
]


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_model(tiny_dir)


@pytest.fixture(scope="module")
def tiny_bf16(tiny_dir):
    return load_model(tiny_dir, dtype=jnp.bfloat16)


def write_chains(path, chains=CHAINS):
    path.write_text("".join(json.dumps(c) + "\n" for c in chains))
    return str(path)


def read_output(path):
    return [json.loads(line) for line in open(path)]


def run(tmp_path, tiny, name="out.jsonl", **overrides):
    settings = dict(input=write_chains(tmp_path / "chains.jsonl"), output=str(tmp_path / name),
                    prune=PruneConfig(keep_ratio=0.5), system_prompt=SYSTEM, model="tiny")
    settings.update(overrides)
    counts = prune_dataset(RunConfig(**settings), *tiny)
    return counts, read_output(settings["output"])


def test_output_records_carry_everything_and_skips_are_counted(tmp_path, tiny):
    counts, records = run(tmp_path, tiny)
    assert counts == {"already done": 0, "pruned": 3, "skipped: empty reasoning": 1, "skipped: no answer": 1,
                      "skipped: longer than the model's maximum length": 1}
    assert [r["id"] for r in records] == ["a", "b", 6]
    tokenizer = tiny[1]
    for record, chain in zip(records, [CHAINS[0], CHAINS[1], CHAINS[5]]):
        assert {k: record[k] for k in chain} == chain
        n = len(record["reasoning_token_ids"])
        assert record["reasoning_token_ids"] == tokenizer(chain["reasoning"], add_special_tokens=False).input_ids
        assert tokenizer.decode(record["answer_token_ids"]).startswith(chain["answer"])
        assert tokenizer.decode(record["answer_token_ids"]).endswith("<|im_end|>\n")
        order = record["deletion_order"]
        assert len(order) == deletions_for(n, 0.5) and len(set(order)) == len(order)
        assert all(0 <= i < n for i in order)
        kept = [t for i, t in enumerate(record["reasoning_token_ids"]) if i not in set(order)]
        assert record["pruned_reasoning"] == tokenizer.decode(kept)
        assert record["achieved_keep_ratio"] == pytest.approx(len(kept) / n)
        assert len(record["step_log_likelihoods"]["joint"]) == len(order)
        assert record["step_log_likelihoods"]["joint"][0] <= 0 and record["original_log_likelihoods"]["joint"] <= 0
    system = tokenizer.decode(records[2]["prompt_token_ids"])
    assert "Be brief." in system and SYSTEM not in system


def test_fail_mode_names_the_chain(tmp_path, tiny):
    with pytest.raises(RecordError, match=r"chains\.jsonl:3: empty reasoning"):
        run(tmp_path, tiny, on_invalid="fail")


def test_torn_output_from_a_killed_run_resumes_to_the_same_file(tmp_path, tiny):
    _, full = run(tmp_path, tiny, name="full.jsonl")
    text = open(tmp_path / "full.jsonl").read()
    lines = text.splitlines(keepends=True)
    (tmp_path / "killed.jsonl").write_text(lines[0] + lines[1][: len(lines[1]) // 2])
    counts, resumed = run(tmp_path, tiny, name="killed.jsonl")
    assert counts["already done"] == 1 and counts["pruned"] == 2
    assert open(tmp_path / "killed.jsonl").read() == text


@pytest.mark.parametrize("change, field", [
    (dict(method="uniform"), "method"),
    (dict(method=make_method("lazy", top_k=3)), "pruning_mode"),
    (dict(prune=PruneConfig(keep_ratio=0.7)), "keep_ratio"),
    (dict(prune=PruneConfig(keep_ratio=0.5, objective="answer")), "objective"),
    (dict(model="another"), "pruner"),
    (dict(system_prompt="Think."), "prompt_token_ids"),
])
def test_a_rerun_with_other_settings_is_refused_before_it_adds_to_the_output(tmp_path, tiny, change, field):
    first = dict(method="lazy") if field == "pruning_mode" else {}
    run(tmp_path, tiny, max_chains=1, **first)  # chain "a" done, the rest left for a rerun
    before = open(tmp_path / "out.jsonl").read()
    with pytest.raises(RecordError, match=rf"out.jsonl:1: field '{field}'.*a rerun only resumes the same settings"):
        run(tmp_path, tiny, **change)
    assert open(tmp_path / "out.jsonl").read() == before
    counts, records = run(tmp_path, tiny, **first)  # the same settings resume
    assert counts["already done"] == 1 and [r["id"] for r in records] == ["a", "b", 6]


def test_extending_a_saved_run_equals_a_direct_run(tmp_path, tiny):
    _, direct = run(tmp_path, tiny, name="direct.jsonl", prune=PruneConfig(keep_ratio=0.2))
    run(tmp_path, tiny, name="first.jsonl", prune=PruneConfig(keep_ratio=0.6))
    _, extended = run(tmp_path, tiny, name="extended.jsonl", input=str(tmp_path / "first.jsonl"),
                      prune=PruneConfig(keep_ratio=0.2))
    for a, b in zip(direct, extended):
        assert a["deletion_order"] == b["deletion_order"]
        np.testing.assert_allclose(a["step_log_likelihoods"]["joint"], b["step_log_likelihoods"]["joint"], atol=1e-4)


def test_extending_with_another_objective_is_refused(tmp_path, tiny):
    run(tmp_path, tiny, name="first.jsonl")
    with pytest.raises(RecordError, match=r"first\.jsonl:1: field 'objective'='joint' cannot be extended"):
        run(tmp_path, tiny, name="second.jsonl", input=str(tmp_path / "first.jsonl"),
            prune=PruneConfig(keep_ratio=0.3, objective="answer"))


def test_float32_greedy_is_recorded_as_exact_and_bfloat16_greedy_is_not(tmp_path, tiny, tiny_bf16):
    _, records = run(tmp_path, tiny, name="float32.jsonl")
    assert [r["pruning_mode"] for r in records] == [{"method": "greedy", "dtype": "float32",
                                                     "exact": True}] * len(records)
    _, records = run(tmp_path, tiny_bf16, name="bfloat16.jsonl", dtype="bfloat16")
    assert [r["pruning_mode"] for r in records] == [{"method": "greedy", "dtype": "bfloat16",
                                                     "exact": False}] * len(records)


def test_extending_a_float32_record_with_a_bfloat16_run_is_refused_naming_the_dtype(tmp_path, tiny, tiny_bf16):
    run(tmp_path, tiny, name="first.jsonl")
    with pytest.raises(RecordError, match=r"first\.jsonl:1: field 'pruning_mode'=\{'method': 'greedy', 'dtype': "
                                         r"'float32', 'exact': True\} cannot be extended by a run with \{'method': "
                                         r"'greedy', 'dtype': 'bfloat16'"):
        run(tmp_path, tiny_bf16, name="second.jsonl", input=str(tmp_path / "first.jsonl"),
            prune=PruneConfig(keep_ratio=0.3), dtype="bfloat16")


@pytest.mark.parametrize("old_mode", [{"exact": True}, {}])
def test_records_from_before_the_dtype_was_recorded_extend_as_exact_float32(tmp_path, tiny, old_mode):
    _, direct = run(tmp_path, tiny, name="direct.jsonl", prune=PruneConfig(keep_ratio=0.2))
    _, first = run(tmp_path, tiny, name="first.jsonl", prune=PruneConfig(keep_ratio=0.6))
    write_chains(tmp_path / "old.jsonl", [dict(r, pruning_mode=old_mode) for r in first])
    _, extended = run(tmp_path, tiny, name="extended.jsonl", input=str(tmp_path / "old.jsonl"),
                      prune=PruneConfig(keep_ratio=0.2))
    assert [r["deletion_order"] for r in extended] == [r["deletion_order"] for r in direct]
    assert [r["pruning_mode"] for r in extended] == [r["pruning_mode"] for r in direct]


def test_a_dtype_other_than_the_models_or_unknown_is_refused(tmp_path, tiny):
    with pytest.raises(ValueError, match="the model is float32 but the run's dtype is 'bfloat16'"):
        run(tmp_path, tiny, dtype="bfloat16")
    with pytest.raises(ValueError, match="dtype must be one of float32, bfloat16"):
        RunConfig(input="in.jsonl", output="out.jsonl", prune=PruneConfig(keep_ratio=0.5), dtype="float16")


@pytest.mark.parametrize("method", ["uniform", "surprisal", "h2o"])
def test_baselines_give_valid_orders_in_the_same_format(tmp_path, tiny, method):
    _, records = run(tmp_path, tiny, method=method)
    for record in records:
        n = len(record["reasoning_token_ids"])
        assert len(record["deletion_order"]) == deletions_for(n, 0.5)
        assert len(set(record["deletion_order"])) == len(record["deletion_order"])
        assert record["method"] == method
        assert record["step_log_likelihoods"]["joint"][-1] < 0


def test_uniform_reproduces_by_seed():
    assert uniform_order(40, seed=1, chain_id="x") == uniform_order(40, seed=1, chain_id="x")
    assert uniform_order(40, seed=1, chain_id="x") != uniform_order(40, seed=2, chain_id="x")
    assert sorted(uniform_order(40, seed=1, chain_id="x")) == list(range(40))


def test_surprisal_order_and_h2o_scores_follow_a_plain_forward_with_attentions(tiny):
    import jax.numpy as jnp

    from jaxprune.data.prompts import split_chain
    from jaxprune.models import causal_mask, positions_from_keep

    model, tokenizer = tiny
    split = split_chain(tokenizer, CHAINS[1]["question"], CHAINS[1]["reasoning"], CHAINS[1]["answer"], SYSTEM)
    ids = jnp.asarray([split.prompt + split.reasoning + split.answer])
    keep = jnp.ones(ids.shape, bool)
    out = model(ids, positions_from_keep(keep), causal_mask(keep), return_attention=True)
    log_probs = np.asarray(jax.nn.log_softmax(out.logits[0], -1))
    start, n = len(split.prompt), len(split.reasoning)
    token_lp = [log_probs[start + i - 1, split.reasoning[i]] for i in range(n)]
    assert surprisal_order(Scorer(model), split) == sorted(range(n), key=lambda i: (-token_lp[i], i))
    received = sum(np.asarray(a[0]).sum(axis=0) for a in out.attentions)  # [query, key] summed over heads
    later = np.tril(np.ones(received.shape), -1)  # query > key
    per_key = (received * later).sum(axis=0)[start: start + n]
    np.testing.assert_allclose(attention_received(Scorer(model), split), per_key, rtol=1e-5, atol=1e-5)


def test_candidates_spread_over_eight_devices_give_the_same_prune(tiny):
    from jaxprune.data.prompts import split_chain

    model, tokenizer = tiny
    split = split_chain(tokenizer, CHAINS[1]["question"], CHAINS[1]["reasoning"], CHAINS[1]["answer"], SYSTEM)
    mesh = sharding.make_mesh({"data": -1})
    assert mesh.size == 8
    single = greedy_prune(Scorer(model, token_budget=512), split, PruneConfig(keep_ratio=0.4))
    spread = greedy_prune(Scorer(model, token_budget=512, mesh=mesh), split, PruneConfig(keep_ratio=0.4))
    assert spread.deletion_order == single.deletion_order
    np.testing.assert_allclose(spread.log_likelihoods["joint"], single.log_likelihoods["joint"], atol=1e-5)


PRUNE = "jaxprune.experiments.prune"


def cli(*args):
    return run_module(PRUNE, *args)


def test_cli_reports_a_malformed_line_before_loading_the_model(tmp_path):
    path = tmp_path / "chains.jsonl"
    path.write_text(json.dumps(CHAINS[0]) + "\n" + json.dumps({"id": "x", "question": "q", "answer": "1"}) + "\n")
    result = cli(f"--input={path}", f"--output={tmp_path / 'out.jsonl'}", "--model=/no/such/model")
    assert result.returncode != 0
    assert "chains.jsonl:2: missing field 'reasoning'" in result.stderr
    assert "/no/such/model" not in result.stderr


@pytest.mark.parametrize("flag, message", [("--keep_ratio=1.5", "keep_ratio must be in [0, 1)"),
                                           ("--objective=perplexity", "--objective")])
def test_cli_refuses_bad_settings_before_loading_the_model(tmp_path, flag, message):
    result = cli(f"--input={write_chains(tmp_path / 'c.jsonl')}", f"--output={tmp_path / 'o.jsonl'}",
                 "--model=/no/such/model", flag)
    assert result.returncode != 0 and message in result.stderr
    assert "/no/such/model" not in result.stderr


def test_kill_minus_nine_then_rerun_equals_an_uninterrupted_run(tmp_path, tiny_dir):
    """The killed and resumed runs prune three chains at a time (chains finish out of order), the reference one."""
    chains = [dict(CHAINS[1], id=f"chain-{i}", reasoning=CHAINS[1]["reasoning"] * (1 + i % 2)) for i in range(8)]
    source = write_chains(tmp_path / "chains.jsonl", chains)
    args = [f"--model={tiny_dir}", f"--input={source}", "--keep_ratio=0.7", "--show=0"]
    reference = cli(*args, f"--output={tmp_path / 'reference.jsonl'}")
    assert reference.returncode == 0, reference.stderr

    killed = tmp_path / "killed.jsonl"
    written = kill_after_lines(PRUNE, [*args, "--chains_per_call=3", f"--output={killed}"], killed, lines=2)
    assert 2 <= written < len(chains), "the run must be killed mid-way"
    resumed = cli(*args, "--chains_per_call=3", f"--output={killed}")
    assert resumed.returncode == 0, resumed.stderr
    # the same records in input order; only token_forwards differ, since a shared call's padding is split
    without_cost = lambda path: [{k: v for k, v in r.items() if k != "token_forwards"} for r in read_output(path)]  # noqa: E731
    assert without_cost(killed) == without_cost(tmp_path / "reference.jsonl")


def test_two_processes_prune_their_shares_and_process_zero_merges(tmp_path, tiny_dir):
    chains = [dict(CHAINS[1], id=f"chain-{i}", reasoning=CHAINS[1]["reasoning"] * (1 + i % 2)) for i in range(5)]
    args = [f"--model={tiny_dir}", f"--input={write_chains(tmp_path / 'chains.jsonl', chains)}", "--keep_ratio=0.8",
            "--show=0"]
    single = cli(*args, f"--output={tmp_path / 'single.jsonl'}")
    assert single.returncode == 0, single.stderr
    runs = run_processes(PRUNE, [*args, f"--output={tmp_path / 'multi.jsonl'}"], count=2)
    assert all(run.returncode == 0 for run in runs), [run.stderr[-2000:] for run in runs]
    assert len(read_output(tmp_path / "multi.jsonl.part-00001-of-00002")) == 2
    assert read_output(tmp_path / "multi.jsonl") == read_output(tmp_path / "single.jsonl")


def test_demo_flagfile_runs(tmp_path):
    """The README's demo flagfile stays valid (here cut to one chain and one deletion step)."""
    result = cli("--flagfile=experiments/demo.flags", "--max_chains=1", "--keep_ratio=0.97",
                 f"--output={tmp_path / 'demo.jsonl'}", f"--html={tmp_path / 'demo.html'}")
    assert result.returncode == 0, result.stderr
    record = read_output(tmp_path / "demo.jsonl")[0]
    assert record["id"] == "demo-0" and len(record["deletion_order"]) == 1
    page = (tmp_path / "demo.html").read_text()
    assert page.startswith("<!doctype html>") and "deleted at step 1 of 1" in page
    assert "\033[1m" in result.stdout


def test_records_count_the_token_forwards_their_method_ran(tmp_path, tiny):
    model, _ = tiny
    _, records = run(tmp_path, tiny, method="uniform")
    for record in records:  # a static order runs two base passes: the full and the pruned chain, padded to 32
        full = sum(len(record[f"{part}_token_ids"]) for part in ("prompt", "reasoning", "answer"))
        pruned = full - len(record["deletion_order"])
        assert record["token_forwards"] == -(-full // 32) * 32 + -(-pruned // 32) * 32
    _, records = run(tmp_path, tiny, name="greedy.jsonl")
    for record in records:
        split = TokenSplit(*(tuple(record[f"{part}_token_ids"]) for part in ("prompt", "reasoning", "answer")))
        scorer = Scorer(model)
        greedy_prune(scorer, split, PruneConfig(keep_ratio=0.5))
        assert record["token_forwards"] == scorer.forward_tokens


def test_prune_cli_builds_the_method_from_its_flags_and_warns_about_another_methods(tmp_path, tiny_dir):
    from jaxprune.pruning.methods import make_method

    chains = write_chains(tmp_path / "chains.jsonl", CHAINS[:2])
    result = run_module("jaxprune.experiments.prune", f"--model={tiny_dir}", f"--input={chains}",
                 f"--output={tmp_path / 'out.jsonl'}", "--method=approx", "--top_k=3", "--seed=5", "--show=0",
                 f"--system_prompt={SYSTEM}")
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_output(tmp_path / "out.jsonl")
    assert [r["pruning_mode"] for r in records] == [make_method("approx", top_k=3).mode("float32")] * 2
    assert records[0]["pruning_mode"]["top_k"] == 3 and records[0]["method"] == "approx"
    assert "--seed is not a setting of method 'approx'; ignored" in result.stderr
