# Reward service (`rlmec reward serve`) and queue workers (`python -m
# rlmec.services.reward.worker`): one image, two commands.
#
# No torch: the reward service never runs a model (the GRM service does). It does load policy
# tokenizers to project rewards onto them (§6), which needs transformers' tokenizer classes
# only: transformers + tokenizers install and load tokenizers without torch. The image is
# about 10x smaller than one with torch and starts in seconds.
#
#   docker build -f deploy/docker/reward.Dockerfile -t rlmec-reward:latest .
#   docker run -p 8002:8002 -e RLMEC_REWARD_REDIS_URL=redis://redis:6379/0 \
#       -e 'RLMEC_REWARD_GRM_URLS=["http://grm:8001"]' rlmec-reward:latest
FROM python:3.11-slim-bookworm

WORKDIR /opt/rlmec
COPY . .
RUN python deploy/docker/requirements.py serve \
        --exclude torch gguf accelerate > /tmp/requirements.txt \
    && python -m pip install --no-cache-dir -r /tmp/requirements.txt \
    && python -m pip install --no-cache-dir --no-deps . \
    && rm /tmp/requirements.txt \
    && useradd --create-home --uid 10001 rlmec

ENV RLMEC_REWARD_HOST=0.0.0.0 \
    RLMEC_REWARD_PORT=8002 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TRANSFORMERS_NO_ADVISORY_WARNINGS=1 \
    PYTHONUNBUFFERED=1

USER rlmec
EXPOSE 8002
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8002/health', timeout=4)"
# Workers run the same image with: python -m rlmec.services.reward.worker --concurrency 4
CMD ["rlmec", "reward", "serve"]
