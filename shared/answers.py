"""§4 answer extraction and checking (math and QA).

Math answers are compared in three stages, cheapest first: normalised string equality, numeric
value within 1e-4 (thousands separators, ``$``, ``%``, units and ``\\text{}`` ignored), then
symbolic equivalence with Hugging Face's ``math-verify``. ``math-verify`` is imported lazily (it
costs ~0.8 s) and only sees short answers: sympy can hang on huge inputs, and its own timeout
uses ``signal.alarm``, which works only in the main thread.

QA answers are option texts compared case-insensitively (the released evaluation lower-cased
only the prediction, a defect named in §4).
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass

from rlmec.shared.prompts import TaskType

# Longest answer handed to math-verify; longer ones are compared as strings and numbers only.
MAX_SYMBOLIC_CHARS = 300
# Seconds math-verify may spend on one parse or comparison (main thread only, see above).
SYMBOLIC_TIMEOUT_S = 3
NUMERIC_TOLERANCE = 1e-4

_ANSWER_MARKER = re.compile(r"the answer is", re.IGNORECASE)
_BOX_COMMANDS = ("\\boxed", "\\fbox")
_GSM8K_MARKER = re.compile(r"####[ \t]*([^\n]*)")
_NUMBER = re.compile(r"-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:/\d+)?")
_ANSWER_LINE = re.compile(r"^[ \t]*(?:A|Answer)[ \t]*:[ \t]*(\S[^\n]*)$", re.MULTILINE)
_FINAL_NUMBER = re.compile(r"(-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:/\d+)?)[ \t]*\$?[ \t]*\.?\s*\Z")
# Words between "The answer is" and the answer itself ("The answer is therefore 3").
_FILLER = re.compile(r"^(?:therefore|thus|hence)\b[ \t,:]*", re.IGNORECASE)


@dataclass(frozen=True)
class AnswerCheck:
    """Outcome of :func:`check_prediction`. ``reason`` is one of ``match``, ``mismatch``,
    ``no_answer`` (the prediction has no final answer: wrong, §4) or ``empty_prediction``."""

    correct: bool
    predicted_answer: str | None
    reason: str


# --- extraction ---------------------------------------------------------------------------


def _boxed_content(text: str, start: int) -> str | None:
    """Content of the box command at ``start`` with balanced braces; ``\\boxed 5`` (no braces)
    gives ``5``; an unclosed box (a truncated generation) gives None."""
    command = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
    i = start + len(command)
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text):
        return None
    if text[i] != "{":
        match = re.match(r"[^\s$]+", text[i:])
        return match.group().rstrip(".") if match else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


def _last_box_start(text: str) -> int:
    return max(text.rfind(c) for c in _BOX_COMMANDS)


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced."""
    start = _last_box_start(text)
    return None if start < 0 else _boxed_content(text, start)


def _last_marker_end(text: str) -> int:
    """End of the last ``The answer is`` (any case), or -1."""
    end = -1
    for match in _ANSWER_MARKER.finditer(text):
        end = match.end()
    return end


def _after_marker(text: str) -> str | None:
    """The first non-empty line after the last ``The answer is`` (any case, colon optional);
    None when the marker is absent."""
    end = _last_marker_end(text)
    if end < 0:
        return None
    rest = text[end:].lstrip(" \t:")
    offset = 0
    for line in rest.split("\n"):
        if line.strip():
            # A box inside the answer line wins (MATH: "the answer is $3+2=\boxed{5}$").
            box = _last_box_start(line)
            if box >= 0:
                return _boxed_content(rest, offset + box)
            return _clean_answer(line)
        offset += len(line) + 1
    return ""


def _clean_answer(answer: str) -> str:
    answer = _FILLER.sub("", answer.strip())
    if answer.endswith("."):
        answer = answer[:-1].rstrip()
    if len(answer) >= 2 and answer[0] == "$" and answer[-1] == "$":
        answer = answer.strip("$").strip()
    return answer


