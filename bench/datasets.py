#!/usr/bin/env python3
"""Dataset benchmark (issue 3): podder beside `cp -r` and DVC, in one run.

Trees, generated fresh under --work (default /tmp/podder-bench-data):
  (a) big:   4 files of 256 MiB of random bytes (1 GiB)
  (b) small: 100,000 files of 4 KiB of random bytes in 100 directories
  (c) the same trees again with 1% changed: 1% of the small files rewritten,
      and 1% of the big tree's bytes overwritten in place (4 files cannot
      have 1% of their files changed)
  (d) job start with a cached 10 GiB dataset (10 sparse files of 1 GiB)
      mounted, beside the same job without it.

podder runs as `podder up` (release build, SQLite, local store) with the
client on the same machine; `cp -r` copies to the same disk; DVC does
`dvc add` then `dvc push` to a local directory remote (DVC from PyPI in a
throwaway venv, --dvc-venv). DVC returns with its writes in the page cache,
podder with its writes on disk; a line after the times also shows DVC until
a `sync` after its push returns, for a like-for-like reading (the table's
ratios use DVC's time as a user sees it). Before each timing the tree is read into the page
cache and a `sync` puts every earlier write on disk (so that no tool waits for
the flushing of what another wrote), and the tools alternate on the same data. (a) and (b) are timed --reps times
(default 3), each time on a fresh server data directory (and, for DVC, after
removing its cache, remote and hash state), after a `sync`; the table shows
the medians and every time is printed above it.

The previous run's work directory is renamed aside at the start and deleted
only at the end: on ext4 without a journal (this machine's disk), inodes freed
in the last minutes are skipped when new files are made, one look-up each, so
deleting a few hundred thousand files just before a timing makes every file
created in it (chunk files, copies) far slower.

podder is timed on its default path: the client on the server's machine hands
files of 4 MiB and more to the server by descriptor, and the server reads and
hashes them itself. "(a) big over HTTP" times the same tree with --over-http,
every byte sent over TCP as from another machine.

Run: python3 bench/datasets.py [--small-files 100000] [--skip-dvc] [--skip-10g]
                               [--podder PATH] [--only-big]
"""
import argparse
import atexit
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PODDER = ROOT / "target" / "release" / "podder"  # --podder overrides
MiB = 1 << 20


def run(cmd, env=None, cwd=None, quiet=True):
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=quiet, text=True)
    if out.returncode != 0:
        sys.exit(f"command failed: {cmd}\n{out.stdout}\n{out.stderr}")
    return out.stdout if quiet else ""


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def warm(path):
    """Before each timing: the tree's bytes in the page cache, and every
    earlier tool's writes on disk (`sync`), so that no tool pays for the
    kernel's flushing of what the one before it wrote."""
    subprocess.run(f"find '{path}' -type f -print0 | xargs -0 cat > /dev/null", shell=True, check=True)
    run(["sync"])


