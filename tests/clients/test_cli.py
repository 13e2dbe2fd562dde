"""``rlmec client`` commands over real HTTP (a stand-in reward app on loopback)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from rlmec.cli import main
from tests.clients.fake_reward import create_fake_app
from tests.clients.helpers import SAMPLE
from tests.servers import serve_app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FastAPI, str]]:
    app = create_fake_app()
    with serve_app(app) as url:
        yield app, url


@pytest.fixture
def fake(served: tuple[FastAPI, str]) -> Iterator[tuple[FastAPI, str]]:
    app, url = served
    app.state.calls.clear()
    app.state.fail_503 = app.state.queue_full = 0
    yield app, url


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def rows(n: int) -> list[dict[str, Any]]:
    return [{**SAMPLE, "id": f"s{i}"} for i in range(n)]


def test_score_writes_results_in_order_with_batches(
    fake: tuple[FastAPI, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, url = fake
    monkeypatch.setenv("RLMEC_API_KEY", "team-key")
    src = write_jsonl(tmp_path / "in.jsonl", rows(5))
    out = tmp_path / "out.jsonl"
    code = main(["client", "score", "--url", url, "--input", str(src), "--output", str(out),
                 "--batch-size", "2", "--quiet"])  # fmt: skip
    assert code == 0
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in results] == [f"s{i}" for i in range(5)]
    assert app.state.calls == [
        (2, "Bearer team-key"),
        (2, "Bearer team-key"),
        (1, "Bearer team-key"),
    ]


def test_score_retries_503_over_http(fake: tuple[FastAPI, str], tmp_path: Path) -> None:
    app, url = fake
    app.state.fail_503 = 2
    src = write_jsonl(tmp_path / "in.jsonl", rows(1))
    out = tmp_path / "out.jsonl"
    assert main(["client", "score", "--url", url, "--input", str(src), "--output", str(out),
                 "--quiet"]) == 0  # fmt: skip
    assert len(app.state.calls) == 3
    assert len(out.read_text().splitlines()) == 1


def test_score_bad_jsonl_names_the_line_and_sends_nothing(
    fake: tuple[FastAPI, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app, url = fake
    src = write_jsonl(tmp_path / "in.jsonl", [SAMPLE, "", '{"question": "q",', SAMPLE])
    code = main(["client", "score", "--url", url, "--input", str(src),
                 "--output", str(tmp_path / "o.jsonl"), "--quiet"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "line 3" in err and "not valid JSON" in err
    assert app.state.calls == []


def test_score_invalid_sample_names_line_and_field(
    fake: tuple[FastAPI, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = fake
    src = write_jsonl(tmp_path / "in.jsonl", [SAMPLE, {**SAMPLE, "task": "poetry"}])
    code = main(["client", "score", "--url", url, "--input", str(src),
                 "--output", str(tmp_path / "o.jsonl"), "--quiet"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "'task'" in err


def test_score_resume_appends_only_missing(fake: tuple[FastAPI, str], tmp_path: Path) -> None:
    app, url = fake
    src = write_jsonl(tmp_path / "in.jsonl", rows(3))
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "s0"}) + "\n")
    assert main(["client", "score", "--url", url, "--input", str(src), "--output", str(out),
                 "--resume", "--quiet"]) == 0  # fmt: skip
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["s0", "s1", "s2"]
    assert app.state.calls[0][0] == 2


def test_push_then_status(
    fake: tuple[FastAPI, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app, url = fake
    app.state.queue_full = 1  # first push refused, retried after Retry-After: 0
    src = write_jsonl(tmp_path / "in.jsonl", rows(3))
    assert main(["client", "push", "--url", url, "--input", str(src), "--batch-size", "2",
                 "--batch-id-prefix", "run7", "--quiet"]) == 0  # fmt: skip
    pushed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [p["batch_id"] for p in pushed] == ["run7-00000", "run7-00001"]
    assert [p["n_samples"] for p in pushed] == [2, 1]
    assert main(["client", "status", "run7-00001", "--url", url, "--wait"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "scored"


def test_push_queue_full_exits_1_with_resume_hint(
    fake: tuple[FastAPI, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app, url = fake
    app.state.queue_full = 10
    src = write_jsonl(tmp_path / "in.jsonl", rows(2))
    code = main(["client", "push", "--url", url, "--input", str(src), "--max-retries", "1",
                 "--quiet"])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "queue is full" in err and "--skip 0" in err


def test_status_unknown_batch_is_404(
    fake: tuple[FastAPI, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = fake
    assert main(["client", "status", "nope", "--url", url]) == 1
    assert "404" in capsys.readouterr().err


def test_missing_url_and_bad_batch_size(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RLMEC_URL", raising=False)
    src = write_jsonl(tmp_path / "in.jsonl", rows(1))
    assert main(["client", "score", "--input", str(src), "--output", "o", "--quiet"]) == 2
    assert "RLMEC_URL" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["client", "score", "--url", "http://x", "--input", str(src), "--output", "o",
              "--batch-size", "5000"])  # fmt: skip
    assert info.value.code == 2
    assert "1..1024" in capsys.readouterr().err


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["client", "--help"])
    out = capsys.readouterr().out
    for command in ("score", "push", "status", "grm-models"):
        assert command in out
