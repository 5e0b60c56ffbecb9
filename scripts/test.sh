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
