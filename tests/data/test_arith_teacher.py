"""The exact ``arith`` teacher: the first wrong step and the minimal rewrite for each kind of
error, unparsable solutions dropped with a reason, and ``rlmec data distill --teacher arith``
writing records that ``grm-sft`` takes unchanged."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from rlmec.cli import main
from rlmec.data.arith_teacher import correct
from rlmec.data.records import GrmRecord
from rlmec.data.tasks import load_task
from rlmec.shared.answers import check_prediction
from rlmec.shared.jsonl import read_rows

Q = "Calculate 17 + 21 - 31."  # 17 + 21 = 38, 38 - 31 = 7


@pytest.mark.parametrize(
    ("prediction", "step", "rewrite"),
    [
        # a slip in a result: fixed, and carried into the later step (its wording kept)
        ("17 + 21 = 39\n39 - 31 = 8\nThe answer is: 8", 0,
         "17 + 21 = 38\n38 - 31 = 7\nThe answer is: 7"),
        # a right step, then a slip: the first line is kept verbatim
        ("17 + 21 = 38\n38 - 31 = 1\nThe answer is: 1", 1,
         "17 + 21 = 38\n38 - 31 = 7\nThe answer is: 7"),
        # an operand that is not the value the earlier step gave
        ("17 + 21 = 38\n36 - 31 = 5\nThe answer is: 5", 1,
         "17 + 21 = 38\n38 - 31 = 7\nThe answer is: 7"),
        # a wrong operator and a misread number
        ("17 - 21 = 4\n4 - 31 = 27\nThe answer is: 27", 0,
         "17 + 21 = 38\n38 - 31 = 7\nThe answer is: 7"),
        ("17 + 12 = 29\n29 - 31 = 2\nThe answer is: 2", 0,
         "17 + 21 = 38\n38 - 31 = 7\nThe answer is: 7"),
        # spacing and the answer line's wording are the policy's own
        ("17+21=39\n39-31=8\nThe answer is 8.", 0, "17+21=38\n38-31=7\nThe answer is 7."),
        # stopped early: wrong at the answer line, the missing step written there
        ("17 + 21 = 38\nThe answer is: 38", 1, "17 + 21 = 38\n38 - 31 = 7\nThe answer is: 7"),
        ("The answer is: 12", 0, "17 + 21 = 38\n38 - 31 = 7\nThe answer is: 7"),
        # a step past the chain's end is the wrong one
        ("17 + 21 = 38\n38 - 31 = 7\n7 + 1 = 8\nThe answer is: 8", 2,
         "17 + 21 = 38\n38 - 31 = 7\nThe answer is: 7"),
        # every step right, the answer line misstates it
        ("17 + 21 = 38\n38 - 31 = 7\nThe answer is: 9", 2,
         "17 + 21 = 38\n38 - 31 = 7\nThe answer is: 7"),
    ],
)  # fmt: skip
def test_the_first_wrong_step_and_its_minimal_rewrite(
    prediction: str, step: int, rewrite: str
) -> None:
    fix = correct(Q, prediction, "7")
    assert (fix.step, fix.rewrite, fix.reason) == (step, rewrite, "rewrite_reaches_reference")


@pytest.mark.parametrize(
    ("question", "prediction", "reason"),
    [
        (Q, "First add them.\n17 + 21 = 38\nThe answer is: 7", "unparsed_step"),
        (Q, "17 + 21 = 38\nso 38 - 31 = 7 I think\nThe answer is: 7", "unparsed_step"),
        (Q, "", "unparsed_step"),
        (Q, "17 + 21 = 38\nThe answer is: 7\nor maybe 8", "text_after_answer"),
        (Q, "17 + 21 = 38\n38 - 31 = 7\nThe answer is: 7", "prediction_correct"),
        ("How many apples are left?", "3 + 4 = 7\nThe answer is: 7", "not_arith"),
        (Q, "17 + 21 = 38\n38 - 31 = 7", "no_step_to_fix"),
    ],
)
def test_what_it_cannot_read_is_dropped_with_a_reason(
    question: str, prediction: str, reason: str
) -> None:
    fix = correct(question, prediction, "7")
    assert (fix.step, fix.rewrite, fix.reason) == (None, None, reason)


def _slip(solution: str, rng: random.Random) -> str:
    """A random local error: one number of one line changed, the rest kept as written."""
    lines = solution.split("\n")
    k = rng.randrange(len(lines) - 1)
    words = lines[k].split(" ")
    j = rng.choice([0, 2, 4])
    words[j] = str(int(words[j]) + rng.choice([-3, -1, 1, 2, 10]))
    lines[k] = " ".join(words)
    return "\n".join(lines)


def test_every_rewrite_of_random_slips_reaches_the_reference_and_keeps_the_prefix() -> None:
    rng = random.Random(0)
    for p in load_task("arith:steps=3:ops=+-*", limit=200):
        pred = _slip(p.reference_solution, rng)
        fix = correct(p.question, pred, p.reference_answer)
        assert fix.reason == "rewrite_reaches_reference" and fix.rewrite and fix.step is not None
        assert check_prediction(fix.rewrite, p.reference_answer, "math").correct
        kept = pred.split("\n")[: fix.step]
        assert fix.rewrite.split("\n")[: fix.step] == kept


def _record(i: int, question: str, prediction: str, answer: str, ok: bool) -> dict[str, object]:
    return GrmRecord(
        id=f"arith_train/{i}#0", task="arith_train", task_type="math", question=question,
        reference_solution="", reference_answer=answer, prediction=prediction, correct=ok,
        meta={"problem_id": f"arith_train/{i}"},
    ).model_dump(mode="json")  # fmt: skip


def test_distill_with_the_arith_teacher_feeds_grm_sft(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = tmp_path / "samples.jsonl"
    rows = [
        _record(0, Q, "17 + 21 = 38\n38 - 31 = 1\nThe answer is: 1", "7", False),
        _record(1, Q, "I do not know\nThe answer is: 3", "7", False),
        _record(2, Q, "17 + 21 = 38\n38 - 31 = 7\nThe answer is: 7", "7", True),
    ]
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "teacher.jsonl"
    args = ["data", "distill", "--teacher", "arith", "--input", str(samples), "--output", str(out)]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["outcomes"] == {
        "accepted: rewrite_reaches_reference": 1,
        "dropped: unparsed_step": 1,
    }
    written = {r["id"]: r for r in read_rows(out)}
    assert written["arith_train/0#0"]["error_step"] == 1
    assert written["arith_train/0#0"]["rewrite"] == "17 + 21 = 38\n38 - 31 = 7\nThe answer is: 7"
    assert written["arith_train/1#0"]["verdict"] == "dropped"
    assert main(args) == 0  # a rerun adds nothing
    assert len(read_rows(out)) == 3
    sft = tmp_path / "sft.jsonl"
    assert main(["data", "grm-sft", "--input", str(out), "--output", str(sft)]) == 0
    kinds = sorted(r["kind"] for r in read_rows(sft))
    assert kinds[:2] == ["locate", "rewrite"]


def test_a_model_teacher_without_an_endpoint_names_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["data", "distill", "--input", str(tmp_path / "x.jsonl"),
                 "--output", str(tmp_path / "y.jsonl")])  # fmt: skip
    assert code == 2
    assert "needs --url and --teacher-model (or use the exact teacher" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("prediction", "kind"),
    [
        ("17 + 21 = 39\n39 - 31 = 8\nThe answer is: 8", "result"),
        ("17 + 21 = 38\n36 - 31 = 5\nThe answer is: 5", "operand"),
        ("17 - 21 = 4\n4 - 31 = 27\nThe answer is: 27", "operator"),
        ("17 + 21 = 38\n38 - 31 = 7\nThe answer is: 9", "answer line"),
        ("17 + 21 = 38\nThe answer is: 38", "stopped early"),
        ("17 + 21 = 38\n38 - 31 = 7\n7 + 1 = 8\nThe answer is: 8", "extra step"),
        ("The answer is 12.", "stopped early"),
        ("It is 12.", "unparsed_step"),
    ],
)
def test_error_kinds_for_the_calibration_table(prediction: str, kind: str) -> None:
    from rlmec.data.arith_teacher import error_kind

    assert error_kind(Q, prediction) == kind
