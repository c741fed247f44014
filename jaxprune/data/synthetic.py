"""Seeded GSM8K-style word problems with worked solutions: the offline default when no dataset is at hand.

Each template draws names, objects and small integers from one `random.Random` and writes a two- to four-step
problem, its step-by-step solution (one equation per line) and a `#### <answer>` line, as GSM8K does. Problem i
depends only on the seed and i, so any prefix of a larger set is the smaller set.
"""

from __future__ import annotations

import random
from typing import Callable

NAMES = ("Ava", "Ben", "Chloe", "Diego", "Emma", "Farah", "Hiro", "Isla", "Jonah", "Kai", "Lena", "Mateo", "Nora",
         "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tara", "Yusuf")
ITEMS = (("apple", "apples"), ("pencil", "pencils"), ("sticker", "stickers"), ("cookie", "cookies"),
         ("marble", "marbles"), ("book", "books"), ("card", "cards"), ("shell", "shells"))
Problem = tuple[str, list[str], int]  # question, solution steps, answer


def _shopping(r: random.Random) -> Problem:
    name, (_, items) = r.choice(NAMES), r.choice(ITEMS)
    packs, price = r.randint(2, 6), r.randint(2, 9)
    cost = packs * price
    paid = cost + r.randint(1, 20)
    question = (f"{name} buys {packs} packs of {items} at ${price} per pack and pays with ${paid}. "
                f"How much change does {name} get, in dollars?")
    steps = [f"The packs cost {packs} * {price} = ${cost}.",
             f"The change is {paid} - {cost} = ${paid - cost}."]
    return question, steps, paid - cost


