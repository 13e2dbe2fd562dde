"""Training curves: which panels a run gets, a resumed step drawn once, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlmec.cli import main
from rlmec.plots.curves import NoMetrics, panels, plot_run


def _run(tmp_path: Path, rows: list[dict[str, float]]) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_an_rlmec_run_gets_its_panels_and_all_zero_ones_are_left_out() -> None:
    steps = [{"step": s, "loss": 1.0 / s, "rl_loss": 0.1, "imitation_loss": 0.9, "lr": 1e-5,
              "mean_reward": -0.01 * s, "lag_0": 0, "lag_1": 0} for s in (1, 2, 3)]  # fmt: skip
    titles = [t for t, _ in panels(steps, [])]
    assert titles == ["loss", "mean token reward", "learning rate"]  # no lag offline
    evals = [{"step": 2, "locate": {"exact_match": 0.5, "n": 64}, "rewrite": {"exact_match": 0.25}}]
    drawn = dict(panels(steps, evals))
    assert drawn["held-out exact_match"] == {"locate": [(2, 0.5)], "rewrite": [(2, 0.25)]}


def test_a_resumed_step_is_drawn_once_and_the_png_is_written(tmp_path: Path) -> None:
    rows = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}, {"step": 2, "loss": 0.9}]
    run = _run(tmp_path, rows)
    assert dict(panels(rows[:1] + rows[2:], []))["loss"] == {"loss": [(1, 2.0), (2, 0.9)]}
    path = plot_run(run)
    assert path == run / "curves.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rlmec_plot_writes_the_png_and_names_a_wrong_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run(tmp_path, [{"step": 1, "loss": 1.0}])
    out = tmp_path / "x.png"
    assert main(["plot", str(run), "--output", str(out)]) == 0 and out.is_file()
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert "holds no metrics.jsonl rows" in capsys.readouterr().err
    with pytest.raises(NoMetrics):
        plot_run(tmp_path)
