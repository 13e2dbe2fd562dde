"""The exact RLMEC prompt strings (docs/method.md §2) and step handling (§2.4).

Everything here is byte-exact with the method page; tests compare against literal strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# §2.1: one "\n" before "### Instruction:" -- the published GRMs were trained with this.
GRM_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n"
    "### Response:\n{response}"
)
LOCATE_INSTRUCTION = (
    "Given the problem, correct solution and the prediction from language models. The method in "
    "prediction might be different with correct solution, but it is also correct. You need to "
    "identify which step of the prediction is the first wrong step, and write down the label of "
    "the first wrong step."
)
REWRITE_INSTRUCTION = (
    "Given the problem and the correct solution, you need to correct the mistakes in prediction "
    "to get the correct answer. You should make minimal modifications."
)
CORRECT_PREDICTION = "Correct prediction:"
LOCATE_TARGET = "The first error step is [{step}]"

# §5 of the pipeline: greedy GRM decoding stops on these (with and without the colon).
STOP_STRINGS: tuple[str, ...] = tuple(
    s
    for word in ("Question", "USER", "ASSISTANT", "Instruction", "Response")
    for s in (f"{word}:", word)
)

# §2.3 policy prompts.
_POLICY_HEAD = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n"
)
QA_POLICY_TEMPLATE = _POLICY_HEAD + "{problem}\n\n### Response: Let's think step by step.\n"
MATH_POLICY_TEMPLATE = _POLICY_HEAD + "{query}\n\n### Response:"

TaskType = Literal["math", "qa"]


# --- steps --------------------------------------------------------------------------------


def split_steps(solution: str) -> list[str]:
    """Split a solution into steps on ``\\n`` (§2). Empty lines are steps too, so that
    ``"\\n".join(split_steps(s)) == s`` always holds and the rewrite prefix is verbatim."""
    return solution.split("\n")


def label_steps(solution: str) -> str:
    """The step-labelled form: step ``i`` (from 0) prefixed with ``[i] ``."""
    return "\n".join(f"[{i}] {step}" for i, step in enumerate(split_steps(solution)))


def rewrite_prefix(prediction: str, step: int) -> str:
    """Steps ``0..step-1`` of the prediction joined by ``\\n``, copied verbatim (§2.1)."""
    steps = split_steps(prediction)
    if not 0 <= step < len(steps):
        raise ValueError(
            f"step ({step}) is outside the prediction's steps 0..{len(steps) - 1}; "
            "give a step from the prediction's step labels"
        )
    return "\n".join(steps[:step])


def join_rewrite(prefix: str, continuation: str) -> str:
    """The rewrite is ``prefix + "\\n" + continuation`` (§2.1). With an empty prefix (step 0)
    the continuation alone: the joining newline would be a line the prediction never had."""
    return f"{prefix}\n{continuation}" if prefix else continuation


# --- GRM prompts (§2.1) -------------------------------------------------------------------


def grm_prompt(instruction: str, input_text: str, response: str = "") -> str:
    return GRM_TEMPLATE.format(instruction=instruction, input=input_text, response=response)


def locate_input(question: str, reference: str, prediction: str) -> str:
    return (
        f"Problem: {question}\nCorrect solution: {label_steps(reference)}\n"
        f"Prediction: {label_steps(prediction)}"
    )


def rewrite_input(question: str, reference: str, prediction: str) -> str:
    return f"Problem: {question}\nCorrect solution: {reference}\nPrediction: {prediction}"


def locate_prompt(question: str, reference: str, prediction: str) -> str:
    """Prompt whose greedy continuation names the first wrong step."""
    return grm_prompt(LOCATE_INSTRUCTION, locate_input(question, reference, prediction))


def rewrite_prompt(question: str, reference: str, prediction: str, step: int) -> str:
    """Prompt whose continuation rewrites the prediction from ``step`` on; the prefix (steps
    before ``step``) is in the prompt verbatim, which enforces the minimum-editing constraint."""
    prefix = rewrite_prefix(prediction, step)
    response = f"{CORRECT_PREDICTION}{prefix}\n"
    return grm_prompt(REWRITE_INSTRUCTION, rewrite_input(question, reference, prediction), response)


def scoring_prompt(question: str, reference: str, prediction: str) -> str:
    """§3.1: the prediction follows this prompt directly (no space, no newline), then EOS."""
    return grm_prompt(
        REWRITE_INSTRUCTION, rewrite_input(question, reference, prediction), CORRECT_PREDICTION
    )


def rewrite_training_text(question: str, reference: str, prediction: str, target: str) -> str:
    """GRM SFT text for the rewrite subtask (§2.1), without EOS (the trainer appends it)."""
    return scoring_prompt(question, reference, prediction) + target.strip()


def locate_training_text(question: str, reference: str, prediction: str, step: int) -> str:
    """GRM SFT text for the locate subtask, without EOS."""
    return locate_prompt(question, reference, prediction) + LOCATE_TARGET.format(step=step)


# --- teacher chat (§2.2) ------------------------------------------------------------------

ChatMessage = dict[str, str]


def teacher_locate_messages(
    question: str, reference: str, prediction: str, examples: list[ChatMessage] | None = None
) -> list[ChatMessage]:
    """Chat for a teacher LLM; ``examples`` (user/assistant turns) go before the request."""
    user = f"{LOCATE_INSTRUCTION}\n\n{locate_input(question, reference, prediction)}"
    return [*(examples or []), {"role": "user", "content": user}]


def teacher_rewrite_messages(
    question: str,
    reference: str,
    prediction: str,
    step: int,
    examples: list[ChatMessage] | None = None,
) -> list[ChatMessage]:
    """The assistant turn is prefilled with ``Correct prediction: {prefix}``; the teacher's
    completion is appended to the prefix after ``\\n`` (see :func:`join_rewrite`)."""
    user = f"{REWRITE_INSTRUCTION}\n\n{rewrite_input(question, reference, prediction)}"
    prefill = f"Correct prediction: {rewrite_prefix(prediction, step)}"
    return [
        *(examples or []),
        {"role": "user", "content": user},
        {"role": "assistant", "content": prefill},
    ]


# --- policy prompts (§2.3) ----------------------------------------------------------------


def format_qa_problem(question: str, options: list[str]) -> str:
    return question + "\nOptions:\n" + "\n".join(options)


# A small policy that finishes its answer may start a new instruction block; its generation is
# cut there (evaluation, sampling, rollouts).
POLICY_STOP: tuple[str, ...] = (
    "\n\n### Instruction",
    "Below is an instruction that describes a task",
)


def policy_prompt(task: TaskType, problem: str) -> str:
    if task == "qa":
        return QA_POLICY_TEMPLATE.format(problem=problem)
    return MATH_POLICY_TEMPLATE.format(query=problem)


# --- parsing the located step (§2.4) ------------------------------------------------------

LocateStatus = Literal["located", "no_error", "unparsed", "out_of_range"]

_BRACKETED = re.compile(r"\[\s*(\d+)\s*\]")
# A number ending a sentence ("step 4.") counts; one inside a decimal ("1.5") does not.
_NUMBER = re.compile(r"(?<![\w.])(\d+)(?!\w|\.\d)")
# A reply is read one clause at a time, so "step 1 has no error, but step 2 is wrong" is two
# claims. A full stop splits unless it sits inside a decimal.
_CLAUSE = re.compile(r"(?<!\d)\.|\.(?!\d)|[;:!?,\n]|\bbut\b", re.IGNORECASE)
# How many steps there are, never which one: "6 steps", "the 3 correct steps", "step 2 of 6".
_COUNT_AFTER = re.compile(r"\s+(?:[a-z]+\s+)?steps?\b", re.IGNORECASE)
_COUNT_BEFORE = re.compile(r"\bof\s+$", re.IGNORECASE)
_ERROR_WORD = re.compile(
    r"\b(?:wrong|errors?|erroneous|incorrect|mistakes?|mistaken|flawed)\b", re.IGNORECASE
)
_NEGATION = re.compile(
    r"\b(?:no|not|none|nothing|never|without|neither|nor|cannot|free of)\b|n't\b", re.IGNORECASE
)
_CORRECT_WORD = re.compile(r"\b(?:correct|right|fine|valid|accurate|checks? out)\b", re.IGNORECASE)
_UNSURE = re.compile(
    r"\b(?:cannot|can't|unable to) (?:tell|say|determine|decide)\b|\bnot sure\b|\bunsure\b|"
    r"\bunclear\b|\bdon't know\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class LocatedStep:
    """Outcome of parsing a locate reply. ``step`` is set only when ``status == "located"``."""

    status: LocateStatus
    step: int | None
    message: str = ""


def parse_located_step(reply: str, num_steps: int) -> LocatedStep:
    """Read the first wrong step from a GRM/teacher reply.

    ``[k]`` wins, read whole (``[12]`` is 12: the released code read only the first digit, a
    defect). Otherwise the reply is read clause by clause, and a number that counts steps
    ("none of the 6 steps", "step 2 of 6") is never a step index:

    - the first index in a clause that claims an error ("step 2 is wrong") is the step;
    - a reply that says it cannot tell is ``unparsed``;
    - one whose clauses deny an error or call the steps correct is ``no_error``;
    - a bare index ("7", "Step 4") is the step; anything else is ``unparsed``.

    A step outside ``0..num_steps-1`` is ``out_of_range``, an error of the GRM, never silently
    "correct".
    """
    match = _BRACKETED.search(reply)
    step = int(match.group(1)) if match else None
    if step is None:
        step, status = _read_clauses(reply)
        if status == "no_error":
            return LocatedStep("no_error", None, "the GRM judged the prediction correct")
        if step is None:
            return LocatedStep("unparsed", None, f"no step label in the GRM reply {reply[:200]!r}")
    if step >= num_steps:
        return LocatedStep(
            "out_of_range",
            None,
            f"the GRM located step {step}, but the prediction has steps 0..{num_steps - 1}",
        )
    return LocatedStep("located", step)


def _read_clauses(reply: str) -> tuple[int | None, LocateStatus]:
    """The step a bracket-free reply names, or why it names none."""
    says_correct, bare = False, []
    for clause in _CLAUSE.split(reply):
        indices = _step_indices(clause)
        names_error = _ERROR_WORD.search(clause) is not None
        if names_error and not _NEGATION.search(clause):
            if indices:
                return indices[0], "located"
        elif names_error or _CORRECT_WORD.search(clause):
            says_correct = True
        else:
            bare += indices
    if _UNSURE.search(reply):
        return None, "unparsed"
    if says_correct:
        return None, "no_error"
    return (bare[0], "located") if bare else (None, "unparsed")


def _step_indices(clause: str) -> list[int]:
    """The numbers of a clause that may name a step: not decimals, not counts of steps."""
    return [
        int(m.group(1))
        for m in _NUMBER.finditer(clause)
        if not _COUNT_AFTER.match(clause, m.end()) and not _COUNT_BEFORE.search(clause[: m.start()])
    ]
