#!/usr/bin/env bash
# Runs README.md's quickstart as written, so that the README cannot drift:
# the commands of the ```sh block under "## Quickstart", each run literally
# from the repository root, on a fresh HOME and TMPDIR, with no bubblewrap on
# PATH (the quickstart must work on a machine without it). Fails when a
# command fails, or when what a command prints (past cargo's own progress
# lines) holds a log line (a tracing level, an ANSI escape) or a warning.
set -euo pipefail
cd "$(dirname "$0")/.."

# The block's lines, comments and all (bash reads a trailing `# ...` as one).
commands=$(awk '
  /^## / { in_section = ($0 == "## Quickstart") }
  in_section && /^```sh$/ { in_block = 1; next }
  in_block && /^```$/ { exit }
  in_block && NF { print }
' README.md)
[ -n "$commands" ] || { echo "readme-quickstart: no \`\`\`sh block under ## Quickstart in README.md" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/podder-quickstart.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/home" "$work/tmp"

# Cargo and rustup stay where they are; only HOME moves.
export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"

# PATH without bwrap: a directory that holds it is replaced by a copy made
# of links to everything else in it.
clean_path=
n=0
IFS=: read -r -a dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  [ -n "$d" ] || continue
  if [ -e "$d/bwrap" ]; then
    n=$((n + 1))
    shadow="$work/path-$n"
    mkdir "$shadow"
    for f in "$d"/* "$d"/.[!.]*; do
      [ -e "$f" ] || continue
      [ "$(basename "$f")" = bwrap ] || ln -s "$f" "$shadow/"
    done
    d=$shadow
  fi
  clean_path=${clean_path:+$clean_path:}$d
done
if PATH=$clean_path command -v bwrap >/dev/null 2>&1; then
  echo "readme-quickstart: bwrap is still on PATH" >&2
  exit 1
fi

# A line that looks like the log rather than a command's own output.
looks_like_log() {
  grep -E -e $'\x1b\\[' -e '[Ww][Aa][Rr][Nn][Ii][Nn][Gg]' \
    -e '^[^ ]*( +[^ ]+)? +(TRACE|DEBUG|INFO|WARN|ERROR) ' -e '^ *(TRACE|DEBUG|INFO|WARN|ERROR) ' "$1"
}
# cargo's own progress lines around a `cargo run` (its warnings are kept).
cargo_progress='^ +(Compiling|Checking|Finished|Running|Blocking|Downloading|Downloaded|Updating|Locking|Adding|Fresh) '

status=0
while IFS= read -r line; do
  case "$line" in
    # The block's CI entry: this script is one of its stages, so running it
    # here would recurse.
    "bash scripts/test.sh"*) echo "-- skipped (it runs this script): $line"; continue ;;
  esac
  echo "-- $line"
  out="$work/out"
  if ! env -u PODDER_LOG -u RUST_LOG -u PODDER_SERVER -u PODDER_TOKEN -u PODDER_CONFIG -u PODDER_DATA_DIR \
    -u XDG_CONFIG_HOME -u XDG_DATA_HOME -u XDG_CACHE_HOME \
    HOME="$work/home" TMPDIR="$work/tmp" PATH="$clean_path" \
    bash -c "$line" >"$out" 2>&1 </dev/null; then
    cat "$out"
    echo "readme-quickstart: failed: $line" >&2
    exit 1
  fi
  grep -E -v "$cargo_progress" "$out" >"$out.own" || true
  if looks_like_log "$out.own" >"$out.bad"; then
    cat "$out"
    echo "readme-quickstart: \`$line\` printed log lines or warnings:" >&2
    cat "$out.bad" >&2
    status=1
  else
    tail -n 8 "$out"
  fi
done <<<"$commands"
exit "$status"