def extract_answer(text: str, task: TaskType) -> str | None:
    """The final answer of a solution (§4), or None when it has none.

    Math: the text after the last ``The answer is`` (colon optional), else the last
    ``\\boxed{...}``, else GSM8K's ``#### N``, else the last number. QA: the text after the last
    ``The answer is``, stripped of a trailing period.
    """
    marked = _after_marker(text)
    if task == "qa":
        return marked or None
    # The last statement of the answer wins: MATH prose says "the answer is a multiple of 3 ...
    # so ... \boxed{42}"; GSM8K-style text says "The answer is therefore 3.\n#### 3".
    stated = [
        (_last_marker_end(text), marked),
        (_last_box_start(text), last_boxed(text)),
        (_last_gsm8k_start(text), _gsm8k_answer(text)),
    ]
    found = [(pos, answer) for pos, answer in stated if pos >= 0 and answer]
    if found:
        return max(found, key=lambda f: f[0])[1]
    numbers = _NUMBER.findall(text)
    return numbers[-1].rstrip(",") if numbers else None


def _last_gsm8k_start(text: str) -> int:
    return text.rfind("####")


def _gsm8k_answer(text: str) -> str | None:
    found = list(_GSM8K_MARKER.finditer(text))
    if found and found[-1].group(1).strip():
        return _clean_answer(found[-1].group(1))
    return None


def reference_answer(solution: str, task: TaskType) -> str | None:
    """The answer a reference solution states: GSM8K ``#### N``, MATH ``\\boxed{}`` (or a
    MetaMath-style ``The answer is``) for math; ``The answer is`` for QA."""
    if task == "qa":
        return _after_marker(solution) or None
    return (
        _gsm8k_answer(solution)
        or last_boxed(solution)
        or _after_marker(solution)
        or _answer_line(solution)
        or _final_number(solution)
    )


def _answer_line(solution: str) -> str | None:
    """The last ``A: 18`` / ``Answer: 18`` line."""
    found = _ANSWER_LINE.findall(solution)
    return _clean_answer(found[-1]) or None if found else None


def _final_number(solution: str) -> str | None:
    """A number that ends the solution ("... so she has 18." gives 18)."""
    # Only the tail: a search over a long digit run would be quadratic.
    match = _FINAL_NUMBER.search(solution[-100:])
    return match.group(1).rstrip(",") if match else None


# --- comparison ---------------------------------------------------------------------------

_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_LATEX_NOISE = re.compile(r"\\[!,;: ]|\\left|\\right|\\displaystyle|\\\$|\$|\\%|%|°")
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?|\\circ")
_THOUSANDS = re.compile(r"(?<=\d)(?:,|\{,\})(?=\d{3}(?!\d))")
_ASSIGNMENT = re.compile(r"^[a-zA-Z]\s*=\s*")
# LaTeX reads an unbraced argument as one character: \frac123 is (1/2)·3, not 12/3.
_FRAC = re.compile(r"^(-?)\\frac\s*(?:\{\s*(-?\d+)\s*\}|(\d))\s*(?:\{\s*(-?\d+)\s*\}|(\d))$")
# A number, then whitespace-separated unit words. Units are matched word by word (not with a
# repeated group over letters, which backtracks exponentially on a long letter run).
_LEADING_NUMBER = re.compile(r"(-?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+)?)(.*)", re.DOTALL)
_UNIT = re.compile(r"[a-zA-Z]{2,}\.?(?:\^[23])?")
# Inputs sympy would evaluate into astronomically large numbers (a big exponent or factorial,
# a huge literal; power towers are found by _has_power_tower): compared as strings and numbers
# only, never symbolically. Policies emit such strings by accident early in RL.
_SYMBOLIC_BOMBS = re.compile(
    r"\^\s*[({]?\s*-?\d{4,}"  # 10^{10000}
    r"|\d{3,}\s*!|!\s*!|\\Gamma|factorial"  # 1000!, 5!!
    r"|\d{200,}"  # a 200-digit literal
    r"|\*\*"  # Python's power operator
)
_CLOSING = {"{": "}", "(": ")", "[": "]"}


def _normalise_latex(answer: str) -> str:
    answer = _TEXT_WRAPPER.sub(r"\1", answer)
    answer = _DEGREES.sub("", answer)
    answer = _LATEX_NOISE.sub("", answer)
    answer = answer.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return " ".join(answer.split()).rstrip(".").strip()


