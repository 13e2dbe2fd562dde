"""The inference layer: model runtimes behind one :class:`~rlmec.inference.engine.Engine`
protocol (``hf`` transformers, ``vllm`` in-process, ``remote`` OpenAI-compatible servers),
greedy generation and teacher-forced scoring on token ids. It imports only ``shared``; the GRM
service, evaluation and the data pipeline build on it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlmec.inference.engine import Engine
    from rlmec.inference.settings import EngineSettings


def create_engine(settings: EngineSettings) -> Engine:
    """The engine ``settings.engine`` names; heavy imports happen only for that one."""
    if settings.engine == "vllm":
        from rlmec.inference.vllm_engine import VllmEngine

        return VllmEngine(settings)
    if settings.engine == "remote":
        from rlmec.inference.remote_engine import RemoteEngine

        return RemoteEngine(settings)
    from rlmec.inference.hf_engine import HfEngine

    return HfEngine(settings)
