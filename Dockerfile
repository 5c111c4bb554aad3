# The pinned container of the suite: the workflow, its Python environment for CUDA hosts
# (requirements-gpu.lock, then requirements-nodeps.lock) and the TeX tool chain of the paper.
# Build, convert for apptainer and run on a cluster (README "Running in a container"):
#   docker build -t tunebench:0.1.0 .
#   apptainer build tunebench.sif docker-daemon://tunebench:0.1.0
#   snakemake --profile profiles/slurm --config container=$PWD/tunebench.sif
# The CUDA runtime comes with torch's nvidia-* wheels; the driver comes from the host (apptainer --nv).
FROM python:3.11.7-slim-bookworm

LABEL org.opencontainers.image.title="tunebench" \
      org.opencontainers.image.version="0.1.0"

# DS_BUILD_OPS=0 leaves DeepSpeed's ops to be compiled on first use, except CPU Adam (ZeRO-3 with
# optimizer offload), which is compiled into the image: compute nodes often have no compiler.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DS_BUILD_OPS=0 \
    DS_BUILD_CPU_ADAM=1

WORKDIR /opt/tunebench
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

COPY apt-packages.txt ./
RUN apt-get update \
    && grep -v '^#' apt-packages.txt | xargs apt-get install -y --no-install-recommends build-essential git \
    && rm -rf /var/lib/apt/lists/*

COPY requirements-gpu.lock requirements-nodeps.lock ./
RUN pip install --no-cache-dir -r requirements-gpu.lock \
    && pip install --no-cache-dir --no-deps --no-build-isolation -r requirements-nodeps.lock

COPY . .
RUN pip install --no-cache-dir --no-deps -e .

CMD ["snakemake", "--cores", "all"]
