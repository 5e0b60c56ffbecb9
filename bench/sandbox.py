#!/usr/bin/env python3
"""Job start with the native sandbox beside bubblewrap (issue 13), one run.

For each sandbox (`podder up --sandbox auto`, podder's own, and
`--sandbox bwrap`), on a fresh `podder up` (release build, one agent slot):
1. 40 sequential `true` steps of a pipeline, submit->finished on the
   server's clock (median of 3, after one warm run). Target: < 0.25 s.
2. `podder run --follow -- true`: wall time from the CLI's start to its
   exit (median of 30, after 3 warm runs). Target: < 15 ms.
Also the floor: the same `true` started bare, and inside `bwrap` by hand.
Prints both sandboxes' figures and the ratios.

Needs: target/release/podder (`cargo build --release -p podder`) and, for
the comparison, bubblewrap (`apt-get install bubblewrap`).

Run: python3 bench/sandbox.py [--runs N]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipelines import PODDER, Podder  # noqa: E402


class SandboxedPodder(Podder):
    """`podder up` with a chosen sandbox, one slot."""

    def __init__(self, work, sandbox):
        self.home = work / "home"
        self.home.mkdir(parents=True)
        self.env = dict(os.environ, HOME=str(self.home))
        for k in ("PODDER_SERVER", "PODDER_TOKEN", "PODDER_LOG", "RUST_LOG"):
            self.env.pop(k, None)
        self.proc = subprocess.Popen(
            [str(PODDER), "up", "--listen", "127.0.0.1:18644", "--data-dir", str(work / "data"), "--slots", "1",
             "--sandbox", sandbox],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in self.proc.stdout:
            if line.startswith("client config"):
                break
        else:
            sys.exit(f"podder up --sandbox {sandbox} did not start: {self.proc.stderr.read()}")
        self.dir = work / "proj"
        self.dir.mkdir()
        self("init", "bench")


def follow_true(p, runs):
    for _ in range(3):
        p("run", "--follow", "--", "true")
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        p("run", "--follow", "--", "true")
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), min(times)


def floor(cmd, n=30):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    a = ap.parse_args()
    if not PODDER.exists():
        sys.exit(f"{PODDER} is missing: cargo build --release -p podder")
    sandboxes = ["auto"] + (["bwrap"] if shutil.which("bwrap") else [])
    if len(sandboxes) == 1:
        print("bubblewrap is not installed: only the native sandbox is measured", flush=True)
    results = {}
    for sb in sandboxes:
        work = Path(tempfile.mkdtemp(prefix=f"podder-bench-sandbox-{sb}-"))
        try:
            p = SandboxedPodder(work, sb)
            try:
                p.pipeline("seq40", [(f"s{i:02d}", [f"s{i - 1:02d}"] if i else []) for i in range(40)])
                p.run_pipeline("seq40")
                runs = [p.run_pipeline("seq40") for _ in range(3)]
                steps = sorted(r[0] for r in runs)[1]
                med, best = follow_true(p, a.runs)
                results[sb] = (steps, med, best)
                name = "native" if sb == "auto" else "bubblewrap"
                print(f"{name:>10}: 40 steps {steps:.3f} s (target < 0.25 s: {'met' if steps < 0.25 else 'MISSED'}); "
                      f"run --follow -- true p50 {med:.1f} ms, best {best:.1f} ms "
                      f"(target < 15 ms: {'met' if med < 15 else 'MISSED'})", flush=True)
            finally:
                p.stop()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"floor: bare `true` {floor(['true']):.2f} ms", end="")
    if shutil.which("bwrap"):
        bw = ["bwrap", "--unshare-pid", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"]
        print(f", `bwrap ... true` {floor(bw):.2f} ms", end="")
    print()
    if "auto" in results and "bwrap" in results:
        n, b = results["auto"], results["bwrap"]
        print(f"ratio bubblewrap / native: 40 steps {b[0] / n[0]:.2f}x, run --follow p50 {b[1] / n[1]:.2f}x")


if __name__ == "__main__":
    main()
