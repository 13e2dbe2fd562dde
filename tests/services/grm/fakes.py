"""A scripted engine for tests of the logic around engines (admission, disconnect, shutdown,
rewrite flow). It uses the tiny model's real tokenizer and records what it is sent."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rlmec.inference.engine import EngineInfo, Generation, LoadedEngine, load_tokenizer


class ScriptedEngine(LoadedEngine):
    name = "scripted"

    def __init__(self, model_dir: Path, reply: Callable[[str], str] | None = None) -> None:
        self._tokenizer = load_tokenizer(model_dir)
        self.reply = reply or (lambda prompt: "The first error step is [1]")
        self.prompts: list[str] = []
        self.gate = threading.Event()  # set = engine calls finish
        self.gate.set()
        self.started = threading.Event()  # set when a call is waiting on the gate
        self.cancelled = 0
        self.closed = False
        self.finished_before_close = 0

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def info(self) -> EngineInfo:
        return EngineInfo("scripted", "0" * 16, "tiny", 4096, self.name)

    def queue_depth(self) -> int:
        return 0

    async def start(self) -> None:
        self.closed = False

    async def ready(self) -> bool:
        return not self.closed

    async def close(self) -> None:
        self.closed = True

    async def _wait_gate(self) -> None:
        self.started.set()
        try:
            while not self.gate.is_set():
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def generate(
        self, prompts: list[list[int]], max_new_tokens: int, stop: Sequence[str]
    ) -> list[Generation]:
        await self._wait_gate()
        texts = [self._tokenizer.decode(p) for p in prompts]
        self.prompts.extend(texts)
        self.finished_before_close += 0 if self.closed else 1
        return [Generation(self.reply(t), 3, "stop") for t in texts]

    async def score(
        self, prompt_ids: list[list[int]], output_ids: list[list[int]]
    ) -> list[list[float]]:
        await self._wait_gate()
        self.finished_before_close += 0 if self.closed else 1
        return [[-1.0] * len(o) for o in output_ids]