def _to_number(answer: str) -> float | None:
    """The value of an answer that is a plain number, fraction or number with units."""
    text = _THOUSANDS.sub("", _normalise_latex(answer))
    text = _ASSIGNMENT.sub("", text).strip()
    frac = _FRAC.match(text)
    try:
        if frac:
            sign = -1.0 if frac.group(1) else 1.0
            num, den = frac.group(2) or frac.group(3), frac.group(4) or frac.group(5)
            return sign * int(num) / int(den)
        match = _LEADING_NUMBER.fullmatch(text)
        if match is None or not all(_UNIT.fullmatch(w) for w in match.group(2).split()):
            return None
        num, _, den = match.group(1).partition("/")
        return float(num) / float(den) if den else float(num)
    except (ZeroDivisionError, ValueError, OverflowError):
        return None


def _exponent(text: str, caret: int) -> str:
    """The exponent after the ``^`` at ``caret``: a bracketed group, else the next token."""
    i = caret + 1
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] in _CLOSING:
        opening, closing, depth = text[i], _CLOSING[text[i]], 0
        for j in range(i, len(text)):
            depth += (text[j] == opening) - (text[j] == closing)
            if depth == 0:
                return text[i + 1 : j]
        return text[i + 1 :]
    match = re.match(r"[\w.]*\s*", text[i:])
    return text[i : i + (match.end() if match else 0) + 1]


def _has_power_tower(text: str) -> bool:
    """Whether some exponent holds another power (``10^{10^{8}}``, ``2^3^4``, ``2^(3^4)``).
    Quadratic at worst: callers bound the length first (MAX_SYMBOLIC_CHARS)."""
    return any("^" in _exponent(text, i) for i, c in enumerate(text) if c == "^")


def _symbolic_match(predicted: str, reference: str) -> bool:
    """math-verify equivalence; any parser failure or timeout counts as "not equal"."""
    if max(len(predicted), len(reference)) > MAX_SYMBOLIC_CHARS:
        return False
    if any(_SYMBOLIC_BOMBS.search(t) or _has_power_tower(t) for t in (predicted, reference)):
        return False
    # Imported here: ~0.8 s, paid only when an answer needs symbolic checking.
    import math_verify

    # signal.alarm-based timeouts raise outside the main thread: there the length bound above
    # is the guard.
    timeout = SYMBOLIC_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    try:
        gold = math_verify.parse(f"${reference.strip('$')}$", parsing_timeout=timeout)
        pred = math_verify.parse(f"${predicted.strip('$')}$", parsing_timeout=timeout)
        if not gold or not pred:
            return False
        return bool(math_verify.verify(gold, pred, timeout_seconds=timeout))
    except Exception:  # math-verify/sympy raise many types (incl. TimeoutException)
        return False


def _normalise_qa(answer: str) -> str:
    return " ".join(answer.split()).rstrip(".").strip().casefold()


def _require_reference(reference: str) -> None:
    if not reference or not reference.strip():
        raise ValueError(
            f"reference answer ({reference!r}) is empty; pass the reference's final answer "
            "(e.g. from reference_answer(solution, task))"
        )


def answers_match(predicted: str | None, reference: str, task: TaskType) -> bool:
    """Whether ``predicted`` equals ``reference`` (§4). None never matches. Raises ValueError
    for an empty reference."""
    _require_reference(reference)
    if predicted is None or not predicted.strip():
        return False
    if task == "qa":
        return _normalise_qa(predicted) == _normalise_qa(reference)
    if _normalise_latex(predicted) == _normalise_latex(reference):
        return True
    pred_value, ref_value = _to_number(predicted), _to_number(reference)
    if pred_value is not None and ref_value is not None:
        # Absolute tolerance: a relative one would let 100000 match 100001 (GSM8K sizes); the
        # tiny relative term only absorbs float rounding of huge values.
        return math.isclose(pred_value, ref_value, rel_tol=1e-12, abs_tol=NUMERIC_TOLERANCE)
    return _symbolic_match(predicted, reference)


def check_prediction(prediction: str, reference_answer: str, task: TaskType) -> AnswerCheck:
    """Judge a whole prediction against the reference answer; no final answer means wrong."""
    _require_reference(reference_answer)
    if not prediction.strip():
        return AnswerCheck(False, None, "empty_prediction")
    predicted = extract_answer(prediction, task)
    if predicted is None:
        return AnswerCheck(False, None, "no_answer")
    correct = answers_match(predicted, reference_answer, task)
    return AnswerCheck(correct, predicted, "match" if correct else "mismatch")
