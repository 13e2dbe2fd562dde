"""Adapters loaded and unloaded at runtime under traffic (issue 28): nothing in flight fails,
the admin routes need their token, and an adapter of another base is refused with the reason."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from rlmec.cli import main
from rlmec.services.grm.app import create_app
from rlmec.services.grm.settings import GrmSettings
from tests.inference.test_adapters import ITEM, make_adapter
from tests.servers import serve_app

TOKEN = {"Authorization": "Bearer admin-secret"}


def test_load_and_unload_under_traffic(tiny_model_dir: Path, tmp_path: Path) -> None:
    alpha = make_adapter(tiny_model_dir, tmp_path / "alpha", 1)
    other = make_adapter(tiny_model_dir, tmp_path / "other", 2, base_sha256="f" * 64)
    (tmp_path / "token").write_text("admin-secret\n")
    # An engine batch waits up to 1 s for company: the calls sent together are all in flight
    # (the server's in-flight gauge says so) when the unload comes.
    settings = GrmSettings(model=str(tiny_model_dir), engine="hf", batch_wait_ms=1000,
                           admin_token_file=tmp_path / "token")  # fmt: skip

    async def traffic(base: str) -> tuple[list[int], list[int]]:
        async with httpx.AsyncClient(base_url=base, timeout=120) as c:
            loaded = await c.post("/admin/adapters", headers=TOKEN,
                                  json={"name": "alpha", "path": str(alpha)})  # fmt: skip
            assert loaded.status_code == 200 and loaded.json()["status"] == "loaded", loaded.text

            async def score(model: str | None) -> int:
                body = {"items": [ITEM], **({"model": model} if model else {})}
                return (await c.post("/v1/score", json=body)).status_code

            calls = [asyncio.create_task(score(m)) for m in ["alpha", None] * 12]
            await _until_in_flight(c, len(calls))
            unloaded = await c.delete("/admin/adapters/alpha", headers=TOKEN)
            assert unloaded.status_code == 200, unloaded.text
            during = list(await asyncio.gather(*calls))
            after = [await score("alpha"), await score(None)]
            return during, after

    with serve_app(create_app(settings)) as base:
        assert (
            httpx.post(f"{base}/admin/adapters", json={"name": "a", "path": "x"}).status_code == 401
        )
        during, after = asyncio.run(traffic(base))
        refused = httpx.post(f"{base}/admin/adapters", headers=TOKEN,
                             json={"name": "other", "path": str(other)})  # fmt: skip
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "adapter_refused"
        assert "trained on base model" in refused.json()["error"]["message"]
        assert [m["id"] for m in httpx.get(f"{base}/v1/models").json()["data"]][1:] == []
    # Sent before the unload: every one answered (the adapter's queued work finished first).
    assert during.count(200) == len(during), str(during)
    assert after == [404, 200]


async def _until_in_flight(client: httpx.AsyncClient, n: int) -> None:
    for _ in range(200):
        text = (await client.get("/metrics")).text
        line = next(x for x in text.splitlines() if x.startswith("rlmec_grm_requests_in_flight"))
        if float(line.split()[-1]) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{n} calls never were in flight together")


def test_no_admin_routes_without_the_token_setting(tiny_model_dir: Path) -> None:
    with serve_app(create_app(GrmSettings(model=str(tiny_model_dir), engine="hf"))) as base:
        resp = httpx.post(f"{base}/admin/adapters", json={"name": "a", "path": "x"})
        assert resp.status_code == 404


def test_the_cli_loads_and_unloads_an_adapter(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    alpha = make_adapter(tiny_model_dir, tmp_path / "alpha", 1)
    token, wrong = tmp_path / "token", tmp_path / "wrong"
    token.write_text("admin-secret\n")
    wrong.write_text("guess\n")
    monkeypatch.delenv("RLMEC_GRM_ADMIN_TOKEN_FILE", raising=False)
    settings = GrmSettings(model=str(tiny_model_dir), engine="hf", admin_token_file=token)
    with serve_app(create_app(settings)) as base:

        def cli(verb: str, *extra: str) -> tuple[int, str, str]:
            code = main(["client", f"grm-adapter-{verb}", "--url", base, "--name", "alpha",
                         "--max-retries", "0", *extra])  # fmt: skip
            out = capsys.readouterr()
            return code, out.out, out.err

        assert cli("load", "--path", str(alpha), "--admin-token-file", str(token))[:2] == (
            0, '{"name":"alpha","revision":' + _revision(base, "alpha") + ',"status":"loaded"}\n'
        )  # fmt: skip
        code, _, err = cli("unload", "--admin-token-file", str(wrong))
        assert code == 1 and "401" in err and "admin token" in err and len(err.splitlines()) == 1
        code, _, err = cli("unload")
        assert code == 2 and "--admin-token-file" in err
        assert cli("unload", "--admin-token-file", str(token))[:2] == (
            0, '{"name":"alpha","status":"unloaded"}\n'
        )  # fmt: skip
        assert [m["id"] for m in httpx.get(f"{base}/v1/models").json()["data"]][1:] == []


def _revision(base: str, name: str) -> str:
    cards = {m["id"]: m for m in httpx.get(f"{base}/v1/models").json()["data"]}
    return json.dumps(cards[name]["revision"])
