#!/usr/bin/env bash
# The sandbox tests again as an unprivileged user (`nobody`), where a user
# namespace is the only way into the native sandbox. CI runs the suite as
# root; this runs crates/agent/tests/executor (layout, isolation, read-only
# inputs, stop of the whole tree, death with the agent, timeouts, and the
# attacker's list) a second time, from a copy of the test binary that
# nobody can execute.
set -euo pipefail
cd "$(dirname "$0")/.."
user=${PODDER_TEST_USER:-nobody}
bin=$(cargo test -q -p podder-agent --test executor --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "executor":
        print(m["executable"])')
[ -x "$bin" ] || { echo "the executor test binary was not built" >&2; exit 1; }
dir=$(mktemp -d)
visible=$(mktemp -d /opt/podder-unprivileged.XXXXXX)
trap 'rm -rf "$dir" "$visible"' EXIT
cp "$bin" "$dir/executor"
chmod 755 "$dir" "$dir/executor"
chown "$user" "$visible"
cd "$dir"
runuser -u "$user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin TMPDIR=/tmp HOME=/tmp \
  PODDER_TEST_VISIBLE_DIR="$visible" ./executor --test-threads 2
