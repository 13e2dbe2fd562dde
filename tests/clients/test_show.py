"""``rlmec client show``: each token styled by its reward, the rewrite as a word diff with the
located step marked, unscored reasons, filters, and model text shown as text (never markup)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from rlmec.cli import main
from rlmec.clients.show import penalised, rewrite_diff, token_text
from rlmec.shared.schemas import ScoredSample, TokenValues

PREDICTION = "9 + 8 = 16\nThe answer is: 16"
REWRITE = "9 + 8 = 17\nThe answer is: 17"


def _values(text: str, bad: dict[int, float]) -> TokenValues:
    """One token per character, then EOS; ``bad`` maps character index -> reward."""
    n = len(text)
    return TokenValues(
        token_ids=[*range(n), 0], tokens=[*text, ""],
        values=[*(bad.get(i, 0.0) for i in range(n)), 0.0],
        offsets=[*((i, i + 1) for i in range(n)), (n, n)],
    )  # fmt: skip


def _result(**update: object) -> dict[str, object]:
    six = PREDICTION.index("6")
    base: dict[str, object] = {
        "id": "s1", "status": "scored", "question": "Calculate 9 + 8.", "prediction": PREDICTION,
        "correct": False, "predicted_answer": "16", "reference_answer": "17",
        "located_step": 0, "rewrite": REWRITE,
        "rewards": _values(PREDICTION, {six: -0.1, PREDICTION.rindex("6"): -0.05}).model_dump(),
    }  # fmt: skip
    return {**base, **update}


def test_penalised_tokens_are_styled_and_listed() -> None:
    values = _values(PREDICTION, {8: -0.1, 9: -0.05})
    text = token_text(PREDICTION, values)
    styled = {(s.start, s.end) for s in text.spans}
    assert styled == {(8, 9), (9, 10)}, "only the tokens below 0 are coloured"
    deeper = {(s.start, str(s.style)) for s in text.spans}
    assert dict(deeper)[8] != dict(deeper)[9], "a lower reward is a deeper red"
    assert penalised(PREDICTION, values) == [("1", -0.1), ("6", -0.05)]


def test_the_rewrite_diff_marks_the_located_step_and_the_changed_words() -> None:
    diff = rewrite_diff(PREDICTION, REWRITE, located_step=0)
    lines = diff.plain.split("\n")
    assert lines[0].startswith("> ") and lines[1].startswith("  ")
    struck = [diff.plain[s.start : s.end] for s in diff.spans if "strike" in str(s.style)]
    added = [diff.plain[s.start : s.end] for s in diff.spans if "green" in str(s.style)]
    assert struck == ["16", "16"] and added == ["17", "17"]
    plain = rewrite_diff(PREDICTION, REWRITE, located_step=0, marks=True).plain
    assert plain == "> 9 + 8 = [-16-]{+17+}\n  The answer is: [-16-]{+17+}"


def test_show_prints_results_filters_and_escapes_model_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = "[bold red]not markup[/] <script>alert(1)</script>"
    rows = [
        _result(),
        _result(
            id="ok",
            correct=True,
            predicted_answer="17",
            prediction=REWRITE,
            rewrite=None,
            located_step=None,
            rewards=_values(REWRITE, {}).model_dump(),
        ),
        _result(
            id="u",
            status="unscored",
            reason="rewrite_incorrect",
            rewards=None,
            message="the rewrite's answer '18' does not reach the reference answer",
            prediction=hostile,
        ),
    ]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(ScoredSample.model_validate(r).model_dump()) + "\n"
                            for r in rows))  # fmt: skip
    assert main(["client", "show", "--input", str(path)]) == 0
    out = capsys.readouterr().out
    assert "penalised: '6' -0.10, '6' -0.05" in out
    assert "GRM rewrite (located step 0):" in out and "= [-16-]{+17+}" in out  # no colour
    assert "unscored: rewrite_incorrect" in out and "does not reach" in out
    assert hostile in out, "model text is printed as it is, never read as rich markup"
    assert "3 results: 1 wrong, 1 correct, 1 unscored (1 rewrite_incorrect)" in out
    assert main(["client", "show", "--input", str(path), "--only", "unscored"]) == 0
    out = capsys.readouterr().out
    assert "penalised" not in out and "shown: 1" in out


def test_show_errors_name_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"question": "q"}\n')
    assert main(["client", "show", "--input", str(path)]) == 2
    assert "line 1: field 'status': Field required" in capsys.readouterr().err
    assert main(["client", "show", "--input", str(path), "--only", "bad"]) == 2
    assert "--only 'bad': choose among wrong, correct, unscored" in capsys.readouterr().err
    assert main(["client", "show", "--input", str(tmp_path / "none.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_console_renders_colour_when_it_can() -> None:
    console = Console(record=True, color_system="truecolor", width=80, force_terminal=True)
    console.print(token_text(PREDICTION, _values(PREDICTION, {8: -0.1})))
    assert "\x1b[" in console.export_text(styles=True)
