"""Regenerates `demo_chains.jsonl`: SmolLM2-135M-Instruct's own greedy solutions to small GSM8K-style problems.

    python experiments/data/make_demo_chains.py

The 135M model does not follow the paper's JSON answer format, but it does write GSM8K's `#### <number>`, so the
demo asks for that. A chain is kept when its first `#### <number>` line is correct; reasoning is the text before
that line and the answer is the line itself (what the small model rambles on with after it is dropped).
"""

import os
import re

from jaxprune.checkpoints import load_model
from jaxprune.data.prompts import generation_prompt
from jaxprune.data.records import write_jsonl_atomic
from jaxprune.generation import SamplingConfig, generate

SYSTEM = "Solve the math problem step by step. Write the final answer on the last line as: #### <number>"
PROBLEMS = [
    ("Tom has 3 apples and buys 5 more. How many apples does Tom have now?", 8),
    ("Ben reads 12 pages a day. How many pages does he read in 4 days?", 48),
    ("Lisa has 20 dollars. She spends 8 dollars on a book. How many dollars does she have left?", 12),
    ("Each ticket costs $6. How much do 5 tickets cost?", 30),
    ("A farmer has 7 cows and 9 sheep. How many animals does he have in total?", 16),
    ("A baker makes 24 muffins and sells 10 of them. How many muffins are left?", 14),
    ("Mia buys 3 packs of stickers with 6 stickers in each pack. How many stickers does she buy?", 18),
    ("A train has 5 cars and each car carries 20 people. How many people can the train carry?", 100),
    ("Sam had 15 marbles and found 7 more. How many marbles does Sam have now?", 22),
    ("A garden has 4 rows of flowers with 8 flowers in each row. How many flowers are in the garden?", 32),
]
ANSWER_LINE = re.compile(r"####\s*\$?(-?[\d,]+(?:\.\d+)?)[^\n]*")


def main():
    model, tokenizer = load_model()
    prompts = [generation_prompt(tokenizer, question, SYSTEM) for question, _ in PROBLEMS]
    outputs = generate(model, prompts, SamplingConfig(max_new_tokens=160, stop_token_ids=(2,)))
    chains = []
    for number, ((question, gold), output) in enumerate(zip(PROBLEMS, outputs)):
        text = tokenizer.decode(output, skip_special_tokens=True)
        answer = ANSWER_LINE.search(text)
        if answer is None or float(answer.group(1).replace(",", "")) != gold:
            continue
        chains.append({"id": f"demo-{number}", "question": question, "reasoning": text[: answer.start()],
                       "answer": answer.group(0).strip(), "system": SYSTEM, "gold": str(gold)})
    path = os.path.join(os.path.dirname(__file__), "demo_chains.jsonl")
    write_jsonl_atomic(path, chains)
    print(f"kept {len(chains)} of {len(PROBLEMS)} chains -> {path}")


if __name__ == "__main__":
    main()
