"""Prompt strings byte-for-byte against literals written from docs/method.md §2, and the
located-step parsing of §2.4. The literals are typed out by hand on purpose: building them
with the code under test would prove nothing."""

from __future__ import annotations

import pytest

from rlmec.shared import prompts

QUESTION = "Tom has 3 apples and buys 2 more. How many apples?"
REFERENCE = "Tom has 3 + 2 = 5 apples.\n#### 5"
PREDICTION = "Tom has 3 apples.\nHe buys 2 more, so 3 * 2 = 6.\nThe answer is: 6"

HEAD = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n### Instruction:\n"
)
LOCATE_INSTR = (
    "Given the problem, correct solution and the prediction from language models. The method "
    "in prediction might be different with correct solution, but it is also correct. You need "
    "to identify which step of the prediction is the first wrong step, and write down the label "
    "of the first wrong step."
)
REWRITE_INSTR = (
    "Given the problem and the correct solution, you need to correct the mistakes in prediction "
    "to get the correct answer. You should make minimal modifications."
)
LOCATE_INPUT = (
    "Problem: Tom has 3 apples and buys 2 more. How many apples?\n"
    "Correct solution: [0] Tom has 3 + 2 = 5 apples.\n[1] #### 5\n"
    "Prediction: [0] Tom has 3 apples.\n[1] He buys 2 more, so 3 * 2 = 6.\n[2] The answer is: 6"
)
REWRITE_INPUT = (
    "Problem: Tom has 3 apples and buys 2 more. How many apples?\n"
    "Correct solution: Tom has 3 + 2 = 5 apples.\n#### 5\n"
    "Prediction: Tom has 3 apples.\nHe buys 2 more, so 3 * 2 = 6.\nThe answer is: 6"
)


def test_locate_prompt_literal() -> None:
    expected = HEAD + LOCATE_INSTR + "\n\n### Input:\n" + LOCATE_INPUT + "\n\n### Response:\n"
    assert prompts.locate_prompt(QUESTION, REFERENCE, PREDICTION) == expected


def test_locate_prompt_has_one_newline_before_instruction() -> None:
    text = prompts.locate_prompt(QUESTION, REFERENCE, PREDICTION)
    assert "completes the request.\n### Instruction:\n" in text
    assert "\n\n### Instruction:" not in text


@pytest.mark.parametrize(
    ("step", "response"),
    [
        (0, "Correct prediction:\n"),
        (1, "Correct prediction:Tom has 3 apples.\n"),
        (2, "Correct prediction:Tom has 3 apples.\nHe buys 2 more, so 3 * 2 = 6.\n"),
    ],
)
def test_rewrite_prompt_literal_with_verbatim_prefix(step: int, response: str) -> None:
    expected = (
        HEAD + REWRITE_INSTR + "\n\n### Input:\n" + REWRITE_INPUT + "\n\n### Response:\n" + response
    )
    assert prompts.rewrite_prompt(QUESTION, REFERENCE, PREDICTION, step) == expected


def test_rewrite_prefix_keeps_whitespace_and_empty_lines_verbatim() -> None:
    prediction = "  step zero  \n\nstep two\t\nstep three"
    assert prompts.rewrite_prefix(prediction, 3) == "  step zero  \n\nstep two\t"
    assert prompts.rewrite_prefix(prediction, 0) == ""


def test_rewrite_prompt_step_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"step \(3\) is outside the prediction's steps 0\.\.2"):
        prompts.rewrite_prompt(QUESTION, REFERENCE, PREDICTION, 3)
    with pytest.raises(ValueError, match=r"step \(-1\)"):
        prompts.rewrite_prefix(PREDICTION, -1)


def test_scoring_prompt_literal_ends_at_correct_prediction_colon() -> None:
    expected = (
        HEAD
        + REWRITE_INSTR
        + "\n\n### Input:\n"
        + REWRITE_INPUT
        + "\n\n### Response:\nCorrect prediction:"
    )
    assert prompts.scoring_prompt(QUESTION, REFERENCE, PREDICTION) == expected


def test_training_texts_literal() -> None:
    scoring = (
        HEAD
        + REWRITE_INSTR
        + "\n\n### Input:\n"
        + REWRITE_INPUT
        + "\n\n### Response:\nCorrect prediction:"
    )
    target = "  Tom has 3 apples.\nHe buys 2 more, so 3 + 2 = 5.\nThe answer is: 5\n"
    assert prompts.rewrite_training_text(QUESTION, REFERENCE, PREDICTION, target) == (
        scoring + "Tom has 3 apples.\nHe buys 2 more, so 3 + 2 = 5.\nThe answer is: 5"
    )
    locate = HEAD + LOCATE_INSTR + "\n\n### Input:\n" + LOCATE_INPUT + "\n\n### Response:\n"
    assert prompts.locate_training_text(QUESTION, REFERENCE, PREDICTION, 12) == (
        locate + "The first error step is [12]"
    )


