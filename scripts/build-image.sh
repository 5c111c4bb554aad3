#!/usr/bin/env bash
# Builds the suite's image with docker or podman (whichever is on PATH) and prints its tag,
# localhost/tunebench:<variant>-<hash of every input of the build>; an image with that tag is reused,
# so building the same inputs twice costs nothing.
# Usage: scripts/build-image.sh [LOCK] [BASE]
#   LOCK  requirements-gpu.lock (default: CUDA torch, the image for GPU clusters) or
#         requirements.lock (CPU torch: the same image for CI and CPU machines)
#   BASE  registry (default: the Dockerfile's python image, by digest) or local (made by
#         scripts/base-image.sh from this machine's Debian archive, where no registry is reachable)
set -euo pipefail
cd "$(dirname "$0")/.."
lock=${1:-requirements-gpu.lock}
base=${2:-registry}
case "$lock" in
  requirements-gpu.lock) variant=gpu ;;
  requirements.lock) variant=cpu ;;
  *) echo "LOCK is $lock; use requirements-gpu.lock or requirements.lock" >&2; exit 2 ;;
esac
engine=$(command -v podman || command -v docker) || { echo "neither podman nor docker is on PATH" >&2; exit 2; }
args=(--build-arg "LOCK=$lock")
case "$base" in
  registry) ;;
  local) args+=(--build-arg "BASE_IMAGE=$(scripts/base-image.sh "$engine")") ;;
  *) echo "BASE is $base; use registry or local" >&2; exit 2 ;;
esac
if [ "$(basename "$engine")" = podman ]; then
  # rootful podman on hosts where crun cannot run (scripts/podman-containers.conf); --format docker
  # keeps the Dockerfile's SHELL line, which the OCI format drops.
  export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/podman-containers.conf}
  args+=(--format docker --pull=never)
  # This machine's pip configuration, local wheels and CA bundle, mounted for the RUN steps only:
  # nothing of them is copied into a layer.
  for path in /etc/pip.conf /etc/xdg/pip /opt/wheels /opt/pypi /opt/pypi-more /etc/ssl/certs/ca-certificates.crt; do
    if [ -e "$path" ]; then args+=(--volume "$path:$path:ro"); fi
  done
  if [ -f "$HOME/.config/pip/pip.conf" ]; then
    args+=(--volume "$HOME/.config/pip/pip.conf:/root/.config/pip/pip.conf:ro")
  fi
fi

# The tag names the build's inputs: the files of the build context, the lock and the base.
inputs=$(python3 - "$lock" "${args[*]}" <<'PY'
import hashlib, subprocess, sys
digest = hashlib.sha256("\0".join(sys.argv[1:]).encode())
listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                        capture_output=True, check=True).stdout.split(b"\0")
for name in sorted(filter(None, listed)):
    try:
        digest.update(name + b"\0" + open(name, "rb").read())
    except FileNotFoundError:
        pass
print(digest.hexdigest()[:16])
PY
)
tag=localhost/tunebench:$variant-$inputs
if ! "$engine" image inspect "$tag" >/dev/null 2>&1; then
  "$engine" build --network host "${args[@]}" --tag "$tag" . >&2
fi
echo "$tag"
