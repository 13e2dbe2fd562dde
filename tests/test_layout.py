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
    "loop", "plots",
)  # fmt: skip
# folder -> the rlmec areas (or single modules) it may import, besides itself
ALLOWED = {
    "shared": set(),
    "inference": {"shared"},
    "data": {"shared", "inference", "clients"},
    "evaluation": {"shared", "inference", "data", "plots"},
    "trainer": {"shared", "plots"},
    "plots": {"shared"},
    # model_files finds the shipped adapters where the data sets live (data.tasks.data_dir).
    "services": {"shared", "inference", "data.tasks"},
    "clients": {"shared"},
    "rollout": {"shared", "inference", "data", "clients"},
    # The one-machine stack (demo, up/down, Redis launcher): the light parts it composes; the
    # services, trainer and actor run as processes, never imported (test below).
    "loop": {"shared", "evaluation", "data", "clients", "services.grm.model_files",
             "warm_start"},
}  # fmt: skip
# The package's root modules (src/rlmec/*.py): the CLI, which imports each area by name only
# for the command being run, and the arith start policy.
ROOT_ALLOWED = {"data", "warm_start"}


def _rlmec_imports(path: Path) -> set[str]:
    """The rlmec modules ``path`` imports, without the ``rlmec.`` prefix."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "rlmec" and len(parts) > 1:
                modules.add(".".join(parts[1:]))
    return modules


def _forbidden(path: Path, allowed: set[str]) -> list[str]:
    return sorted(
        m for m in _rlmec_imports(path) if not any(m == a or m.startswith(a + ".") for a in allowed)
    )


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_import_rules(folder: str) -> None:
    for path in (ROOT / folder).rglob("*.py"):
        extra = _forbidden(path, ALLOWED[folder] | {folder})
        assert not extra, f"{path.relative_to(ROOT)} imports rlmec.{extra}"


def test_the_root_modules_are_only_the_cli_and_the_start_policy() -> None:
    root = ROOT / "src" / "rlmec"
    modules = {p.name for p in root.glob("*.py")}
    assert modules == {"__init__.py", "__main__.py", "cli.py", "warm_start.py"}, modules
    for path in root.glob("*.py"):
        extra = _forbidden(path, ROOT_ALLOWED | {"cli"})
        assert not extra, f"{path.relative_to(ROOT)} imports rlmec.{extra}"


def test_the_loop_imports_no_heavy_runtime() -> None:
    """``rlmec up``/``demo`` compose the services as processes: importing the loop must not load
    torch, vLLM, DeepSpeed or a web framework."""
    import subprocess

    code = (
        "import sys, rlmec.loop.demo, rlmec.loop.up, rlmec.loop.down, rlmec.loop.services, "
        "rlmec.loop.stack, rlmec.loop.redis_server; "
        "print(sorted(m for m in ('torch', 'transformers', 'vllm', 'deepspeed', 'fastapi') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


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
