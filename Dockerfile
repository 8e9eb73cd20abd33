# syntax=docker/dockerfile:1
# Images of the AsyncDiff operator project. Targets:
#   operator    the kopf operator (Python slim, no torch), uid 10001       docker build --target operator -t asyncdiff-operator .
#   worker      the torchrun worker on a CUDA runtime base, CUDA torch     docker build --target worker -t asyncdiff-worker .
#   worker-cpu  the worker with CPU torch and a baked tiny SD 1.5 model    docker build --target worker-cpu -t asyncdiff-worker-cpu .
#               (kind tests: gloo on CPU; the model is at /opt/asyncdiff/models/tiny-sd15)
# Every target runs as the numeric non-root user 10001 (Kubernetes can check runAsNonRoot only for numeric users).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The CUDA runtime of the base image should match the CUDA build of torch (TORCH_INDEX): cu128 <-> 12.8.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu22.04
# Keep in sync with pyproject.toml's version (tests/packaging/test_dockerfile.py checks it).
ARG ASYNCDIFF_VERSION=0.1.0
# The torch the project is developed and tested with (Makefile TORCH_DEV_PIN).
ARG TORCH_VERSION=2.13.0

# ---------------------------------------------------------------------------------------------------------------------
# The project as a wheel, built once and installed by every target with the extra it needs.
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY worker/ worker/
COPY operator/ operator/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS operator
ARG ASYNCDIFF_VERSION
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 asyncdiff \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin asyncdiff
COPY --from=wheel /wheels /wheels
# Only the operator extra: kopf, kubernetes, prometheus-client. No torch in this image.
RUN pip install --no-cache-dir --find-links /wheels "asyncdiff-operator[operator]==${ASYNCDIFF_VERSION}" \
    && rm -rf /wheels
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["asyncdiff-operator"]
CMD ["--liveness=http://0.0.0.0:8080/healthz"]

# ---------------------------------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS worker
ARG ASYNCDIFF_VERSION
ARG TORCH_VERSION
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH HOME=/home/asyncdiff \
    ASYNCDIFF_MODEL_CACHE=/var/cache/asyncdiff/models HF_HOME=/var/cache/asyncdiff/huggingface
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Python 3.11 from Ubuntu 22.04 (the project needs >= 3.11; 22.04's default python3 is 3.10). Distribution package
# versions are not pinned: the archive drops superseded patch versions, so a pin breaks the build; security
# updates come with the CUDA base image tag.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv \
    && groupadd --system --gid 10001 asyncdiff \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/asyncdiff asyncdiff \
    && mkdir -p /var/cache/asyncdiff/models /var/cache/asyncdiff/huggingface \
    && chown -R 10001:10001 /var/cache/asyncdiff
# CUDA torch from the PyTorch index first, so that the worker extra's torch range is already satisfied.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir --find-links /wheels "asyncdiff-operator[worker]==${ASYNCDIFF_VERSION}" \
    && rm -rf /wheels
# Downloaded models (s3:// sources), shared by the ranks of a pod; mount a volume here to keep them across pods.
# Worker pods run with a read-only root filesystem: the operator mounts emptyDirs here and at /tmp and points HOME,
# TMPDIR and the library caches (HF, torch, Triton, CUDA, matplotlib) at them (operator/.../podsecurity.py).
VOLUME ["/var/cache/asyncdiff"]
USER 10001:10001
WORKDIR /home/asyncdiff
ENTRYPOINT ["python", "-m", "asyncdiff_worker.launch"]
CMD ["--help"]

# ---------------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS worker-cpu
ARG ASYNCDIFF_VERSION
ARG TORCH_VERSION
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/asyncdiff ASYNCDIFF_MODEL_CACHE=/var/cache/asyncdiff/models \
    HF_HOME=/var/cache/asyncdiff/huggingface HF_HUB_OFFLINE=1
RUN groupadd --system --gid 10001 asyncdiff \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/asyncdiff asyncdiff \
    && mkdir -p /var/cache/asyncdiff/models /var/cache/asyncdiff/huggingface /opt/asyncdiff/models \
    && chown -R 10001:10001 /var/cache/asyncdiff
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir --find-links /wheels "asyncdiff-operator[worker]==${ASYNCDIFF_VERSION}" \
    && rm -rf /wheels
# A tiny random-weight SD 1.5 pipeline, built offline, for jobs on clusters without model storage (kind tests).
RUN python -c "from asyncdiff.testing.tiny_pipelines import build_tiny_pipeline as b; \
b('sd15', '/opt/asyncdiff/models/tiny-sd15')"
VOLUME ["/var/cache/asyncdiff"]
USER 10001:10001
WORKDIR /home/asyncdiff
ENTRYPOINT ["python", "-m", "asyncdiff_worker.launch"]
CMD ["--help"]
