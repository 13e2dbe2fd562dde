"""``rlmec data synth`` and ``rlmec data grm-sft`` on the shipped GSM8K train set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlmec.cli import main
from rlmec.data.grm_sft import build_examples
from rlmec.data.records import GrmRecord, from_released, to_released
from rlmec.data.synth import corrupt, evaluate, policy_solution
from rlmec.data.tasks import load_task
from rlmec.shared.answers import check_prediction
from rlmec.shared.prompts import LOCATE_TARGET, locate_prompt, scoring_prompt, split_steps


@pytest.fixture(scope="module")
def records() -> list[GrmRecord]:
    return [r for p in load_task("gsm8k_train", limit=200) if (r := corrupt(p)) is not None]


def test_policy_solution_restates_the_answer_and_drops_annotations() -> None:
    ref = "She sold 48/2 = <<48/2=24>>24 clips.\nIn total 48+24 = <<48+24=72>>72.\n#### 72"
    assert (
        policy_solution(ref) == "She sold 48/2 = 24 clips.\nIn total 48+24 = 72.\nThe answer is: 72"
    )
    assert policy_solution("no final answer line") is None


def test_evaluate_is_plain_arithmetic_only() -> None:
    assert evaluate("3 x (4 + 2)") == 18 and evaluate("$1,200 / 4") == 300
    assert evaluate("__import__('os')") is None and evaluate("2 ** 99999") is None


def test_every_record_is_wrong_at_its_step_and_its_rewrite_is_right(
    records: list[GrmRecord],
) -> None:
    assert len(records) >= 140  # most GSM8K solutions have an equation to corrupt
    assert {r.meta["corruption"] for r in records} == {"number", "operation", "arithmetic"}
    for r in records:
        assert r.source == "synthetic" and not r.correct and r.error_step is not None
        assert not check_prediction(r.prediction, r.reference_answer, "math").correct, r.id
        assert check_prediction(r.rewrite or "", r.reference_answer, "math").correct, r.id
        wrong, right = split_steps(r.prediction), split_steps(r.rewrite or "")
        assert len(wrong) == len(right)
        first_diff = next(i for i, (a, b) in enumerate(zip(wrong, right, strict=True)) if a != b)
        assert first_diff == r.error_step, r.id


def test_corruption_is_seeded(records: list[GrmRecord]) -> None:
    problem = load_task("gsm8k_train", limit=200)[0]
    assert corrupt(problem) == corrupt(problem)
    variants = [corrupt(p, seed=s) for p in load_task("gsm8k_train", limit=20) for s in (0, 1)]
    assert len({v.prediction for v in variants if v is not None}) > 20


def test_grm_sft_examples_follow_the_method(records: list[GrmRecord]) -> None:
    correct = records[0].model_copy(
        update={"id": "c", "correct": True, "prediction": records[0].rewrite}
    )
    dropped = records[1].model_copy(update={"id": "d", "verdict": "dropped", "reason": "missed"})
    examples, stats = build_examples([*records[2:12], correct, dropped], seed=1)
    assert (stats.accepted, stats.wrong, stats.correct) == (10, 11, 1)
    assert stats.skipped == {"missed": 1}
    by_id = {e.id: e for e in examples}
    r = records[2]
    locate, rewrite = by_id[f"{r.id}:locate"], by_id[f"{r.id}:rewrite"]
    assert locate.prompt == locate_prompt(r.question, r.reference_solution, r.prediction)
    assert locate.target == LOCATE_TARGET.format(step=r.error_step)
    assert rewrite.prompt == scoring_prompt(r.question, r.reference_solution, r.prediction)
    assert rewrite.prompt.endswith("Correct prediction:") and rewrite.target == r.rewrite
    none, _ = build_examples([*records[2:12], correct], identity_rate=0.0)
    every, _ = build_examples([*records[2:12], correct], identity_rate=1.0)
    assert "c:identity" not in {e.id for e in none} and "c:identity" in {e.id for e in every}


def test_grm_sft_rewrite_share_keeps_every_locate_example(records: list[GrmRecord]) -> None:
    wrong = records[:40]
    examples, _ = build_examples(wrong, seed=3, rewrite_share=0.25)
    kinds = [e.kind for e in examples]
    assert kinds.count("locate") == 40
    assert 3 <= kinds.count("rewrite") <= 20  # a seeded quarter of 40, not all, not none
    again, _ = build_examples(wrong, seed=3, rewrite_share=0.25)
    assert [e.id for e in again] == [e.id for e in examples]
    none, _ = build_examples(wrong, rewrite_share=0.0)
    assert {e.kind for e in none} == {"locate"}


def test_released_schema_round_trip(records: list[GrmRecord]) -> None:
    r = records[0]
    row = to_released(r)
    assert set(row) == {
        "question",
        "solution",
        "prediction",
        "error_step",
        "fix_pred",
        "is_correct",
    }
    back = from_released(row, task=r.task, task_type="math", index=0, answer=r.reference_answer)
    assert (back.prediction, back.error_step, back.rewrite) == (
        r.prediction,
        r.error_step,
        r.rewrite,
    )


def test_synth_resumes_after_a_torn_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "synth.jsonl"
    assert main(["data", "synth", "--limit", "40", "--output", str(out)]) == 0
    full = out.read_text().splitlines()
    out.write_text("\n".join(full[:10]) + "\n" + full[10][:25])  # killed mid-write
    assert main(["data", "synth", "--limit", "40", "--output", str(out)]) == 0
    again = out.read_text().splitlines()
    assert sorted(again) == sorted(full)  # nothing lost, nothing twice
    assert "SYNTHETIC" in capsys.readouterr().out


def test_grm_sft_names_bad_lines_and_goes_on(
    tmp_path: Path, records: list[GrmRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "records.jsonl"
    good = [r.model_dump_json() for r in records[:4]]
    src.write_text("\n".join([good[0], "{not json", good[1], '{"id": 3}', "", *good[2:]]) + "\n")
    out = tmp_path / "sft.jsonl"
    assert main(["data", "grm-sft", "--input", str(src), "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"{src} line 2: not valid JSON" in captured.err and f"{src} line 4" in captured.err
    summary = json.loads(captured.out)
    assert summary["examples"] == 8 and summary["bad_lines"] == 2
    assert len(out.read_text().splitlines()) == 8


def test_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "synth", "--tasks", "ecqa_train", "--output", str(tmp_path / "x")]) == 2
    assert "not a math task" in capsys.readouterr().err
    assert main(["data", "synth", "--kinds", "typo", "--output", str(tmp_path / "x")]) == 2
    assert "--kinds 'typo'" in capsys.readouterr().err
    missing = tmp_path / "missing.jsonl"
    assert main(["data", "grm-sft", "--input", str(missing), "--output", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
