#!/usr/bin/env bash
# Creates the base image docker/Dockerfile names (debian:bookworm-slim) on a machine that cannot
# pull images: a minimal Debian 12 root filesystem from debootstrap, imported with `docker
# import`. Kept when already present. The Debian mirror comes from this machine's own apt
# configuration, so no host name is written here.
set -euo pipefail
IMAGE="${1:-debian:bookworm-slim}"
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE present"
  exit 0
fi
mirror=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  # The first deb822 stanza whose URI is a Debian archive (not the security archive).
  mirror=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /debian\/?$/ && $i !~ /security/) { print $i; exit } }' \
    /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1 == "deb" && $2 ~ /debian\/?$/ && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list)
fi
if [ -z "$mirror" ]; then
  echo "no Debian mirror found in the apt configuration" >&2
  exit 1
fi
command -v debootstrap >/dev/null || { apt-get install -y -qq debootstrap >/dev/null; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
echo "debootstrap bookworm from $mirror"
debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
tar -C "$root" -c . | docker import - "$IMAGE" >/dev/null
echo "base image $IMAGE created"
