"""Secret files: written 0600 whatever was there, read with a clear error (issue 26, item 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlmec.shared.secret_files import read_secret_file, write_secret_file


def test_rewriting_a_world_readable_file_makes_it_private(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("old")
    path.chmod(0o644)
    write_secret_file(path, "new key")
    assert path.read_text() == "new key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left


def test_a_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("not yours")
    link = tmp_path / "state.json"
    link.symlink_to(target)
    write_secret_file(link, "key")
    assert not link.is_symlink() and link.read_text() == "key"
    assert target.read_text() == "not yours"


def test_reading_an_empty_secret_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("\n")
    with pytest.raises(ValueError, match=r"api key .*key' is empty"):
        read_secret_file(tmp_path / "key", "api key")
