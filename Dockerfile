# The pinned container of the suite: the workflow, its Python environment (requirements-gpu.lock for
# CUDA hosts by default, requirements.lock for CPU torch; then requirements-nodeps.lock) and the TeX
# tool chain of the paper. Build it with `make image` (scripts/build-image.sh; README "Running in a
# container"). The CUDA runtime comes with torch's nvidia-* wheels; the driver comes from the host
# (apptainer --nv).
# The base by digest; the tag beside it is for people. scripts/base-image.sh makes a stand-in of the
# same layout from Debian's archive where no registry is reachable and passes it by its own digest.
ARG BASE_IMAGE=docker.io/library/python:3.11.7-slim-bookworm@sha256:cfd7ed5c11a88ce533d69a1da2fd932d647f9eb6791c5b4ddce081aedf7f7876
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="tunebench" \
      org.opencontainers.image.version="0.1.0"

ARG LOCK=requirements-gpu.lock

# DS_BUILD_OPS=0 leaves DeepSpeed's ops to be compiled on first use, except CPU Adam (ZeRO-3 with
# optimizer offload), which is compiled into the image: compute nodes often have no compiler.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DS_BUILD_OPS=0 \
    DS_BUILD_CPU_ADAM=1

WORKDIR /opt/tunebench
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

COPY apt-packages.txt apt-packages-image.txt ./
RUN apt-get update \
    && grep -hv '^#' apt-packages.txt apt-packages-image.txt | xargs apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/*

# DeepSpeed records the accelerator it was built for and loads a prebuilt op only under that one: the
# GPU nodes' is cuda. Its CPU Adam is a plain C++ extension on every accelerator, so no nvcc is needed.
COPY ${LOCK} requirements-nodeps.lock ./
RUN pip install --no-cache-dir -r "${LOCK}" \
    && DS_ACCELERATOR=cuda pip install --no-cache-dir --no-deps --no-build-isolation -r requirements-nodeps.lock

# Without a GPU DeepSpeed picks its cpu accelerator, whose CPU Adam and shared-memory collectives are JIT
# builds into TORCH_EXTENSIONS_DIR (tunebench train sets it to /usr/local/torch_extensions): built here, so
# CPU runs load them rather than compile them in every container, on every node.
RUN DS_ACCELERATOR=cpu TORCH_EXTENSIONS_DIR=/usr/local/torch_extensions python -c \
    "from deepspeed.ops.op_builder.cpu import CPUAdamBuilder, ShareMemCommBuilder as Shm; CPUAdamBuilder().load(); Shm().load()"

COPY . .
RUN pip install --no-cache-dir --no-deps -e .

CMD ["snakemake", "--cores", "all"]
