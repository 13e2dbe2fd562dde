"""The engine interface (what the GRM service and evaluation talk to), and what all engines
share.

Three implementations (``hf``, ``vllm``, ``remote``) sit behind :class:`Engine`; the service
layer builds token ids and never knows which one runs. Token ids go in, so every engine sees the
exact same prompt tokens: the tokenizer always comes from the local model directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rlmec.shared.errors import ServiceUnavailableError

# Files whose bytes define the model's behaviour: the revision hashes exactly these.
_REVISION_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".gguf")


@dataclass(frozen=True)
class Generation:
    """One greedy continuation. ``text`` stops before the first stop string (vLLM's default,
    which the ``hf`` engine reproduces); ``num_tokens`` counts generated tokens."""

    text: str
    num_tokens: int
    finish_reason: str


@dataclass(frozen=True)
class Sampling:
    """Random decoding instead of greedy (method §1 step 1: temperature 0.7, top-p 0.95).

    ``seeds`` holds one seed per prompt of the call, so a sample does not depend on which
    other prompts share its batch (a resumed run draws what an uninterrupted one would). The
    ``vllm`` and ``remote`` engines honour it per prompt; ``hf`` seeds torch with the call's
    first seed before each micro-batch (reproducible for the same calls and batches only)."""

    temperature: float = 0.7
    top_p: float = 0.95
    seeds: tuple[int, ...] = ()

    def seed(self, index: int) -> int | None:
        return self.seeds[index] if self.seeds else None


@dataclass(frozen=True)
class EngineInfo:
    model_id: str
    revision: str
    tokenizer: str
    max_model_len: int
    engine: str


class LoadedEngine:
    """State every engine fills in ``start()``: the model's tokenizer and its card facts.
    Until then both accessors answer 503, which ``/ready`` and the routes turn into retries."""

    name: str
    _tokenizer: Any = None
    _info: EngineInfo | None = None

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise ServiceUnavailableError(f"the {self.name} engine is not started yet")
        return self._tokenizer

    def info(self) -> EngineInfo:
        if self._info is None:
            raise ServiceUnavailableError(f"the {self.name} engine is not started yet")
        return self._info

    def adapter_revisions(self) -> dict[str, str]:
        """LoRA adapters served beside the base model, name -> revision (none by default)."""
        return {}

    @contextlib.asynccontextmanager
    async def using(self, adapter: str | None) -> AsyncIterator[None]:
        """Held by each call for its whole length: an engine with adapters does not unload
        one while a call uses it. Nothing to hold without adapters."""
        yield


@runtime_checkable
class Engine(Protocol):
    """What the service needs from a model runtime.

    ``score`` returns, for each pair, the teacher-forced log-prob of every ``output_ids`` token
    given ``prompt_ids`` and the output tokens before it (docs/method.md §3.1)."""

    name: str

    @property
    def tokenizer(self) -> Any: ...

    def info(self) -> EngineInfo: ...

    def queue_depth(self) -> int: ...

    def adapter_revisions(self) -> dict[str, str]: ...

    def using(self, adapter: str | None) -> contextlib.AbstractAsyncContextManager[None]: ...

    async def start(self) -> None: ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...

    async def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        stop: Sequence[str],
        sampling: Sampling | None = None,
    ) -> list[Generation]:
        """Greedy continuations (or sampled ones with ``sampling``), one per prompt."""

    async def score(
        self, prompt_ids: list[list[int]], output_ids: list[list[int]]
    ) -> list[list[float]]: ...


@runtime_checkable
class ReloadableEngine(Engine, Protocol):
    """An engine that takes new weights while running (``vllm``, ``hf``): the rollout actor
    follows the trainer's published versions with it. The tokenizer stays the one it
    started with (a policy version changes weights, not vocabulary)."""

    async def reload_weights(self, model_dir: str | Path, revision: str | None = None) -> None:
        """Load the weights of the ``save_pretrained`` directory ``model_dir`` in place; the
        caller makes sure no request is in flight. ``revision``: the name the engine reports
        for them (e.g. the policy version); None hashes the files (:func:`model_revision`),
        which for a large model costs more than the load itself."""


async def generate_in_context(
    engine: Engine,
    prompts: list[list[int]],
    max_new_tokens: int,
    stop: Sequence[str],
    sampling: Sampling | None = None,
    *,
    names: Sequence[str] | None = None,
) -> list[Generation]:
    """:meth:`Engine.generate` with each prompt's budget cut to what its context leaves
    (prompt + output <= max_model_len); prompts of one budget go to the engine together.
    A prompt that fills the context is a ValueError naming it (``names[i]``)."""
    limit = engine.info().max_model_len
    budgets = [min(max_new_tokens, limit - len(p)) for p in prompts]
    out: list[Generation | None] = [None] * len(prompts)
    for budget in sorted(set(budgets)):
        idx = [i for i, b in enumerate(budgets) if b == budget]
        if budget < 1:
            name = names[idx[0]] if names else f"prompt {idx[0]}"
            raise ValueError(
                f"{name}: the prompt ({len(prompts[idx[0]])} tokens) fills the model's context "
                f"({limit}); use a longer-context model or raise --max-model-len"
            )
        part = sampling
        if sampling is not None and sampling.seeds:
            part = replace(sampling, seeds=tuple(sampling.seeds[i] for i in idx))
        gens = await engine.generate([prompts[i] for i in idx], budget, stop, part)
        for i, gen in zip(idx, gens, strict=True):
            out[i] = gen
    return [g for g in out if g is not None]


def model_revision(model_dir: str | Path) -> str:
    """sha256 over the config, tokenizer and weight files (names and bytes), first 16 hex.

    Content, not mtime: two copies of the same weights report the same revision, which is
    what a reward cache keyed by model version needs."""
    root = Path(model_dir)
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in _REVISION_SUFFIXES)
    for path in files:
        digest.update(str(path.relative_to(root)).encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def check_model_dir(model_dir: str | Path) -> Path:
    """The model is always a local HF directory (no hub): fail early with the fix."""
    path = Path(model_dir).expanduser()
    if not (path / "config.json").is_file():
        raise ServiceUnavailableError(
            f"model directory {str(path)!r} has no config.json; point --model (RLMEC_GRM_MODEL "
            "for the GRM service) at a local Hugging Face model directory (e.g. from "
            "`rlmec grm convert-smollm2`)"
        )
    return path


def config_max_len(model_dir: Path) -> int:
    """The model's own context length from config.json (``max_position_embeddings``)."""
    config = json.loads((model_dir / "config.json").read_text())
    for key in ("max_position_embeddings", "n_positions", "max_seq_len"):
        if isinstance(config.get(key), int):
            return int(config[key])
    return 2048


def load_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.eos_token_id is None:
        raise ServiceUnavailableError(
            f"the tokenizer in {str(model_dir)!r} has no EOS token; the scoring prompt (§3.1) "
            "scores EOS, so set eos_token in its tokenizer_config.json"
        )
    return tokenizer


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Text before the earliest stop string (excluded, as vLLM does), and whether one hit."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
