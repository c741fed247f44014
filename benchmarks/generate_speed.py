"""Generation throughput: our jitted KV-cache decoding against transformers + torch `generate`, side by side.

    python benchmarks/generate_speed.py [--batch=16 --max_new_tokens=128 --questions=32]

Both run the packaged SmolLM2-135M-Instruct GGUF (float32) on the same chat prompts (the first GSM8K test
questions under the GSM8K system prompt), `--batch` rows at a time, greedy, a row stopping at <|im_end|> or after
`max_new_tokens`. transformers decodes batch after batch (a batch lasts as long as its longest row); ours refills
finished rows with the next prompts (continuous batching). Generated tokens/s counts the tokens each row kept. Ours
is timed on a second run (the first, compilation included, is reported too), then once more with every decode call
attending over the whole ring of `max_new_tokens` cache slots (the ring windows of `generation.decode_window` undone
in this process); torch uses all CPU threads.
Also reports how many completions are identical in both (greedy: float differences may split near-ties).
"""

import collections
import os
import time

from absl import app, flags

_BATCH = flags.DEFINE_integer("batch", 16, "Prompts per generation call.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 128, "Tokens per completion at most.")
_QUESTIONS = flags.DEFINE_integer("questions", 32, "Prompts in all (a multiple of --batch).")
_DATA = flags.DEFINE_string("data", "experiments/data/gsm8k", "GSM8K directory (test.jsonl).")


def main(argv):
    del argv
    import torch
    from transformers import AutoModelForCausalLM

    from jaxprune.checkpoints import load_model
    from jaxprune.checkpoints.resolve import packaged_model_path
    from jaxprune.data.prompts import SYSTEM_PROMPTS, generation_prompt
    from jaxprune.data.questions import load_questions
    from jaxprune.data.teacher import end_of_turn_ids
    from jaxprune import generation
    from jaxprune.generation import SamplingConfig, generate

    model, tokenizer = load_model("packaged:SmolLM2-135M-Instruct")
    questions = load_questions(_DATA.value, split="test", limit=_QUESTIONS.value)
    prompts = [generation_prompt(tokenizer, q["question"], SYSTEM_PROMPTS["gsm8k_hash"]) for q in questions]
    batches = [prompts[i:i + _BATCH.value] for i in range(0, len(prompts), _BATCH.value)]
    stops = end_of_turn_ids(model, tokenizer)
    sampling = SamplingConfig(max_new_tokens=_MAX_NEW_TOKENS.value, stop_token_ids=stops)

    start = time.perf_counter()
    generate(model, prompts, sampling, batch_size=_BATCH.value)
    first_run = time.perf_counter() - start
    windows, library_window = collections.Counter(), generation.decode_window

    def counted_window(*args):
        windows[library_window(*args)[1]] += 1
        return library_window(*args)

    generation.decode_window = counted_window
    start = time.perf_counter()
    ours = generate(model, prompts, sampling, batch_size=_BATCH.value)
    ours_seconds = time.perf_counter() - start
    # The same run with every decode call attending over the whole ring (ring windows undone in this process).
    generation.decode_window = lambda t, starts, ring: (min(starts, default=t), ring)
    start = time.perf_counter()
    whole_ring = generate(model, prompts, sampling, batch_size=_BATCH.value)
    whole_ring_seconds = time.perf_counter() - start
    generation.decode_window = library_window

    directory, name = os.path.split(packaged_model_path("SmolLM2-135M-Instruct"))
    reference = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32).eval()
    theirs = []
    start = time.perf_counter()
    for batch in batches:
        width = max(len(p) for p in batch)
        ids = torch.tensor([[0] * (width - len(p)) + list(p) for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        with torch.inference_mode():
            out = reference.generate(input_ids=ids, attention_mask=mask, max_new_tokens=_MAX_NEW_TOKENS.value,
                                     do_sample=False, eos_token_id=list(stops), pad_token_id=0)
        for row in out[:, width:].tolist():
            end = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
            theirs.append(row[:end])
    theirs_seconds = time.perf_counter() - start

    ours_tokens, theirs_tokens = sum(map(len, ours)), sum(map(len, theirs))
    same = sum(a == b for a, b in zip(ours, theirs))
    print(f"prompts {len(prompts)} in batches of {_BATCH.value}, greedy, max_new_tokens {_MAX_NEW_TOKENS.value}")
    print(f"jaxprune:            {ours_tokens} tokens in {ours_seconds:.1f} s = {ours_tokens / ours_seconds:.1f} "
          f"tokens/s (first run, compilation included: {first_run:.1f} s)")
    print(f"jaxprune, whole ring: {sum(map(len, whole_ring))} tokens in {whole_ring_seconds:.1f} s = "
          f"{sum(map(len, whole_ring)) / whole_ring_seconds:.1f} tokens/s (windows undone; decode calls per window "
          f"with them: {dict(sorted(windows.items()))}; same completions: {whole_ring == ours})")
    print(f"transformers+torch:  {theirs_tokens} tokens in {theirs_seconds:.1f} s = "
          f"{theirs_tokens / theirs_seconds:.1f} tokens/s")
    print(f"ratio (jaxprune / transformers, tokens/s): {ours_tokens / ours_seconds / (theirs_tokens / theirs_seconds):.2f}x")
    print(f"identical completions: {same}/{len(prompts)}")


if __name__ == "__main__":
    app.run(main)
