"""The experiment pipeline: the comparison table's statistics, the commands the driver runs, and a whole run on a tiny
model (generate -> prune -> distill -> evaluate -> compare) that a rerun then skips."""

import itertools
import json
import math
import os
from fractions import Fraction

import numpy as np
import pytest

from conftest import ROOT, cli
from jaxprune.comparison import comparison_rows, markdown_table, plot


def _summary(correct, questions, reasoning_tokens, method=None, keep_ratio=None, seed=0, achieved=None):
    """A summary whose first `correct` of `questions` questions are right."""
    summary = {"questions": questions, "correct": correct, "accuracy": correct / questions,
               "mean_reasoning_tokens": reasoning_tokens,
               "outcomes": {f"q{i:04d}": i < correct for i in range(questions)}}
    if method:
        summary["distillation"] = {"method": method, "keep_ratio": keep_ratio, "seed": seed,
                                   "achieved_keep_ratio": achieved if achieved is not None else keep_ratio}
    return summary


def test_comparison_groups_seeds_resamples_questions_and_pairs_with_greedy(tmp_path):
    summaries = [_summary(500, 1000, 50.0, "greedy", 0.7, seed=1, achieved=0.71),  # listed before seed 0
                 _summary(300, 1000, 40.0, "greedy", 0.7, seed=0, achieved=0.69),
                 _summary(100, 1000, 60.0, "uniform", 0.7, seed=1),
                 _summary(700, 1000, 80.0, "unpruned", 1.0, seed=0),
                 _summary(20, 1000, 90.0)]
    rows = comparison_rows(summaries, base_name="untrained")
    assert [(r["method"], r["keep_ratio"]) for r in rows] == [("untrained", None), ("unpruned", 1.0),
                                                              ("greedy", 0.7), ("uniform", 0.7)]
    greedy = rows[2]
    assert greedy["accuracy"] == pytest.approx(0.4) and greedy["accuracy_sd"] == pytest.approx(math.sqrt(0.02))
    assert greedy["seeds"] == [0, 1] and greedy["accuracy_per_seed"] == [0.3, 0.5] and greedy["questions"] == 1000
    assert greedy["achieved_keep_ratio"] == pytest.approx(0.70) and greedy["mean_reasoning_tokens"] == 45.0
    # Per question the seed average is 1 (300 questions), 0.5 (200) or 0 (500): its mean 0.4, variance 0.19.
    half_width = 1.96 * math.sqrt(0.19 / 1000)
    assert greedy["accuracy_ci95"] == pytest.approx([0.4 - half_width, 0.4 + half_width], abs=0.004)
    assert rows[0]["achieved_keep_ratio"] is None and rows[3]["accuracy_sd"] == 0.0
    # The table's interval of the two seeds resamples seeds too: a quarter of the resamples draw seed 0 twice (30%
    # of the questions right), a quarter seed 1 twice (50%), half one of each (the seed average above). Seeds this
    # far apart make it much wider than the question-only interval.
    seed_question = _normal_mixture_interval([(0.25, 0.3, 0.21 / 1000), (0.5, 0.4, 0.19 / 1000),
                                              (0.25, 0.5, 0.25 / 1000)])
    assert greedy["accuracy_seed_question_ci95"] == pytest.approx(seed_question, abs=0.005)
    assert greedy["accuracy_reported_ci95"] == greedy["accuracy_seed_question_ci95"]
    assert np.diff(greedy["accuracy_reported_ci95"])[0] > 3 * np.diff(greedy["accuracy_ci95"])[0]
    assert greedy["accuracy_wilson_ci95"] is None
    for row, correct in zip([rows[0], rows[1], rows[3]], [20, 700, 100]):  # one result each: Wilson over questions
        assert row["accuracy_reported_ci95"] == row["accuracy_wilson_ci95"] == pytest.approx(
            _closed_form_wilson(correct, 1000), rel=1e-9)
        assert row["accuracy_seed_question_ci95"] is None

    uniform_pair, = rows[3]["paired"]  # uniform right on a subset of every greedy seed's questions
    assert uniform_pair["reference_keep_ratio"] == 0.7 and uniform_pair["difference"] == pytest.approx(-0.3)
    assert uniform_pair["difference_ci95"][1] < 0
    # McNemar pairs uniform's seed 1 with greedy's seed 1 (500 right), not with the first greedy row (seed 0).
    assert [(t["reference_only"], t["method_only"]) for t in uniform_pair["mcnemar"]] == [(400, 0)]
    # Its seed-and-question interval resamples that one seed pair: uniform - greedy of seed 1 per question is -1 on
    # 400 questions, else 0.
    assert uniform_pair["seed_pairs"] == [[1, 1]] and uniform_pair["difference_seed_pairs"] == pytest.approx(-0.4)
    assert uniform_pair["difference_seed_question_ci95"] == pytest.approx(
        _normal_mixture_interval([(1.0, -0.4, 0.24 / 1000)]), abs=0.005)
    base_pair, = rows[0]["paired"]  # the untrained model against each greedy seed
    assert [(t["reference_only"], t["method_only"]) for t in base_pair["mcnemar"]] == [(280, 0), (480, 0)]
    assert base_pair["reference_keep_ratio"] == 0.7 and greedy["paired"] == []
    # Against greedy seed 0 the untrained model's per-question difference is -1 on 280 questions, against seed 1 on
    # 480; drawing both seed pairs averages them (-1 on 280, -0.5 on 200). The seeds' disagreement widens the
    # interval well past the question-only one.
    assert base_pair["seed_pairs"] == [[None, 0], [None, 1]]
    assert base_pair["difference_seed_question_ci95"] == pytest.approx(_normal_mixture_interval(
        [(0.25, -0.28, 0.28 * 0.72 / 1000), (0.5, -0.38, (0.28 + 0.2 * 0.25 - 0.38 ** 2) / 1000),
         (0.25, -0.48, 0.48 * 0.52 / 1000)]), abs=0.005)
    assert np.diff(base_pair["difference_seed_question_ci95"])[0] > 3 * np.diff(base_pair["difference_ci95"])[0]

    with pytest.raises(ValueError, match="no summaries of the reference method 'approx'"):
        comparison_rows(summaries, reference="approx")
    with pytest.raises(ValueError, match="different question sets"):
        comparison_rows(summaries + [_summary(1, 10, 5.0, "greedy", 0.9)])

    text = markdown_table(rows)
    table = text.splitlines()
    assert table[4].startswith("| greedy | 0.7 (0.700) | 2 | 40.0% ± 14.1% |") and "30.0%, 50.0%" in table[4]
    assert "| uniform | 0.7 (0.700) | 0.7 | -30.0% |" in text
    low, high = greedy["accuracy_seed_question_ci95"]  # the table shows the interval that resamples seeds
    assert f"| {low:.1%}-{high:.1%} |" in table[4]
    low, high = _closed_form_wilson(20, 1000)
    assert table[2].startswith(f"| untrained | - | 1 | 2.0% ± 0.0% | {low:.1%}-{high:.1%} |")
    low, high = base_pair["difference_seed_question_ci95"]  # and the paired interval that resamples seed pairs
    assert f"| untrained | - | 0.7 | -38.0% | {low:+.1%} to {high:+.1%} |" in text
    low, high = uniform_pair["difference_seed_question_ci95"]  # centred on its one seed pair's difference
    assert f"| uniform | 0.7 (0.700) | 0.7 | -30.0% | {low:+.1%} to {high:+.1%} (seed pairs: -40.0%) |" in text
    plot(rows, str(tmp_path / "comparison.png"))
    assert (tmp_path / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _closed_form_wilson(successes, trials, z=1.959963984540054):
    """The Wilson score interval written out: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)."""
    rate = successes / trials
    center = rate + z * z / (2 * trials)
    half = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials))
    return [(center - half) / (1 + z * z / trials), (center + half) / (1 + z * z / trials)]


