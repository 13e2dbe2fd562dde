"""LoRA adapters on one base model (issue 28): which adapter an engine call is for, and the
check before one is loaded.

A request names its adapter in its ``model`` field (OpenAI-style); the GRM service puts it in
:data:`current_adapter` for the engine calls it makes, as :mod:`.tenants` does for the tenant.
``None`` is the base model. An adapter is loaded only after its provenance
(:mod:`rlmec.shared.adapters`) names the served base model's weights.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import re
from collections.abc import AsyncIterator
from pathlib import Path

from rlmec.inference.engine import model_revision
from rlmec.shared.adapters import AdapterProvenance, check_base, model_fingerprint
from rlmec.shared.errors import NotFoundError
from rlmec.shared.grm_schemas import ADAPTER_NAME_PATTERN

ADAPTER_NAME = re.compile(ADAPTER_NAME_PATTERN)

current_adapter: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "rlmec_adapter", default=None
)


def check_adapter(name: str, adapter_dir: str | Path, base_sha256: str) -> AdapterProvenance:
    """The adapter's provenance, or ValueError naming what is wrong: the name, a directory
    that holds no peft adapter, or an adapter trained on another base model."""
    if not ADAPTER_NAME.match(name):
        raise ValueError(f"adapter name {name!r}: use 1-64 letters, digits, '_', '.', '-'")
    path = Path(adapter_dir).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise ValueError(
            f"adapter {name!r}: {str(path)!r} holds no adapter_config.json; point it at the "
            "final/ directory of `rlmec grm train` with a lora section"
        )
    return check_base(path, base_sha256)


class AdapterTable:
    """The adapters an engine serves (name -> revision) and the calls using each, so that an
    unload stops new calls at once (404) and waits for the ones in flight: nothing in flight
    fails. The engine does the loading; this is the bookkeeping both engines share."""

    def __init__(self) -> None:
        self.revisions: dict[str, str] = {}
        self._users: collections.Counter[str | None] = collections.Counter()

    def check_new(self, name: str, path: Path, base_dir: Path) -> None:
        """ValueError unless ``path`` holds an adapter of ``base_dir`` and ``name`` is free."""
        if name in self.revisions:
            raise ValueError(f"adapter {name!r} is already loaded; unload it first")
        check_adapter(name, path, model_fingerprint(base_dir))

    def add(self, name: str, path: Path) -> str:
        self.revisions[name] = model_revision(path)
        return self.revisions[name]

    @contextlib.asynccontextmanager
    async def using(self, adapter: str | None) -> AsyncIterator[None]:
        if adapter is not None and adapter not in self.revisions:
            raise NotFoundError(f"adapter {adapter!r} is not loaded", code="model_not_found")
        self._users[adapter] += 1
        try:
            yield
        finally:
            self._users[adapter] -= 1

    async def remove(self, name: str) -> None:
        """Take ``name`` out (404 for new calls), then wait until no call uses it."""
        if self.revisions.pop(name, None) is None:
            raise NotFoundError(f"adapter {name!r} is not loaded", code="model_not_found")
        while self._users[name] > 0:
            await asyncio.sleep(0.05)


def merge_adapter(adapter_dir: str | Path, base_dir: str | Path, dest: str | Path) -> Path:
    """A plain model directory: ``base_dir`` with the adapter merged in (peft), for engines
    and tools that take one model (vLLM without ``enable_lora``, ``rlmec eval``). Refused,
    with the reason, when the adapter was trained on another base. Written atomically."""
    import shutil

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, out = Path(base_dir).expanduser(), Path(dest).expanduser()
    check_adapter("merge", adapter_dir, model_fingerprint(base))
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