def _saving(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    weekly, weeks = r.randint(5, 30), r.randint(3, 10)
    saved = weekly * weeks
    spent = r.randint(5, min(40, saved - 1))
    question = (f"{name} saves ${weekly} every week for {weeks} weeks, then spends ${spent} on a gift. "
                f"How many dollars does {name} have left?")
    steps = [f"{name} saves {weekly} * {weeks} = ${saved}.", f"After the gift, {saved} - {spent} = ${saved - spent}."]
    return question, steps, saved - spent


def _sharing(r: random.Random) -> Problem:
    name, (_, items) = r.choice(NAMES), r.choice(ITEMS)
    friends, each, extra = r.randint(2, 8), r.randint(2, 9), r.randint(1, 15)
    given = friends * each
    question = (f"{name} gives {each} {items} to each of {friends} friends and still has {extra} {items} left. "
                f"How many {items} did {name} have at first?")
    steps = [f"{name} gives away {friends} * {each} = {given} {items}.",
             f"At first {name} had {given} + {extra} = {given + extra} {items}."]
    return question, steps, given + extra


def _travel(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    speed, hours = r.randint(20, 70), r.randint(2, 6)
    back_speed, back_hours = r.randint(10, speed), r.randint(1, hours - 1)
    distance, back = speed * hours, back_speed * back_hours
    question = (f"{name} drives away from home at {speed} miles per hour for {hours} hours, then drives back toward "
                f"home at {back_speed} miles per hour for {back_hours} hours. How many miles from home is {name} now?")
    steps = [f"Going out, {name} drives {speed} * {hours} = {distance} miles.",
             f"Coming back, {name} drives {back_speed} * {back_hours} = {back} miles.",
             f"{name} is {distance} - {back} = {distance - back} miles from home."]
    return question, steps, distance - back


def _garden(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    rows, per_row, eaten_percent = r.randint(3, 12), r.randint(4, 15), r.choice((10, 20, 25, 50))
    plants = rows * per_row * 4
    lost = plants * eaten_percent // 100
    question = (f"{name} plants {rows} rows of tomatoes with {per_row * 4} plants in each row. Rabbits eat "
                f"{eaten_percent}% of the plants. How many plants are left?")
    steps = [f"{name} plants {rows} * {per_row * 4} = {plants} plants.",
             f"Rabbits eat {plants} * {eaten_percent} / 100 = {lost} plants.",
             f"{plants} - {lost} = {plants - lost} plants are left."]
    return question, steps, plants - lost


def _wages(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    rate, hours, days, bonus = r.randint(8, 25), r.randint(2, 8), r.randint(2, 6), r.randint(5, 50)
    daily = rate * hours
    total = daily * days
    question = (f"{name} earns ${rate} an hour and works {hours} hours a day for {days} days. {name} also gets a "
                f"${bonus} bonus. How much does {name} earn in total?")
    steps = [f"Each day {name} earns {rate} * {hours} = ${daily}.",
             f"In {days} days that is {daily} * {days} = ${total}.",
             f"With the bonus, {total} + {bonus} = ${total + bonus}."]
    return question, steps, total + bonus


def _collection(r: random.Random) -> Problem:
    first, second = r.sample(NAMES, 2)
    _, items = r.choice(ITEMS)
    start, times = r.randint(4, 20), r.randint(2, 4)
    second_has = start * times
    lost = r.randint(1, min(10, second_has - 1))
    together = start + second_has - lost
    question = (f"{first} has {start} {items}. {second} has {times} times as many {items} as {first}. "
                f"Then {second} loses {lost} {items}. How many {items} do they have together now?")
    steps = [f"{second} has {start} * {times} = {second_has} {items}.",
             f"After losing some, {second} has {second_has} - {lost} = {second_has - lost} {items}.",
             f"Together they have {start} + {second_has - lost} = {together} {items}."]
    return question, steps, together


def _bakery(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    trays, per_tray, price = r.randint(2, 8), r.randint(6, 24), r.randint(1, 5)
    baked = trays * per_tray
    kept = r.randint(1, baked // 3)
    question = (f"{name} bakes {trays} trays of muffins with {per_tray} muffins on each tray, keeps {kept} for the "
                f"family and sells the rest for ${price} each. How many dollars does {name} make?")
    steps = [f"{name} bakes {trays} * {per_tray} = {baked} muffins.",
             f"{name} sells {baked} - {kept} = {baked - kept} muffins.",
             f"That makes {baked - kept} * {price} = ${(baked - kept) * price}."]
    return question, steps, (baked - kept) * price


TEMPLATES: tuple[Callable[[random.Random], Problem], ...] = (
    _shopping, _saving, _sharing, _travel, _garden, _wages, _collection, _bakery)


def generate_problems(count: int, seed: int = 0) -> list[dict[str, str]]:
    """`count` question records (`dataset` gsm8k) with GSM8K-style `solution`s ending in `#### <answer>`."""
    problems = []
    for index in range(count):
        r = random.Random(f"jaxprune-synthetic-{seed}-{index}")
        question, steps, answer = r.choice(TEMPLATES)(r)
        problems.append({"id": f"generated-{seed}-{index}", "dataset": "gsm8k", "question": question,
                         "gold": str(answer), "solution": "\n".join(steps) + f"\n#### {answer}"})
    return problems


def multi_part_problem(parts: list[dict[str, str]]) -> dict[str, str]:
    """Several generated problems asked as one (a worksheet): each part solved in turn, the answer their total.
    Chains as long as wanted, for pruning long reasoning: about 27 SmolLM2 reasoning tokens a part."""
    answers = [int(part["gold"]) for part in parts]
    question = ("Solve each part, then give the total of the parts' answers.\n"
                + "\n".join(f"Part {i + 1}: {part['question']}" for i, part in enumerate(parts)))
    reasoning = "".join(f"Part {i + 1}:\n{part['solution'].split('####')[0].strip()}\n" for i, part in enumerate(parts))
    reasoning += f"The total is {' + '.join(map(str, answers))} = {sum(answers)}.\n"
    return {"question": question, "reasoning": reasoning, "gold": str(sum(answers))}