def _normal_mixture_interval(components, confidence=0.95):
    """The central interval of a mixture of normals `(weight, mean, variance)`: where a bootstrap's resample means
    fall when each way of drawing the seeds is one normal component over the questions."""
    from scipy import optimize, stats

    def cdf(x):
        return sum(w * stats.norm.cdf(x, mean, math.sqrt(variance)) for w, mean, variance in components)

    tail = (1 - confidence) / 2
    return [optimize.brentq(lambda x: cdf(x) - q, -2, 2, xtol=1e-9) for q in (tail, 1 - tail)]


def _holm_by_definition(p_values):
    """Holm's step-down: the k-th smallest of m p-values times m - k + 1, the running maximum, capped at 1."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [None] * len(p_values), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - k) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _sign_flip_p(method, reference):
    """The exact two-sided sign-flip p of the per-question differences of seed-averaged accuracies, enumerating
    every sign of the questions that differ."""
    differences = [Fraction(sum(m), len(m)) - Fraction(sum(r), len(r)) for m, r in
                   zip(zip(*method), zip(*reference))]
    differences = [d for d in differences if d != 0]
    observed = abs(sum(differences))
    flips = list(itertools.product((1, -1), repeat=len(differences)))
    return sum(abs(sum(s * d for s, d in zip(signs, differences))) >= observed for signs in flips) / len(flips)


def test_comparison_table_tests_each_pair_by_permutation_and_holm_adjusts_over_the_whole_table():
    # Twelve questions, so the permutation tests are exact; greedy at two keep ratios, so the table's comparisons
    # span keep ratios and rows (the base model is paired with both).
    outcomes = {  # (method, keep ratio, seed): right (1) or wrong (0) per question
        ("greedy", 0.7, 0): "111111000000", ("greedy", 0.7, 1): "111110100000",
        ("greedy", 0.5, 0): "110000000000", ("greedy", 0.5, 1): "100000000000",
        ("uniform", 0.7, 0): "111111000001", ("uniform", 0.7, 1): "111110100000",  # apart on one
        ("uniform", 0.5, 0): "111111110000", ("uniform", 0.5, 1): "111111100000",  # better on seven
        ("surprisal", 0.7, 0): "110000000000", ("surprisal", 0.7, 1): "111000000000",  # worse on five
        (None, None, None): "111100000000"}
    summaries = []
    for (method, keep_ratio, seed), right in outcomes.items():
        summary = _summary(0, len(right), 10.0, method, keep_ratio, seed=seed)
        summary["outcomes"] = {f"q{i:04d}": c == "1" for i, c in enumerate(right)}
        summaries.append(summary)
    rows = comparison_rows(summaries, base_name="base")

    def correct(method, keep_ratio):
        method = None if method == "base" else method
        return [[c == "1" for c in right] for (m, k, _), right in outcomes.items()
                if (m, k) == (method, keep_ratio)]

    pairs = [(row, pair) for row in rows for pair in row["paired"]]
    assert [(row["method"], row["keep_ratio"], pair["reference_keep_ratio"]) for row, pair in pairs] == [
        ("base", None, 0.7), ("base", None, 0.5), ("uniform", 0.7, 0.7), ("uniform", 0.5, 0.5),
        ("surprisal", 0.7, 0.7)]
    p_values = [_sign_flip_p(correct(row["method"], row["keep_ratio"]),
                             correct("greedy", pair["reference_keep_ratio"])) for row, pair in pairs]
    assert [pair["permutation_p"] for _, pair in pairs] == pytest.approx(p_values, abs=1e-12)
    holm = _holm_by_definition(p_values)  # one family: every comparison of the table
    assert min(p_values) < 0.05 < min(holm)  # the adjustment matters here
    assert [pair["permutation_p_holm"] for _, pair in pairs] == pytest.approx(holm, abs=1e-12)
    assert all(pair["holm_comparisons"] == 5 for _, pair in pairs)
    assert len(pairs[0][1]["mcnemar"]) == 2 and len(pairs[2][1]["mcnemar"]) == 2  # kept in the JSON rows

    table = markdown_table(rows)
    header, _, *shown = table.split("Paired with")[1].split("\n\n")[1].splitlines()  # the paired table
    assert header.endswith("| permutation p | Holm-adjusted p |") and "McNemar" not in header
    assert [line.split(" | ")[-2:] for line in shown] == [[f"{p:.3g}", f"{h:.3g} |"] for p, h in zip(p_values, holm)]
    assert "Holm-adjusted p: Holm's step-down adjustment of the permutation p over the 5 comparisons" in table
    assert json.loads(json.dumps(rows)) == rows  # comparison.json holds the rows as they are


def _pipeline_args(tmp_path, tiny_dir):
    flagfiles = {
        "chains": [f"--model={tiny_dir}", "--source=generated:6", "--seed=1", "--from_solutions",
                   "--prompt=gsm8k_hash", "--min_reasoning_chars=0", "--length_percentile=100"],
        "prune": [f"--model={tiny_dir}", "--show=0"],
        "distill": [f"--student={tiny_dir}", "--steps=2", "--batch_size=2", "--max_length=128", "--lora_rank=2",
                    "--checkpoint_every=1"],
        "evaluate": [f"--model={tiny_dir}", "--source=generated:3", "--seed=2", "--prompt=gsm8k_hash",
                     "--max_new_tokens=8", "--batch_size=3"],
    }
    for name, lines in flagfiles.items():
        (tmp_path / f"{name}.flags").write_text("\n".join(lines) + "\n")
    return [f"--work_dir={tmp_path / 'work'}", f"--chain_flags={tmp_path / 'chains.flags'}",
            f"--prune_flags={tmp_path / 'prune.flags'}", f"--distill_flags={tmp_path / 'distill.flags'}",
            f"--evaluate_flags={tmp_path / 'evaluate.flags'}", f"--base_model={tiny_dir}"]


def test_dry_run_prunes_once_per_method_and_trains_every_student(tmp_path, tiny_dir):
    result = cli("jaxprune.experiments.pipeline", *_pipeline_args(tmp_path, tiny_dir), "--methods=greedy,uniform",
                 "--keep_ratios=0.7,0.9", "--seeds=0,1", "--dry_run")
    assert result.returncode == 0, result.stderr[-3000:]
    commands = [line for line in result.stdout.splitlines() if line.startswith("python -m")]
    prunes = [c for c in commands if "experiments.prune" in c]
    assert len(prunes) == 2 and all("--keep_ratio=0.7 " in c for c in prunes)
    distills = [c for c in commands if "experiments.distill" in c]
    assert len(distills) == 2 * (1 + 2 * 2)  # per seed: unpruned + methods x keep ratios
    assert sum("--keep_ratio=1 " in c for c in distills) == 2
    assert sum("greedy.jsonl --keep_ratio=0.9 --seed=1 " in c for c in distills) == 1
    assert len([c for c in commands if "experiments.evaluate" in c]) == len(distills) + 1  # + the base model
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("bad, message", [("--keep_ratios=0.7,1", "each must be in"),
                                          ("--seeds=zero", "--seeds"), ("--methods=", "at least one"),
                                          ("--methods=greedy,attention", "unknown ['attention']")])
def test_bad_settings_are_refused_before_anything_runs(tmp_path, tiny_dir, bad, message):
    result = cli("jaxprune.experiments.pipeline", *_pipeline_args(tmp_path, tiny_dir), bad)
    assert result.returncode != 0 and message in result.stderr
    assert not (tmp_path / "work").exists()


def test_whole_pipeline_on_a_tiny_model_then_a_rerun_skips_every_finished_stage(tmp_path, tiny_dir):
    args = [*_pipeline_args(tmp_path, tiny_dir), "--methods=greedy,uniform", "--keep_ratios=0.7", "--seeds=0"]
    result = cli("jaxprune.experiments.pipeline", *args, timeout=1500)  # ten stage processes
    assert result.returncode == 0, result.stderr[-3000:]
    work = tmp_path / "work"
    rows = json.loads((work / "report" / "comparison.json").read_text())
    assert sorted((r["method"], r["keep_ratio"]) for r in rows if r["keep_ratio"]) == [
        ("greedy", 0.7), ("uniform", 0.7), ("unpruned", 1.0)]
    assert (work / "report" / "comparison.png").exists() and "| greedy | 0.7" in (work / "report" /
                                                                                   "comparison.md").read_text()
    for method in ("greedy", "uniform"):
        pruned = [json.loads(line) for line in (work / "pruned" / f"{method}.jsonl").read_text().splitlines()]
        summary = json.loads((work / "eval" / f"{method}-k0.7-s0.summary.json").read_text())
        assert summary["distillation"]["method"] == method
        assert summary["distillation"]["achieved_keep_ratio"] == pytest.approx(
            np.mean([r["achieved_keep_ratio"] for r in pruned]))
        assert summary["questions"] == 3
    assert os.listdir(work / "students" / "greedy-k0.7-s0" / "tensorboard")  # event files written

    times = [json.loads(line) for line in (work / "stage_times.jsonl").read_text().splitlines()]
    assert [t["id"] for t in times] == ["generate:chains.flags", "prune:greedy", "prune:uniform", "evaluate:base",
                                        "distill:unpruned-s0", "evaluate:unpruned-s0", "distill:greedy-k0.7-s0",
                                        "evaluate:greedy-k0.7-s0", "distill:uniform-k0.7-s0",
                                        "evaluate:uniform-k0.7-s0", "compare"]
    assert all(t["seconds"] > 0 for t in times)

    stamps = {p: p.stat().st_mtime_ns for p in (work / "eval").glob("*.summary.json")}
    rerun = cli("jaxprune.experiments.pipeline", *args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stderr.count("done already") == 1 + 3 * 2 + 1  # generate; distill, evaluate per student; base
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    report = (work / "report" / "stage_times.md").read_text().splitlines()
    runs = {line.split(" | ")[0][2:]: int(line.split(" | ")[1]) for line in report[2:]}
    assert runs == {"generate": 1, "prune": 4, "evaluate": 4, "distill": 3, "compare": 2, "all": 14}  # prune, compare
    # run again on the rerun (the prune CLI resumes itself); the finished students are not rerun


@pytest.mark.parametrize("flagfile", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "experiments").glob("*/pipeline.flags")))
def test_shipped_pipeline_flagfiles_parse_and_name_existing_stage_flagfiles(flagfile):
    result = cli("jaxprune.experiments.pipeline", f"--flagfile={flagfile}", "--dry_run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "experiments.compare" in result.stdout.splitlines()[-1]


def test_stages_share_a_compilation_cache_in_the_work_dir_unless_the_user_chose_one():
    from jaxprune.experiments.pipeline import stage_environment

    env = stage_environment("work", {"PATH": "/bin"})
    assert env["JAX_COMPILATION_CACHE_DIR"] == os.path.join("work", "compilation_cache") and env["PATH"] == "/bin"
    mine = stage_environment("work", {"JAX_COMPILATION_CACHE_DIR": "gs://bucket/cache"})
    assert mine["JAX_COMPILATION_CACHE_DIR"] == "gs://bucket/cache"
