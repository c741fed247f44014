"""System prompts and the token split of a rendered chat into prompt / reasoning / answer spans.

The scored sequence is the chat-template rendering of [system, user question, assistant: reasoning + answer]. As in
the reference implementation, reasoning and answer are tokenized as separate segments: the template is rendered with
marker strings in place of the assistant text, split at the markers, and each piece is tokenized on its own. The
token ids are concatenated, never re-tokenized.

A thinking chain (`thinking=True`, the records of reasoning models) renders its reasoning inside `<think>...</think>`
as the model's template does (Qwen3's takes the block apart and rebuilds it): the opening tag falls in the prompt
span, the closing one and whatever the template writes between the block and the answer in the answer span, so only
the inside of the block is reasoning.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from jaxprune.data.answers import THINK_CLOSE, THINK_OPEN
from jaxprune.tasks import TASKS

# The system prompts that ask for each task's answer format (SPEC section 4), by name: each task's own, and variants
# such as `gsm8k_hash` (GSM8K's `#### <number>` line, which small models follow where they ignore JSON).
SYSTEM_PROMPTS = {name: text for task_name in sorted(TASKS) for name, text in TASKS[task_name].system_prompts.items()}
GSM8K_SYSTEM_PROMPT = SYSTEM_PROMPTS["gsm8k"]

_REASONING_MARK = "\ue000jaxprune-reasoning\ue000"
_ANSWER_MARK = "\ue000jaxprune-answer\ue000"


@dataclasses.dataclass(frozen=True)
class TokenSplit:
    """Token ids of one chain: `prompt` (everything before the reasoning), `reasoning`, and `answer` (the answer plus
    the template's end-of-turn tokens: exactly what is scored after the reasoning)."""

    prompt: tuple[int, ...]
    reasoning: tuple[int, ...]
    answer: tuple[int, ...]

    def chain(self, reasoning: Sequence[int] | None = None) -> np.ndarray:
        """The whole chain's token ids (int32), with `reasoning` in place of the split's own if given."""
        middle = self.reasoning if reasoning is None else reasoning
        return np.concatenate([self.prompt, middle, self.answer]).astype(np.int32)


def chat_messages(question: str, system: str | None, assistant: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": question})
    if assistant is not None:
        messages.append({"role": "assistant", "content": assistant})
    return messages


def _encode(tokenizer, text: str) -> tuple[int, ...]:
    return tuple(tokenizer(text, add_special_tokens=False).input_ids) if text else ()


def assistant_text(reasoning: str, answer: str, thinking: bool = False) -> str:
    """The assistant message of a chain: reasoning then answer, the reasoning in a think block if `thinking`."""
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{answer}" if thinking else reasoning + answer


class TemplateError(ValueError):
    """A chat template a chain cannot be rendered under; the message names the tokenizer."""


def split_chain(tokenizer, question: str, reasoning: str, answer: str, system: str | None = None, *,
                thinking: bool = False) -> TokenSplit:
    """Tokenizes a chain into its prompt / reasoning / answer spans under the tokenizer's chat template."""
    content = assistant_text(_REASONING_MARK, _ANSWER_MARK, thinking)
    rendered = tokenizer.apply_chat_template(chat_messages(question, system, content), tokenize=False)
    if thinking and _REASONING_MARK not in rendered:
        return _split_dropped_thinking(tokenizer, question, reasoning, answer, system)
    if rendered.count(_REASONING_MARK) != 1 or rendered.count(_ANSWER_MARK) != 1:
        raise TemplateError(f"{_name(tokenizer)}: the chat template does not render the assistant message "
                            "verbatim; cannot split the chain")
    before, rest = rendered.split(_REASONING_MARK)
    between, after = rest.split(_ANSWER_MARK)
    if between and not thinking:
        raise TemplateError(f"{_name(tokenizer)}: the chat template inserts text inside the assistant message; "
                            "cannot split the chain")
    return TokenSplit(_encode(tokenizer, before), _encode(tokenizer, reasoning),
                      _encode(tokenizer, between + answer + after))


def _split_dropped_thinking(tokenizer, question, reasoning, answer, system) -> TokenSplit:
    """A thinking chain under a template that drops think blocks from assistant turns (DeepSeek-R1 distills keep
    only what follows `</think>` in the history): the chain is what the model writes after its generation prompt
    (which opens the block, or is given the opening tag), closed by the template's end of turn."""
    rendered = tokenizer.apply_chat_template(chat_messages(question, system, _ANSWER_MARK), tokenize=False)
    prompt = tokenizer.apply_chat_template(chat_messages(question, system), tokenize=False, add_generation_prompt=True)
    if rendered.count(_ANSWER_MARK) != 1:
        raise TemplateError(f"{_name(tokenizer)}: the chat template does not render the assistant message "
                            "verbatim; cannot split the chain")
    if not prompt.rstrip("\n").endswith(THINK_OPEN):
        prompt += THINK_OPEN + "\n"
    end_of_turn = rendered.split(_ANSWER_MARK)[1]
    return TokenSplit(_encode(tokenizer, prompt), _encode(tokenizer, reasoning),
                      _encode(tokenizer, f"\n{THINK_CLOSE}\n\n{answer}{end_of_turn}"))


def _name(tokenizer) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def generation_prompt(tokenizer, question: str, system: str | None = None) -> tuple[int, ...]:
    """Token ids of the prompt that asks the model to answer `question` (ends with the assistant header)."""
    text = tokenizer.apply_chat_template(chat_messages(question, system), tokenize=False, add_generation_prompt=True)
    return _encode(tokenizer, text)
