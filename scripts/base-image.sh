#!/usr/bin/env bash
# The Dockerfile's base made from this machine's own Debian archive, for machines that reach no
# container registry: Debian bookworm (minbase) with Python 3.11 and a venv at /usr/local, the layout
# of the official python image. Prints the base by digest, ready for --build-arg BASE_IMAGE=.
# Usage: scripts/base-image.sh ENGINE   (podman or docker; needs root for mmdebstrap)
set -euo pipefail
engine=${1:?usage: scripts/base-image.sh podman|docker}
name=localhost/tunebench-base:bookworm-python3.11

if ! "$engine" image exists "$name" 2>/dev/null && ! "$engine" image inspect "$name" >/dev/null 2>&1; then
  command -v mmdebstrap >/dev/null || { echo "scripts/base-image.sh needs mmdebstrap (apt-get install mmdebstrap)" >&2; exit 2; }
  # The machine's Debian sources (its mirror, its proxy), read at build time, never written into the image.
  sources=/etc/apt/sources.list.d/debian.sources
  [ -f "$sources" ] || sources=/etc/apt/sources.list
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mmdebstrap --variant=minbase --mode=root --format=tar --quiet \
    --include=ca-certificates,netbase,tzdata,python3.11,python3.11-venv,python3.11-dev \
    --customize-hook='chroot "$1" python3.11 -m venv /usr/local' \
    bookworm "$work/base.tar" "$sources"
  "$engine" import --change 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'ENV LANG=C.UTF-8' \
    "$work/base.tar" "$name" >/dev/null 2>&1
fi
digest=$("$engine" image inspect --format '{{.Digest}}' "$name")
echo "$name@$digest"
