#!/usr/bin/env bash
# Makes the local Docker images the tests use (no registry is reachable):
#   podder-test/busybox      busybox-static in an empty tree (~1 s)
#   podder-test/python:3.11  Debian minbase with python3 and venv (~80 s)
# Idempotent: an image that exists is kept.
set -euo pipefail
have() { docker image inspect "$1" >/dev/null 2>&1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if ! have podder-test/busybox; then
  mkdir -p "$tmp/bb/bin" "$tmp/bb/tmp"
  cp /bin/busybox "$tmp/bb/bin/"
  for c in sh ls cat echo sleep id touch find head wc test true false mkdir rm env; do ln -s busybox "$tmp/bb/bin/$c"; done
  chmod 1777 "$tmp/bb/tmp"
  tar -C "$tmp/bb" -c . | docker import - podder-test/busybox >/dev/null
fi

if ! have podder-test/python:3.11; then
  MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip bookworm "$tmp/py" "$MIRROR" >"$tmp/debootstrap.log" 2>&1 \
    || { tail -20 "$tmp/debootstrap.log"; exit 1; }
  rm -rf "$tmp/py/var/cache/apt/archives"/*.deb
  tar -C "$tmp/py" -c . | docker import -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' - podder-test/python:3.11 >/dev/null
fi
