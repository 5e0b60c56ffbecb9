#!/bin/bash
# One upload of a directory into a fresh `podder up`, with the client's wall
# and CPU time (/usr/bin/time) and the server's CPU time (/proc/<pid>/stat).
# For quick before/after comparisons of issue 3 target (a); the side-by-side
# benchmark is bench/datasets.py.
#
# Usage: bench/upload_cpu.sh DIR [perf]
#   DIR   the tree to upload, e.g. /tmp/podder-bench-data/repo-big/big
#   perf  record the client with `perf record -g` into $WORK/perf.data
# Environment: B (podder binary, default target/release/podder),
#              WORK (scratch directory, default /tmp/podder-upload-cpu),
#              ARGS (more `data upload` flags, e.g. --over-http to send every
#              byte over HTTP instead of handing large files to the server).
set -eu
DIR=$1
B=${B:-$(cd "$(dirname "$0")/.." && pwd)/target/release/podder}
WORK=${WORK:-/tmp/podder-upload-cpu}
W=$WORK/w
rm -rf "$W"; mkdir -p "$W/home" "$W/proj"
export HOME=$W/home; unset PODDER_SERVER PODDER_TOKEN
PODDER_LOG=warn "$B" up --listen 127.0.0.1:18663 --data-dir "$W/data" --slots 1 > "$W/up.out" 2> "$W/up.err" &
UP=$!
trap 'kill $UP 2>/dev/null; wait $UP 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "client config" "$W/up.out" 2>/dev/null && break; sleep 0.1; done
cd "$W/proj" && "$B" init bench >/dev/null && "$B" data create big >/dev/null
find "$DIR" -type f -print0 | xargs -0 cat > /dev/null
a=$(awk '{print $14+$15}' /proc/$UP/stat)
if [ "${2:-}" = perf ]; then
  perf record -g -p $UP -o "$WORK/perf.data" &
  PERF=$!; sleep 0.5
  "$B" data upload big "$DIR" ${ARGS:-} 2>&1 | tail -2
  kill -INT $PERF; wait $PERF || true
else
  /usr/bin/time -f "client: wall %e s user %U sys %S" "$B" data upload big "$DIR" ${ARGS:-} 2>&1 | tail -2
fi
b=$(awk '{print $14+$15}' /proc/$UP/stat)
echo "server cpu: $(( (b - a) * 10 )) ms"
