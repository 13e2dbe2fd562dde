"""``rlmec grm`` commands: clear messages for bad input, tiny model building."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlmec.cli import main


def test_serve_rejects_missing_model_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["grm", "serve", "--model", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no config.json" in err and "convert-smollm2" in err


def test_serve_rejects_bad_engine_and_remote_without_upstream(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:  # the flag's choices are the setting's Literal
        main(["grm", "serve", "--model", str(tiny_model_dir), "--engine", "tpu"])
    assert exit_.value.code == 2
    assert "--engine: invalid choice: 'tpu'" in capsys.readouterr().err
    assert main(["grm", "serve", "--model", str(tiny_model_dir), "--engine", "remote"]) == 2
    assert "--upstream" in capsys.readouterr().err


def test_settings_read_env_and_split_upstreams(monkeypatch: pytest.MonkeyPatch) -> None:
    from rlmec.services.grm.settings import get_settings

    monkeypatch.setenv("RLMEC_GRM_MODEL", "/models/grm")
    monkeypatch.setenv("RLMEC_GRM_UPSTREAMS", "http://a:8000/v1, http://b:8000/")
    settings = get_settings(port=9000, engine=None)
    assert settings.model == "/models/grm"
    assert settings.upstreams == ["http://a:8000", "http://b:8000"]
    assert settings.port == 9000 and settings.engine == "hf"


def test_build_tiny_writes_a_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["grm", "build-tiny", "--output", str(tmp_path / "tiny")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "tiny")
    assert (tmp_path / "tiny" / "config.json").is_file()
