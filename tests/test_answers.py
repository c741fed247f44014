"""Answer splitting, extraction and checking on realistic model outputs, wrong ones included."""

import pytest

from jaxprune.data.answers import extract_answer, is_correct, split_reasoning_answer

GSM8K = [
    # (model output, gold, correct?)
    ('Natalia sold 48/2 = 24 clips in May.\n48 + 24 = 72.\n{"answer": "72"}', "72", True),
    ('She earns 0.2 x 50 = $10.\n{"answer": "$10"}', "10", True),
    ('Total: 1,234 + 1,000 = 2,234 apples.\n{"answer": "2,234 apples"}', "2234", True),
    ('He pays 12.50 dollars.\n{"answer": "12.5"}', "12.50", True),
    ('The answer is 5.\n{"answer": "-5"}', "5", False),
    ('First {"answer": "3"} then I fixed it.\n{"answer": 4}', "4", True),
    ("Half of 48 is 24.\n{'answer': '24'", "24", False),  # no JSON marker at all: no answer
    ('So 3 * 6 = 18.\n{"answer": "18"', "18", True),  # truncated JSON, repaired
    ("Tom has 3 + 5 = 8 apples.\n#### 8\nThe answer is 8.", "8", True),
    ("3 packs * 6 = 18 stickers.\n#### 17", "18", False),
    ("6 * 30 = 180.\n#### 180\n#### 180\n####", "180", True),  # cut off mid-repetition
    ("6 * 30 = 180.\n#### 18\nOops, I mean\n#### 180", "180", False),  # the first answer line counts
    ("I am not sure how to solve this.", "72", False),
]



def test_gsm8k_split_takes_the_last_json_answer():
    reasoning, answer = split_reasoning_answer('a {"answer": "1"} b\n{"answer": "2"}', "gsm8k")
    assert reasoning == 'a {"answer": "1"} b\n' and answer == '{"answer": "2"}'


def test_gsm8k_hash_answer_is_the_first_numbered_line_without_the_rambling_after_it():
    reasoning, answer = split_reasoning_answer("3 + 5 = 8.\n####\n#### 8 apples \n#### 8\n#### 9", "gsm8k")
    assert reasoning == "3 + 5 = 8.\n####\n" and answer == "#### 8 apples"


MATH = [
    ("We expand and collect terms. Thus, the final answer is: \\boxed{\\frac{1}{2}}", "\\frac{1}{2}", True),
    ("Therefore, the final answer is: \\boxed{0.5}", "\\frac{1}{2}", True),
    ("So, the final answer is: \\boxed{x^2+2x+1}", "(x+1)^2", True),
    ("Hence, the final answer is: \\boxed{\\sqrt{2}}", "2", False),
    ("Thus, the final answer is: \\boxed{3\\sqrt{2}", "3\\sqrt{2}", False),  # unbalanced box
    ("The area is 12.", "12", False),  # no conclusion phrase
]



MMLU_PRO = [
    ("Option C describes osmosis. Thus, the final answer is: C", "C", True),
    ("A and B are wrong. Therefore, the final answer is: (D).", "D", True),
    ("Thus, the final answer is: B", "J", False),
    ("I think it is A or C.", "A", False),
    ("B looks close. Thus, the final answer is not A but C", "C", True),
]



CASES = [("gsm8k", *case) for case in GSM8K] + [("math", *case) for case in MATH] + \
        [("mmlu_pro", *case) for case in MMLU_PRO]


@pytest.mark.parametrize("dataset, output, gold, correct", CASES)
def test_realistic_outputs_are_judged_right(dataset, output, gold, correct):
    split = split_reasoning_answer(output, dataset)
    prediction = extract_answer(split[1], dataset) if split else None
    assert is_correct(prediction, gold, dataset) is correct


@pytest.mark.parametrize("answer, expected", [('{"answer": "$1,234.50 dollars"}', "1234.50"),
                                              ('{"answer": "18.0"}', "18"), ("#### -7 apples", "-7")])
def test_gsm8k_answers_are_normalised(answer, expected):
    assert extract_answer(answer, "gsm8k") == expected


def test_unknown_dataset_is_refused():
    with pytest.raises(ValueError, match="unknown dataset 'aime'"):
        extract_answer("x", "aime")
