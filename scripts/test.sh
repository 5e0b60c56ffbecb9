#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need when it is
# missing (this runs as root on a fresh Debian machine), then checks formatting
# and lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_updated=0
need_pkg() { # command package
  if ! command -v "$1" >/dev/null 2>&1; then
    if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  fi
}
need_pkg bwrap bubblewrap
need_pkg curl curl
need_pkg python3 python3
need_pkg git git
need_pkg dockerd docker.io
need_pkg busybox busybox-static
need_pkg debootstrap debootstrap

# The Docker engine (no systemd here: start it by hand), and the local images
# the tests use, since no registry is reachable.
if ! docker info >/dev/null 2>&1; then
  echo "== starting dockerd"
  (dockerd >"${TMPDIR:-/tmp}/podder-dockerd.log" 2>&1 &)
  for _ in $(seq 150); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
  docker info >/dev/null 2>&1 || { tail -20 "${TMPDIR:-/tmp}/podder-dockerd.log"; exit 1; }
fi
echo "== test images"
bash scripts/test-images.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --test-threads 4 --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
