# GRM service on a CUDA GPU, engine = in-process vLLM.
#
# Based on the vLLM image so torch, CUDA and vLLM come prebuilt and matched. rlmec's `serve`
# extra pins torch to the CPU build's version (for CPU machines), so it is not installed as
# is: requirements.py prints the same requirements minus the packages the base image already
# holds, then rlmec itself goes in with --no-deps. pip never replaces the image's CUDA torch.
#
#   docker build -f deploy/docker/grm.Dockerfile -t rlmec-grm:latest .
#   docker run --gpus all -p 8001:8001 -v /srv/models/grm:/models/grm:ro rlmec-grm:latest
# Its vLLM must be the release rlmec.inference.vllm_engine.SUPPORTED_VLLM names.
ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0
FROM ${VLLM_IMAGE}

WORKDIR /opt/rlmec
COPY . .
RUN python3 deploy/docker/requirements.py serve \
        --exclude torch transformers tokenizers > /tmp/requirements.txt \
    && python3 -m pip install --no-cache-dir -r /tmp/requirements.txt \
    && python3 -m pip install --no-cache-dir --no-deps . \
    && rm /tmp/requirements.txt \
    && useradd --create-home --uid 10001 rlmec

# Models are local directories mounted read-only; nothing is fetched from a hub at run time.
ENV RLMEC_GRM_MODEL=/models/grm \
    RLMEC_GRM_ENGINE=vllm \
    RLMEC_GRM_DTYPE=bfloat16 \
    RLMEC_GRM_HOST=0.0.0.0 \
    RLMEC_GRM_PORT=8001 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PYTHONUNBUFFERED=1

USER rlmec
EXPOSE 8001
# Liveness only; readiness (engine loaded) is /ready, used by the orchestrator's probes.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8001/health', timeout=4)"
ENTRYPOINT ["rlmec", "grm", "serve"]
