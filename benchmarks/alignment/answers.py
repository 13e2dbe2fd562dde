"""Answer-checking agreement (§4): every reference solution of the test sets judged against its
own answer, plus a policy-style restatement and a wrong answer that must not match.

    python -m benchmarks.alignment.answers [--no-write]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks.report import machine, replace_section, today
from rlmec.data.tasks import raw_rows
from rlmec.shared.answers import check_prediction, reference_answer
from rlmec.shared.prompts import TaskType

HEADING = "answer checking (agreement on reference solutions)"
# (file, task, solution field, answer field or None = the solution's own stated answer)
SETS: list[tuple[str, TaskType, str, str | None]] = [
    ("gsm8k_test", "math", "answer", None),
    ("math_test", "math", "solution", None),
    ("ecqa_test", "qa", "solution", "answer"),
    ("qasc_test", "qa", "solution", "answer"),
    ("openbookqa_test", "qa", "solution", "answer"),
    ("arc_easy_test", "qa", "solution", "answer"),
]


def _rows(name: str) -> list[dict[str, Any]]:
    return raw_rows(name)


def _restated(solution: str, answer: str, task: TaskType) -> str:
    """The ending the policy prompts ask for (§2.3): `The answer is: X` / `The answer is X`."""
    body = solution.split("####")[0].rstrip()
    return f"{body}\nThe answer is: {answer}" if task == "math" else f"The answer is {answer}"


def _normalised(answer: str) -> str:
    return "".join(answer.split()).casefold().rstrip(".")


def _wrong_answers(rows: list[dict[str, Any]], answers: list[str], task: TaskType) -> list[str]:
    """A realistic wrong answer per row. QA: another option of the same problem; math: the
    next row's answer that differs as a string (it may still be equal in value, e.g.
    ``\\frac34`` vs ``\\frac{3}{4}``: such rows are listed in the report)."""
    wrong = []
    for i, answer in enumerate(answers):
        if task == "qa":
            options = rows[i]["problem"].split("\nOptions:\n", 1)[1].split("\n")
            wrong.append(next(o for o in options if _normalised(o) != _normalised(answer)))
            continue
        j = (i + 1) % len(answers)
        while _normalised(answers[j]) == _normalised(answer):
            j = (j + 1) % len(answers)
        wrong.append(answers[j])
    return wrong


def evaluate(name: str, task: TaskType, sol_key: str, ans_key: str | None) -> dict[str, Any]:
    rows = _rows(name)
    start = time.perf_counter()
    solutions = [row[sol_key] for row in rows]
    answers = [row[ans_key] if ans_key else reference_answer(s, task) or "" for row, s in
               zip(rows, solutions, strict=True)]  # fmt: skip
    own = restated = 0
    failures: list[str] = []
    false_matches: list[str] = []
    for solution, answer, wrong in zip(
        solutions, answers, _wrong_answers(rows, answers, task), strict=True
    ):
        if answer and check_prediction(solution, answer, task).correct:
            own += 1
        else:
            failures.append(f"{answer!r} <- {solution[-80:]!r}")
        restated += check_prediction(_restated(solution, answer, task), answer, task).correct
        if check_prediction(_restated(solution, wrong, task), answer, task).correct:
            false_matches.append(f"`{wrong}` matched `{answer}`")
    return {
        "name": name, "rows": len(rows), "own": own, "restated": restated,
        "false_matches": false_matches, "seconds": time.perf_counter() - start,
        "failures": failures,
    }  # fmt: skip


def section(results: list[dict[str, Any]], command: str) -> str:
    lines = [
        "Every reference solution judged by `rlmec.shared.answers.check_prediction` against its",
        "own answer (GSM8K `####`, MATH last `\\boxed{}`, QA `answer` field). *Restated*: the",
        "solution ending in the policy format `The answer is: X` instead; *false matches*: the",
        "same with a wrong answer (QA: another option of the problem; math: another problem's",
        "answer that differs as a string), which must not match: the false-match rate.",
        "",
        f"- Machine: {machine()}; {today()}",
        f"- Command: `{command}`",
        "",
        "| set | rows | agreement | restated | false matches | time (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        n = r["rows"]
        lines.append(
            f"| {r['name']} | {n} | {100 * r['own'] / n:.2f}% | {100 * r['restated'] / n:.2f}% "
            f"| {100 * len(r['false_matches']) / n:.2f}% | {r['seconds']:.2f} |"
        )
    failures = [f"- {r['name']}: {f}" for r in results for f in r["failures"][:5]]
    lines += ["", "Residual failures:" + (" none." if not failures else ""), *failures]
    matches = [f"- {r['name']}: {m}" for r in results for m in r["false_matches"][:10]]
    header = "False matches (each listed for judgement):" + (" none." if not matches else "")
    lines += ["", header, *matches]
    lines += [
        "",
        'Fixed on the way: one MATH solution says "the answer is a multiple of 3 ..." before its',
        "`\\boxed{42}`; a box after the last `The answer is` now wins.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-write", action="store_true", help="print, leave BENCHMARKS.md")
    args = parser.parse_args(argv)
    results = [evaluate(*spec) for spec in SETS]
    text = section(results, "python -m benchmarks.alignment.answers")
    print(text)
    if not args.no_write:
        replace_section(HEADING, text)
    return 0 if all(r["own"] == r["rows"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
