"""The credit study's arithmetic: each arm's settings, the paired comparison, the area under
the curve, slips per line position, and where its report goes in BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.learning import credit
from benchmarks.report import replace_subsection


def test_arms_settings_and_the_tasks_defaults() -> None:
    args = credit.parse_args(["--task", "lines:k=2", "--kl-coef", "0.2"])
    assert args.train_task == "lines_train:k=2" and args.work == Path("runs/credit/lines-k2")
    assert credit.arm_overrides("rlmec_kl", args) == [
        "loss.objective=rlmec",
        "loss.rl_tokens=response",
        "loss.imitation_coef=0.1",
        "loss.kl_coef=0.2",
    ]
    assert credit.arm_overrides("sft", args)[0] == "loss.objective=sft"
    assert credit.parse_args(["--task", "paths"]).arms == "rlmec,sequence,sequence_ref,sft"
    with pytest.raises(SystemExit):
        credit.parse_args(["--arms", "ppo"])


def test_versus_pairs_problems_and_averages_seeds() -> None:
    a = [{"p1": 0.5, "p2": 1.0, "p3": 0.0}]
    b = [{"p1": 1.0, "p2": 1.0, "p3": 0.5}, {"p1": 0.0, "p2": 1.0, "p3": 0.5, "extra": 1.0}]
    v = credit.versus(b, a)
    assert v["rows"] == 3 and v["diff"] == pytest.approx((0.0 + 0.0 + 0.5) / 3)
    assert v["lo"] <= v["diff"] <= v["hi"]


def test_area_under_the_curve_is_the_mean_score_over_training() -> None:
    start = {"p": 0.5}
    points = {10: [{"p": 1.0}], 20: [{"p": 1.0}]}
    # trapezoid: 0..10 from 50 to 100 (mean 75), 10..20 at 100: (750 + 1000) / 20
    assert credit.auc(points, start) == pytest.approx(87.5)


def test_slips_by_position() -> None:
    q = "Compute each: 1 + 2; 5 - 3."
    questions = {"a": q, "b": q}
    rows = [{"id": "a", "output": "1 + 2 = 3\n5 - 3 = 1"}, {"id": "b", "output": "1 + 2 = 4"}]
    assert credit.slips_by_position(rows, questions) == [0.5, 1.0]


def test_a_subsection_is_replaced_in_place_or_put_before_older_runs(tmp_path: Path) -> None:
    md = tmp_path / "B.md"
    md.write_text("## learning\n\nhead\n\n### Earlier runs\n\nold\n\n## next\n\nx\n")
    replace_subsection("learning", "Credit study: lines", "first", md)
    replace_subsection("learning", "Credit study: lines", "second", md)
    text = md.read_text()
    assert text.count("### Credit study: lines") == 1 and "first" not in text
    assert text.index("second") < text.index("### Earlier runs") < text.index("## next")