def tree_bytes(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def gen_big(d):
    d.mkdir(parents=True)
    for i in range(4):
        with open(d / f"shard-{i}.bin", "wb") as f:
            for _ in range(256 // 8):
                f.write(os.urandom(8 * MiB))


def gen_small(d, n):
    for i in range(n):
        sub = d / f"d{i % 100:03d}"
        if i < 100:
            sub.mkdir(parents=True)
        (sub / f"f{i:06d}.bin").write_bytes(os.urandom(4096))


def change_small(d):
    files = sorted(d.rglob("*.bin"))
    for f in files[::100]:
        f.write_bytes(os.urandom(4096))
    return len(files[::100])


def change_big(d):
    rng = random.Random(7)
    total = 0
    for f in sorted(d.glob("*.bin")):
        size = f.stat().st_size
        with open(f, "r+b") as fh:
            for _ in range(max(1, size // MiB // 100)):
                fh.seek(rng.randrange(0, size - MiB))
                fh.write(os.urandom(MiB))
                total += MiB
    return total


class Podder:
    def __init__(self, work, data="podder-data"):
        self.home = work / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, HOME=str(self.home), PODDER_LOG="warn")
        self.env.pop("PODDER_SERVER", None)
        self.env.pop("PODDER_TOKEN", None)
        self.proc = subprocess.Popen(
            [str(PODDER), "up", "--listen", "127.0.0.1:18642", "--data-dir", str(work / data), "--gc-grace", "0"],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        # A run that fails half-way must not leave its server holding the port.
        atexit.register(self.proc.kill)
        for line in self.proc.stdout:
            if line.startswith("client config"):
                break
        cfg = (self.home / ".config/podder/config.toml").read_text()
        self.url = "http://127.0.0.1:18642"
        self.token = [l.split('"')[1] for l in cfg.splitlines() if l.startswith("token")][0]

    def __call__(self, *args, cwd=None):
        return run([str(PODDER), *args], env=self.env, cwd=cwd)

    def api(self, path):
        req = urllib.request.Request(self.url + "/api/v1" + path, headers={"Authorization": f"Bearer {self.token}"})
        return json.load(urllib.request.urlopen(req))

    def received(self):
        return self.api("/admin/stats")["chunk_bytes_received"]

    def upload(self, name, path, over_http=False, rehash=False):
        """Times one upload; returns the time and the bytes of chunks the server
        lacked (sent over HTTP, or read by the server itself from files of
        4 MiB and more handed over by descriptor: see ARCHITECTURE.md)."""
        out = []
        args = ["data", "upload", name, str(path), "--json"] + (["--over-http"] if over_http else []) \
            + (["--rehash"] if rehash else [])
        t = timed(lambda: out.append(json.loads(self(*args))))
        return t, out[0]["upload"]["bytes_sent"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Dvc:
    def __init__(self, work, venv, repo):
        self.bin = str(Path(venv) / "bin" / "dvc")
        self.repo = repo
        self.remote = work / f"dvc-remote-{repo.name}"
        self.env = dict(os.environ, DVC_NO_ANALYTICS="1")
        run(["git", "init", "-q"], cwd=repo)
        run([self.bin, "init", "-q"], cwd=repo, env=self.env)
        run([self.bin, "config", "core.analytics", "false"], cwd=repo, env=self.env)
        run([self.bin, "remote", "add", "-d", "local", str(self.remote)], cwd=repo, env=self.env)

    def forget(self, name):
        """Back to before `add_push(name)`: no cache, no remote, no hash state,
        so the next `add_push` does all its work again."""
        for d in (self.repo / ".dvc" / "cache", self.repo / ".dvc" / "tmp", self.remote):
            shutil.rmtree(d, ignore_errors=True)
        (self.repo / f"{name}.dvc").unlink(missing_ok=True)

    def add_push(self, name):
        t_add = timed(lambda: run([self.bin, "add", "-q", name], cwd=self.repo, env=self.env))
        t_push = timed(lambda: run([self.bin, "push", "-q"], cwd=self.repo, env=self.env))
        return t_add + t_push


def fmt_ratio(a, b):
    return f"{a / b:.1f}x" if b else "-"


def job_start_ms(p, cwd, data, n):
    """submit→running of n jobs (server clock), with or without a mount."""
    out = []
    for _ in range(n):
        args = ["run"] + (["--data", data] if data else []) + ["--", "true"]
        ref = p(*args, cwd=cwd).strip()
        while True:
            j = json.loads(p("status", ref, "--json", cwd=cwd))
            if j["state"] in ("succeeded", "failed", "stopped", "lost"):
                break
            time.sleep(0.05)
        assert j["state"] == "succeeded", j
        out.append(j["started_at"] - j["created_at"])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/podder-bench-data")
    ap.add_argument("--small-files", type=int, default=100_000)
    ap.add_argument("--dvc-venv", default="/tmp/dvc-venv")
    ap.add_argument("--skip-dvc", action="store_true")
    ap.add_argument("--skip-10g", action="store_true")
    ap.add_argument("--podder", help="a podder binary to use instead of building target/release/podder")
    ap.add_argument("--only-big", action="store_true", help="only (a) and (c) on the big tree")
    ap.add_argument("--reps", type=int, default=3,
                    help="(a) and (b) are timed this many times, each on a fresh server (and DVC cache and remote); "
                         "the medians are compared")
    a = ap.parse_args()
    global PODDER
    if a.podder:
        PODDER = Path(a.podder).resolve()
    else:
        run(["cargo", "build", "--release", "-q", "-p", "podder"], cwd=ROOT)
    work = Path(a.work)
    old = work.with_name(f"{work.name}.old-{os.getpid()}")
    if work.exists():
        work.rename(old)
    # One repository per tree, so that DVC working on one never walks the
    # other (100,000 untracked files beside a 1 GiB tree doubled DVC's time
    # for the 1 GiB).
    repos = {name: work / f"repo-{name}" for name in ("big", "small")}
    for r in repos.values():
        r.mkdir(parents=True)
    if not a.skip_dvc and not (Path(a.dvc_venv) / "bin" / "dvc").exists():
        print(f"installing DVC into {a.dvc_venv} ...", flush=True)
        run([sys.executable, "-m", "venv", a.dvc_venv])
        run([str(Path(a.dvc_venv) / "bin" / "pip"), "install", "-q", "dvc"])
    print("generating trees ...", flush=True)
    gen_big(repos["big"] / "big")
    names = ("big",) if a.only_big else ("big", "small")
    if not a.only_big:
        gen_small(repos["small"] / "small", a.small_files)

    # Written-back before any timing: the kernel's flushing of the freshly
    # generated trees would otherwise land in whichever tool runs first.
    run(["sync"])
    dvcs = {name: None if a.skip_dvc else Dvc(work, a.dvc_venv, repos[name]) for name in names}
    results = []
    times = {name: {"podder": [], "podder-http": [], "cp": [], "dvc": [], "dvc+sync": []} for name in names}
    for k in range(a.reps):
        if k:
            p.stop()
            shutil.rmtree(work / f"podder-data-{k - 1}", ignore_errors=True)
            run(["sync"])
        p = Podder(work, f"podder-data-{k}")
        for name in names:
            path = repos[name] / name
            p("data", "create", name)
            warm(path)
            # --rehash: every timed first upload hashes the whole tree, as on a
            # machine that never uploaded it (the stat cache of the run before
            # would spare the hashing).
            t_p, sent = p.upload(name, path, rehash=True)
            t = times[name]
            if name == "big":
                # The same tree over HTTP, as from another machine, into a
                # dataset of its own (on a store that already holds its
                # chunks, so it is redone after a GC).
                p("data", "delete", name, "--yes")
                p("admin", "gc")
                p("data", "create", f"{name}-http")
                warm(path)
                t["podder-http"].append(p.upload(f"{name}-http", path, over_http=True, rehash=True)[0])
                p("data", "delete", f"{name}-http", "--yes")
                p("admin", "gc")
                p("data", "create", name)
                p.upload(name, path)
            warm(path)
            copy = work / f"cp-{name}-1"
            shutil.rmtree(copy, ignore_errors=True)
            t_cp = timed(lambda: run(["cp", "-r", str(path), str(copy)]))
            t["podder"].append(t_p)
            t["cp"].append(t_cp)
            dvc = dvcs[name]
            if dvc:
                dvc.forget(name)
                warm(path)
                t["dvc"].append(dvc.add_push(name))
                # What DVC's numbers leave out: its writes are still in the
                # page cache. podder's are on disk when its upload returns
                # (direct writes, flushed at commit); this is DVC's time to
                # the same point, for a like-for-like reading (the ratios
                # and targets use DVC's time as a user sees it, above).
                t["dvc+sync"].append(t["dvc"][-1] + timed(lambda: run(["sync"])))
            if k == a.reps - 1:
                t_again, sent_again = p.upload(name, path)
                med = {tool: statistics.median(v) if v else None for tool, v in t.items()}
                results.append((f"({'a' if name == 'big' else 'b'}) {name}", tree_bytes(path), med["podder"], sent,
                                med["cp"], med["dvc"], t_again, sent_again))
                if med["podder-http"]:
                    results.append((f"(a) {name} over HTTP", tree_bytes(path), med["podder-http"], tree_bytes(path),
                                    med["cp"], med["dvc"], None, None))
    for name in names:
        print(f"{name}: " + "; ".join(f"{tool} " + " ".join(f"{x:.2f}" for x in v) + " s"
                                        for tool, v in times[name].items() if v), flush=True)
        t = times[name]
        if t["dvc+sync"]:
            durable, mine = statistics.median(t["dvc+sync"]), statistics.median(t["podder"])
            print(f"{name}: DVC until its writes are on disk (sync after push): {durable:.2f} s, "
                  f"{durable / mine:.1f}x podder (whose upload returns with its writes on disk)", flush=True)

    changed_big = change_big(repos["big"] / "big")
    changed_small = 0 if a.only_big else change_small(repos["small"] / "small")
    for name in names:
        path = repos[name] / name
        size = tree_bytes(path)
        warm(path)
        t_p, sent = p.upload(name, path)
        warm(path)
        t_cp = timed(lambda: run(["cp", "-r", str(path), str(work / f"cp-{name}-2")]))
        warm(path)
        t_dvc = dvcs[name].add_push(name) if dvcs[name] else None
        results.append((f"(c) {name} 1% changed", size, t_p, sent, t_cp, t_dvc, None, None))

    print()
    print(f"{'case':<22} {'size':>9} {'podder':>8} {'GB/s':>6} {'sent':>8} {'cp -r':>7} {'dvc':>8} "
          f"{'dvc/podder':>10} {'cp/podder':>9} {'unchanged again':>16}")
    for case, size, t_p, sent, t_cp, t_dvc, t_again, sent_again in results:
        dvc_s = f"{t_dvc:7.2f}s" if t_dvc else "      -"
        again = f"{t_again:.2f}s/{sent_again}B" if t_again is not None else "-"
        print(f"{case:<22} {size / MiB:8.0f}M {t_p:7.2f}s {size / t_p / 1e9:6.2f} {100 * sent / size:7.2f}% "
              f"{t_cp:6.2f}s {dvc_s} {fmt_ratio(t_dvc or 0, t_p):>10} {fmt_ratio(t_cp, t_p):>9} {again:>16}")
    print(f"(changed: {changed_big / MiB:.0f} MiB of the big tree in place; {changed_small} small files rewritten)")

    if not a.skip_10g:
        ten = work / "ten"
        ten.mkdir()
        for i in range(10):
            with open(ten / f"part-{i}.bin", "wb") as f:
                f.truncate(1 << 30)
        p("data", "create", "ten")
        t_up, _ = p.upload("ten", ten)
        code = work / "code"
        code.mkdir()
        p("init", "bench", cwd=code)
        (code / "main.py").write_text("print(1)\n")
        t_first = timed(lambda: job_start_ms(p, code, "ten:/d", 1))
        with_mount, without = [], []
        for _ in range(5):
            with_mount += job_start_ms(p, code, "ten:/d", 4)
            without += job_start_ms(p, code, None, 4)
        m_with, m_without = statistics.median(with_mount), statistics.median(without)
        print()
        print(f"(d) 10 GiB dataset (sparse zeros): upload {t_up:.1f}s; first job (materializes it) {t_first:.1f}s")
        print(f"    submit->running p50 with the cached dataset mounted {m_with:.1f} ms, without {m_without:.1f} ms: "
              f"adds {m_with - m_without:.1f} ms (target < 50 ms)")
    p.stop()
    shutil.rmtree(old, ignore_errors=True)


if __name__ == "__main__":
    main()
