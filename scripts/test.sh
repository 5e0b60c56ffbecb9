#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need when it is
# missing (this runs as root on a fresh Debian machine), then checks formatting
# and lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each stage prints its name, then its time when it ends.
stage_name=
stage_start=0
stage() { # name (none: end the last stage)
  if [ -n "$stage_name" ]; then echo "== $stage_name ($((SECONDS - stage_start))s)"; fi
  stage_name=${1:-}
  stage_start=$SECONDS
  if [ -n "$stage_name" ]; then echo "== $stage_name"; fi
}

trap stage EXIT # the time of the last stage, also when it fails

stage "tools"
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
  stage "starting dockerd"
  (dockerd >"${TMPDIR:-/tmp}/podder-dockerd.log" 2>&1 &)
  for _ in $(seq 150); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
  docker info >/dev/null 2>&1 || { tail -20 "${TMPDIR:-/tmp}/podder-dockerd.log"; exit 1; }
fi
stage "test images"
bash scripts/test-images.sh

stage "cargo fmt --check"
cargo fmt --all -- --check
stage "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
stage "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --test-threads 4 --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

# The sandbox tests again as an unprivileged user, where user namespaces
# are the only way into the native sandbox.
stage "sandbox tests as nobody"
bash scripts/test-unprivileged.sh

# README.md's quickstart, run as written (one release build, on a fresh home
# and without bubblewrap on PATH), so the README cannot drift.
stage "readme quickstart"
bash scripts/readme-quickstart.sh
