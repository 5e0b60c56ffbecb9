#!/usr/bin/env python3
"""Pipeline scheduling overhead (issue 5), side by side with Apache Airflow.

1. 40 sequential trivial steps (`true`), from submit to finished:
   podder (`podder up`, process executor with bubblewrap, release build) and
   Apache Airflow 2.10 in standalone mode (SQLite, SequentialExecutor, 40
   sequential BashOperator tasks running `true`), in the same run; prints
   both times and the ratio. Target for podder: under 0.5 s in total.
2. A 1,000-step wide DAG on podder (1,000 independent `true` steps, then one
   step after all of them): steps per second.

Airflow comes from PyPI in a throwaway venv (default /tmp/airflow-venv,
made when missing: `pip install apache-airflow==2.10.5`).

Run: python3 bench/pipelines.py [--skip-airflow] [--skip-wide] [--slots N]
"""

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PODDER = ROOT / "target" / "release" / "podder"


def run(cmd, env=None, cwd=None):
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"command failed: {cmd}\n{out.stdout}\n{out.stderr}")
    return out.stdout


class Podder:
    def __init__(self, work, slots):
        self.home = work / "home"
        self.home.mkdir(parents=True)
        self.env = dict(os.environ, HOME=str(self.home), PODDER_LOG="warn")
        self.env.pop("PODDER_SERVER", None)
        self.env.pop("PODDER_TOKEN", None)
        self.proc = subprocess.Popen(
            [str(PODDER), "up", "--listen", "127.0.0.1:18643", "--data-dir", str(work / "data"), "--slots", str(slots)],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for line in self.proc.stdout:
            if line.startswith("client config"):
                break
        self.dir = work / "proj"
        self.dir.mkdir()
        self("init", "bench")

    def __call__(self, *args):
        return run([str(PODDER), *args], env=self.env, cwd=self.dir)

    def pipeline(self, name, steps):
        """steps: list of (name, needs)."""
        lines = [f"name: {name}", "steps:"]
        for s, needs in steps:
            lines.append(f"  - name: {s}")
            lines.append("    command: [\"true\"]")
            if needs:
                lines.append(f"    needs: [{', '.join(needs)}]")
        (self.dir / f"{name}.yaml").write_text("\n".join(lines) + "\n")
        self("pipeline", "apply", f"{name}.yaml")

    def run_pipeline(self, name):
        t = time.perf_counter()
        out = self("pipeline", "run", name, "--follow", "--json")
        wall = time.perf_counter() - t
        r = json.loads(out)
        assert r["state"] == "succeeded", r["state"]
        return (r["finished_at"] - r["created_at"]) / 1000.0, wall, r

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


AIRFLOW_DAG = '''
import pendulum
from airflow import DAG
from airflow.operators.bash import BashOperator

with DAG("seq40", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), schedule=None, catchup=False,
         is_paused_upon_creation=False) as dag:
    prev = None
    for i in range(40):
        t = BashOperator(task_id=f"t{i:02d}", bash_command="true")
        if prev is not None:
            prev >> t
        prev = t
'''


def airflow_seq40(work, venv):
    if not (venv / "bin" / "airflow").exists():
        print(f"installing apache-airflow into {venv} ...", flush=True)
        run([sys.executable, "-m", "venv", str(venv)])
        run([str(venv / "bin" / "pip"), "install", "-q", "apache-airflow==2.10.5"])
    home = work / "airflow"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "seq40.py").write_text(AIRFLOW_DAG)
    env = dict(os.environ, AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"), AIRFLOW__WEBSERVER__WEB_SERVER_PORT="18644",
               AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL="5", PATH=f"{venv}/bin:{os.environ['PATH']}")
    af = str(venv / "bin" / "airflow")
    proc = subprocess.Popen([af, "standalone"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while True:
            out = subprocess.run([af, "dags", "list", "-o", "json"], env=env, capture_output=True, text=True)
            if out.returncode == 0 and "seq40" in out.stdout:
                break
            if time.time() > deadline:
                sys.exit("airflow never listed the DAG")
            time.sleep(2)
        # The DAG is triggerable once the scheduler's DAG processor has put it in the database.
        while True:
            t = time.perf_counter()
            out = subprocess.run([af, "dags", "trigger", "seq40"], env=env, capture_output=True, text=True)
            if out.returncode == 0:
                break
            if time.time() > deadline:
                sys.exit(f"airflow never accepted the trigger: {out.stderr[-2000:]}")
            time.sleep(2)
        db = home / "airflow.db"
        while True:
            # The run's record, read from Airflow's own SQLite database.
            con = sqlite3.connect(db, timeout=30)
            row = con.execute("SELECT state, start_date, end_date FROM dag_run WHERE dag_id = 'seq40' "
                              "ORDER BY id DESC LIMIT 1").fetchone()
            con.close()
            if row and row[0] in ("success", "failed"):
                wall = time.perf_counter() - t
                r = {"state": row[0], "start_date": row[1], "end_date": row[2]}
                break
            if time.perf_counter() - t > 1800:
                sys.exit("airflow run did not finish in 30 min")
            time.sleep(0.5)
        assert r["state"] == "success", r
        from datetime import datetime
        start = datetime.fromisoformat(r["start_date"])
        end = datetime.fromisoformat(r["end_date"])
        return (end - start).total_seconds(), wall
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-airflow", action="store_true")
    ap.add_argument("--skip-podder", action="store_true")
    ap.add_argument("--skip-wide", action="store_true")
    ap.add_argument("--slots", type=int, default=4, help="podder agent slots for the wide DAG")
    ap.add_argument("--airflow-venv", default="/tmp/airflow-venv")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="podder-bench-pipelines-"))
    results = {}
    try:
        if not a.skip_podder:
            p = Podder(work / "podder", a.slots)
            try:
                p.pipeline("seq40", [(f"s{i:02d}", [f"s{i - 1:02d}"] if i else []) for i in range(40)])
                p.run_pipeline("seq40")  # warm: venv-free, but caches the code tree on the agent
                times = [p.run_pipeline("seq40") for _ in range(3)]
                server_s = sorted(t[0] for t in times)[1]
                wall_s = sorted(t[1] for t in times)[1]
                results["podder_seq40"] = server_s
                print(f"40 sequential steps, podder:  {server_s:.3f} s submit->finished (server clock, median of 3), "
                      f"{wall_s:.3f} s CLI wall; target < 0.5 s: {'met' if server_s < 0.5 else 'MISSED'}", flush=True)
                if not a.skip_wide:
                    steps = [(f"w{i:04d}", []) for i in range(1000)] + [("join", [f"w{i:04d}" for i in range(1000)])]
                    p.pipeline("wide", steps)
                    secs, wall, r = p.run_pipeline("wide")
                    n = len(r["steps"])
                    print(f"wide DAG, podder: {n} steps in {secs:.2f} s = {n / secs:.0f} steps/s "
                          f"({a.slots} agent slots)", flush=True)
            finally:
                p.stop()
        if not a.skip_airflow:
            secs, wall = airflow_seq40(work, Path(a.airflow_venv))
            results["airflow_seq40"] = secs
            print(f"40 sequential steps, Airflow 2.10.5 standalone: {secs:.1f} s (run start->end), "
                  f"{wall:.1f} s from trigger", flush=True)
        if "podder_seq40" in results and "airflow_seq40" in results:
            print(f"ratio Airflow / podder: {results['airflow_seq40'] / results['podder_seq40']:.0f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
