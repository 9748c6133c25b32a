# Worker image: the repo, its pinned dependencies and a Prefect worker for a work pool.
#   docker build -t dfd-worker .
#   docker run --gpus all -e PREFECT_API_URL=http://prefect:4200/api -v /srv/dfd:/repo dfd-worker
# The mounted /repo is a clone of this repository with its DVC cache/remote configured (the flows
# commit retrain branches there). For a Kubernetes work pool, use this image as the job image
# (README "Work pools"); building it is not part of CI.
FROM python:3.11-slim

RUN apt-get update && apt-get install -y --no-install-recommends git make \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 DVC_NO_ANALYTICS=1 DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false \
    TORCH_HOME=/repo/.torch
WORKDIR /opt/dfd
COPY pyproject.toml README.md ./
COPY src ./src
COPY flows ./flows
# torch/torchvision from PyPI ship CUDA; on a CPU-only host add --index-url https://download.pytorch.org/whl/cpu
RUN pip install . && pip check

WORKDIR /repo
ENV DFD_WORK_POOL=gpu-pool
CMD ["sh", "-c", "prefect worker start --pool \"$DFD_WORK_POOL\" --type process"]
