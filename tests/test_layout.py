"""The house's import rules, checked on the source: ``shared`` imports nothing above it,
``inference`` only ``shared``, ``data`` ``shared``, ``inference`` and ``clients``, no
deployable imports another, ``clients`` and ``trainer`` only ``shared``; and no module is ever
loaded under a second name (``shared.errors`` next to ``rlmec.shared.errors`` would give two
different exception classes)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = (
    "shared", "inference", "data", "evaluation", "services", "trainer", "clients", "rollout",
    "loop",
)  # fmt: skip
# folder -> the rlmec areas it may import (besides itself)
ALLOWED = {
    "shared": set(),
    "inference": {"shared"},
    "data": {"shared", "inference", "clients"},
    "evaluation": {"shared", "inference", "data"},
    "trainer": {"shared"},
    "clients": {"shared"},
    "rollout": {"shared", "inference", "data", "clients"},
    "loop": {"shared", "evaluation"},
}


def _rlmec_imports(path: Path) -> set[str]:
    areas = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "rlmec" and len(parts) > 1:
                areas.add(parts[1])
    return areas


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_import_rules(folder: str) -> None:
    for path in (ROOT / folder).rglob("*.py"):
        extra = _rlmec_imports(path) - ALLOWED[folder] - {folder}
        assert not extra, f"{path.relative_to(ROOT)} imports rlmec.{sorted(extra)}"


def test_services_never_import_each_other() -> None:
    for service in ("grm", "reward"):
        other = {"grm": "reward", "reward": "grm"}[service]
        for path in (ROOT / "services" / service).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert f"rlmec.services.{other}" not in text, f"{path} imports services/{other}"


def test_no_module_is_loaded_under_a_second_name() -> None:
    import rlmec.evaluation.run
    import rlmec.services.reward.app  # noqa: F401

    bare = sorted(m for m in sys.modules if m.split(".")[0] in FOLDERS)
    assert not bare, f"imported without the rlmec. prefix: {bare[:5]}"


def test_every_doc_the_code_cites_is_in_the_repository() -> None:
    """A clone must resolve every citation: the method page and the interop notes live in docs/,
    and no source file points outside the repository for them."""
    root = Path(__file__).resolve().parents[1]
    for name in ("method.md", "interop.md", "architecture.md"):
        assert (root / "docs" / name).is_file(), name
    folders = ("shared", "inference", "data", "evaluation", "services", "trainer", "clients")
    stale = [
        str(path.relative_to(root))
        for folder in folders
        for path in (root / folder).rglob("*.py")
        if "rlmec-method.md" in (text := path.read_text()) or "shared/docs/" in text
    ]
    assert stale == []
