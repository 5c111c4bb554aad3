# The pinned container of the suite: the workflow, its Python environment (requirements*.lock)
# and the TeX tool chain of the paper. On a GPU host, torch==2.13.0 from PyPI is the CUDA build.
#   docker build -t tunebench .
#   docker run --gpus all -v "$PWD/results:/opt/tunebench/results" tunebench snakemake --cores all
FROM python:3.11.7-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DS_BUILD_OPS=0

WORKDIR /opt/tunebench
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

COPY apt-packages.txt ./
RUN apt-get update \
    && grep -v '^#' apt-packages.txt | xargs apt-get install -y --no-install-recommends build-essential git \
    && rm -rf /var/lib/apt/lists/*

COPY requirements.lock requirements-nodeps.lock ./
RUN pip install --no-cache-dir -r requirements.lock \
    && pip install --no-cache-dir --no-deps --no-build-isolation -r requirements-nodeps.lock

COPY . .
RUN pip install --no-cache-dir --no-deps -e .

CMD ["snakemake", "--cores", "all"]
