"""``rlmec eval compare --plot`` on two real result directories."""

from __future__ import annotations

import json
from pathlib import Path

from rlmec.cli import main


def _results(root: Path, correct: list[bool]) -> Path:
    (root / "arith").mkdir(parents=True)
    rows = [{"id": f"p{i}", "correct": c} for i, c in enumerate(correct)]
    (root / "arith" / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "results.json").write_text(json.dumps({"tasks": {"arith": {}}}))
    return root


def test_compare_draws_the_tasks_with_the_interval(tmp_path: Path) -> None:
    a = _results(tmp_path / "a", [True, False, False, False] * 10)
    b = _results(tmp_path / "b", [True, True, False, False] * 10)
    png = tmp_path / "cmp.png"
    assert main(["eval", "compare", str(a), str(b), "--plot", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