def test_teacher_messages_literal() -> None:
    example = [{"role": "user", "content": "ex"}, {"role": "assistant", "content": "ex reply"}]
    locate = prompts.teacher_locate_messages(QUESTION, REFERENCE, PREDICTION, example)
    assert locate == [*example, {"role": "user", "content": LOCATE_INSTR + "\n\n" + LOCATE_INPUT}]
    rewrite = prompts.teacher_rewrite_messages(QUESTION, REFERENCE, PREDICTION, 1)
    assert rewrite == [
        {"role": "user", "content": REWRITE_INSTR + "\n\n" + REWRITE_INPUT},
        {"role": "assistant", "content": "Correct prediction: Tom has 3 apples."},
    ]


def test_policy_prompts_literal() -> None:
    problem = prompts.format_qa_problem("Where do fish live?", ["water", "trees"])
    assert problem == "Where do fish live?\nOptions:\nwater\ntrees"
    assert prompts.policy_prompt("qa", problem) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nWhere do fish live?\nOptions:\nwater\n"
        "trees\n\n### Response: Let's think step by step.\n"
    )
    assert prompts.policy_prompt("math", "What is 2+3?") == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nWhat is 2+3?\n\n### Response:"
    )


def test_step_splitting_and_labelling() -> None:
    assert prompts.split_steps("a\n\nb") == ["a", "", "b"]
    assert prompts.label_steps("a\n\nb") == "[0] a\n[1] \n[2] b"
    assert prompts.label_steps("") == "[0] "
    labelled = prompts.label_steps("\n".join(f"s{i}" for i in range(12)))
    assert labelled.splitlines()[11] == "[11] s11"


def test_join_rewrite() -> None:
    assert prompts.join_rewrite("a\nb", "c") == "a\nb\nc"
    assert prompts.join_rewrite("", "c") == "c"


def test_stop_strings_with_and_without_colon() -> None:
    assert set(prompts.STOP_STRINGS) == {
        "Question:", "Question", "USER:", "USER", "ASSISTANT:", "ASSISTANT",
        "Instruction:", "Instruction", "Response:", "Response",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("reply", "num_steps", "status", "step"),
    [
        ("The first error step is [12]", 15, "located", 12),
        ("[12]", 13, "located", 12),
        ("The first error step is [0]", 1, "located", 0),
        ("[ 3 ]", 5, "located", 3),
        ("7", 10, "located", 7),
        ("The first wrong step is step 4.", 10, "located", 4),
        ("The prediction is correct.", 5, "no_error", None),
        ("There is no error in the prediction.", 5, "no_error", None),
        ("All steps are correct", 5, "no_error", None),
        ("All 3 steps are correct", 5, "no_error", None),
        ("Step 2 is wrong, the rest are correct", 5, "located", 2),
        # A reply that says there is no error is no_error even when it holds a number.
        ("There is no error in the prediction; all 4 steps are correct.", 5, "no_error", None),
        ("No step is wrong: steps 0 to 3 are all correct.", 5, "no_error", None),
        ("None of the 3 steps is wrong.", 5, "no_error", None),
        ("The prediction does not contain any errors in its 4 steps.", 5, "no_error", None),
        ("I cannot tell.", 5, "unparsed", None),
        ("Maybe around step 1.5", 5, "unparsed", None),
        ("", 5, "unparsed", None),
        ("The first error step is [12]", 12, "out_of_range", None),
        ("[5]", 3, "out_of_range", None),
        # A count of steps is never a step index (issue 26, item 8).
        ("Everything checks out: none of the 6 steps has an error.", 10, "no_error", None),
        ("None of the 3 steps has an error.", 10, "no_error", None),
        ("The 4 steps contain no mistakes.", 10, "no_error", None),
        ("I checked all 5 steps and found nothing wrong.", 10, "no_error", None),
        ("Each of the 3 steps is fine.", 10, "no_error", None),
        ("There are 5 steps and step 3 is wrong.", 10, "located", 3),
        ("Of the 6 steps, step 2 has an error.", 10, "located", 2),
        ("Step 1 has no error, but step 2 is wrong.", 10, "located", 2),
        ("Step 2 of 6 is wrong.", 10, "located", 2),
        ("The error is in step 4.", 10, "located", 4),
        ("Step 4", 10, "located", 4),
        ("It has 6 steps.", 10, "unparsed", None),
        ("I cannot tell which step is wrong.", 10, "unparsed", None),
    ],
)
def test_parse_located_step(reply: str, num_steps: int, status: str, step: int | None) -> None:
    located = prompts.parse_located_step(reply, num_steps)
    assert (located.status, located.step) == (status, step)


def test_out_of_range_message_names_the_step_and_the_range() -> None:
    located = prompts.parse_located_step("The first error step is [12]", 3)
    assert "12" in located.message and "0..2" in located.message


def test_bracket_wins_over_correct_words_and_other_numbers() -> None:
    located = prompts.parse_located_step("Steps 0 and 1 are correct; the first error is [2]", 4)
    assert (located.status, located.step) == ("located", 2)
