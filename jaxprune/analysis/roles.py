"""Functional roles of reasoning tokens (SPEC section 6): a deterministic tagger over words, mapped onto model tokens.

Six categories by strict priority: the first rule that matches a word decides.

1. SYMBOLIC_MATH: numbers (with currency, percent, thousands separators, decimals, fractions), operators and
   equation signs, a letter or `x` standing between numbers or operators (a variable, or `0.2 x 50`).
2. META_DISCOURSE: the words of a discourse phrase ("to find", "we need to", "the final answer is", "first", "now",
   "so", "let's", ...), step numbers ("Step 2", "2." opening a line) and list markers.
3. COREFERENCE: pronouns and referential determiners (she, her, it, they, we, this, these, ...).
4. ENTITY_NAME: people's names (capitalised words not opening a sentence, and every name the question uses) and
   counted objects (a noun right after a number, in the question or the reasoning, and its later mentions).
5. VERBAL_MATH: arithmetic in words ("half", "twice", "total", "remaining", "more", "per", "rate", "multiply", ...).
6. FUNCTION ("Grammar"): everything else: articles, prepositions, conjunctions, auxiliaries, other verbs and
   adjectives, punctuation, formatting (markdown `**`) and whitespace.

The rules read the word and its neighbours only, so the same word in the same role gets the same label wherever it
occurs. A model token takes the highest-priority label among the words it overlaps (whitespace-only tokens are
FUNCTION).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

CATEGORIES = ("SYMBOLIC_MATH", "META_DISCOURSE", "COREFERENCE", "ENTITY_NAME", "VERBAL_MATH", "FUNCTION")
PRIORITY = {category: rank for rank, category in enumerate(CATEGORIES)}

_WORD = re.compile(r"""
    (?P<number>[$€£]?\d+(?:,\d{3})*(?:\.\d+)?%?|[$€£]?\.\d+%?)  # 48, $1,200, 0.5, 25%
  | (?P<format>\*\*|__|`+)                                   # markdown emphasis and code marks
  | (?P<symbol>[-+*/=×÷^<>()%$€£])                           # operators, equation signs, currency alone
  | (?P<word>[A-Za-z]+(?:'[A-Za-z]+)?)                       # words, contractions (let's)
  | (?P<space>\s+)
  | (?P<other>.)                                             # punctuation and anything else
""", re.VERBOSE)

META_PHRASES = tuple(tuple(p.split()) for p in (
    "the final answer is", "the answer is", "we need to", "we have to", "we can", "to find", "to calculate",
    "to determine", "to figure out", "to get", "let's", "let us", "let", "first", "firstly", "second", "secondly", "third",
    "next", "then", "now", "so", "therefore", "thus", "hence", "finally", "step", "in conclusion", "answer"))
COREFERENCE_WORDS = frozenset(
    "she her hers herself he him his himself it its itself they them their theirs themselves we us our ours ourselves "
    "this these those".split())
VERBAL_MATH_WORDS = frozenset(
    "half halves twice double doubled triple tripled total totals altogether remaining remain remains left more less "
    "fewer per each every rate sum difference product quotient times multiply multiplied multiplying divide divided "
    "dividing add added adding plus minus subtract subtracted subtracting percent percentage quarter average combined "
    "increase increased decrease decreased split share equal equals equally twice thrice dozen dozens".split())
_SENTENCE_BREAKS = (".", "!", "?", ":", "-", "\n")  # pieces after which a capitalised word opens a sentence
# Instructions that open questions ("Find the ...") are not names.
_INSTRUCTIONS = frozenset("find calculate compute determine solve write show use suppose assume given "
                          "express simplify evaluate".split())
GRAMMAR_WORDS = frozenset(
    "a an the of in on at for to from by with into over under about and or but nor so yet if than as that which who "
    "whom whose is are was were be been being am has have had do does did will would can could shall should may "
    "might must not no there here how what when where why all any some one also just only very".split())


@dataclasses.dataclass(frozen=True)
class Word:
    """One piece of the text (word, number, symbol, punctuation or whitespace) with its character span and role."""

    text: str
    start: int
    end: int
    kind: str      # number, symbol, word, space, other
    role: str


def _pieces(text: str) -> list[tuple[str, int, int, str]]:
    return [(m.group(), m.start(), m.end(), m.lastgroup) for m in _WORD.finditer(text)]


def _normal(word: str) -> str:
    """Lower case without a plural `s`, so that "apple" and "Apples" are one entity."""
    word = word.lower()
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _could_be_entity(word: str) -> bool:
    lowered = word.lower()
    return len(word) > 1 and lowered not in GRAMMAR_WORDS | VERBAL_MATH_WORDS | COREFERENCE_WORDS | _INSTRUCTIONS \
        and not any(lowered == phrase[0] for phrase in META_PHRASES if len(phrase) == 1)


def entities_of(text: str, *, sentence_subjects: bool = False) -> set[str]:
    """Names and counted objects a text introduces: capitalised words that do not open a sentence, what a number
    counts (`_counted`), and with `sentence_subjects` (for questions, which open with
    names: "Natalia sold ...") a capitalised word opening a sentence before another word."""
    pieces = [p for p in _pieces(text) if p[3] != "space"]
    names = set()
    for index, (word, _, _, kind) in enumerate(pieces):
        if kind != "word" or not _could_be_entity(word):
            continue
        before = pieces[index - 1] if index else None
        after = pieces[index + 1] if index + 1 < len(pieces) else None
        opens_sentence = before is None or before[0] in _SENTENCE_BREAKS
        capitalised = word[0].isupper() and (not opens_sentence or (
            sentence_subjects and after is not None and after[3] == "word"))
        if capitalised or _counted(pieces, index):
            names.add(_normal(word))
    return names


_DETERMINERS = frozenset("the her his their its our my your".split())


def _counted(pieces, index: int) -> bool:
    """Whether the word at `index` names what a number counts: "48 clips", "48 of her friends", "3 packs of
    cards"."""
    at = index - 1
    if at >= 0 and pieces[at][0].lower() in _DETERMINERS:
        at -= 1
    if at >= 0 and pieces[at][3] == "number":
        return True
    if at >= 0 and pieces[at][0].lower() == "of":
        at -= 1
        if at >= 0 and pieces[at][3] == "word":
            at -= 1
        return at >= 0 and pieces[at][3] == "number"
    return False


def tag_words(text: str, question: str = "") -> list[Word]:
    """Every piece of `text` with its role; `question` lends its names and counted objects."""
    pieces = _pieces(text)
    solid = [i for i, p in enumerate(pieces) if p[3] != "space"]
    lowered = [p[0].lower() for p in pieces]
    entities = entities_of(question, sentence_subjects=True) | entities_of(text)
    meta = set()  # words of discourse phrases (before coreference: "we need to")
    for position in range(len(solid)):
        for phrase in META_PHRASES:
            span = solid[position:position + len(phrase)]
            if len(span) == len(phrase) and all(lowered[i] == w for i, w in zip(span, phrase)):
                meta.update(span)

    def neighbour(position: int, offset: int):
        at = position + offset
        return pieces[solid[at]] if 0 <= at < len(solid) else None

    roles = ["FUNCTION"] * len(pieces)
    for position, index in enumerate(solid):
        word, _, _, kind = pieces[index]
        before, after = neighbour(position, -1), neighbour(position, 1)
        line_start = position == 0 or "\n" in text[pieces[solid[position - 1]][2]:pieces[index][1]]
        if kind == "number":
            step_number = before is not None and before[0].lower() == "step"
            list_marker = line_start and after is not None and after[0] in ".)"
            roles[index] = "META_DISCOURSE" if step_number or list_marker else "SYMBOLIC_MATH"
        elif kind == "symbol":
            roles[index] = "META_DISCOURSE" if word == "-" and line_start else "SYMBOLIC_MATH"
        elif kind == "word":
            beside_symbol = any(n is not None and n[3] == "symbol" for n in (before, after))
            between_numbers = all(n is not None and n[3] == "number" for n in (before, after))
            if len(word) == 1 and word not in "aAI" and (beside_symbol or between_numbers):
                roles[index] = "SYMBOLIC_MATH"  # a variable, or "0.2 x 50"
            elif index in meta:
                roles[index] = "META_DISCOURSE"
            elif lowered[index] in COREFERENCE_WORDS:
                roles[index] = "COREFERENCE"
            elif (_could_be_entity(word) and _normal(word) in entities) or (
                    len(word) > 1 and word[0].isupper() and before is not None and before[0] not in _SENTENCE_BREAKS
                    and before[3] != "format" and roles[solid[position - 1]] != "META_DISCOURSE"
                    and lowered[index] not in VERBAL_MATH_WORDS | _INSTRUCTIONS):  # "in May", "Bob knows"
                roles[index] = "ENTITY_NAME"  # also any capitalised word inside a sentence ("in May")
            elif lowered[index] in VERBAL_MATH_WORDS:
                roles[index] = "VERBAL_MATH"
    return [Word(text, start, end, kind, role) for (text, start, end, kind), role in zip(pieces, roles)]


def token_roles(token_texts: Sequence[str], question: str = "") -> list[str]:
    """The role of each model token of a text split as `token_texts` (their concatenation is the text): the
    highest-priority role among the non-space pieces it overlaps, FUNCTION for whitespace."""
    words = tag_words("".join(token_texts), question)
    roles, start, first = [], 0, 0
    for token in token_texts:
        end = start + len(token)
        while first < len(words) and words[first].end <= start:
            first += 1
        best = "FUNCTION"
        for word in words[first:]:
            if word.start >= end:
                break
            if word.kind != "space" and PRIORITY[word.role] < PRIORITY[best]:
                best = word.role
        roles.append(best)
        start = end
    return roles
