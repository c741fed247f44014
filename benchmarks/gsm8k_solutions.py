"""Short GSM8K chains for the pruning benchmarks: worked solutions as reasoning, with the paper's JSON-answer prompt."""

import json
import re


def gsm8k_chains(path, count):
    """GSM8K problems with their worked solutions (calculator annotations removed) as reasoning."""
    from jaxprune.data.prompts import GSM8K_SYSTEM_PROMPT

    chains = []
    for line in open(path):
        record = json.loads(line)
        solution, gold = record["answer"].split("####")
        reasoning = re.sub(r"<<[^>]*>>", "", solution).strip() + "\n"
        if 80 <= len(reasoning) <= 160:
            chains.append({"question": record["question"], "reasoning": reasoning, "system": GSM8K_SYSTEM_PROMPT,
                           "answer": json.dumps({"answer": gold.strip()})})
        if len(chains) == count:
            return chains
    return chains
