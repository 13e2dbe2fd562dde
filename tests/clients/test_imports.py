"""The SDK installs without torch: importing it must not pull heavy or server-side modules."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["torch", "fastapi", "transformers", "vllm", "deepspeed", "uvicorn", "starlette"]


def loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_clients_and_adapters_stays_light() -> None:
    modules = loaded_after(
        "import rlmec.clients, rlmec.clients.cli, rlmec.clients.adapters.trl, "
        "rlmec.clients.adapters.verl, rlmec.clients.adapters.openrlhf"
    )
    assert "rlmec.clients" in modules
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert heavy == [], f"rlmec.clients imported {heavy}"
    assert not any(m.startswith(("rlmec.services", "rlmec.trainer")) for m in modules)
