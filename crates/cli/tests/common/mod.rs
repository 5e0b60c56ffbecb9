//! Test harness: a real `podder server` on port 0 with a temporary data
//! directory, real `podder agent` processes, and the real CLI binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_podder");
/// Local images made by scripts/test-images.sh.
pub const PYTHON_IMAGE: &str = "podder-test/python:3.11";
pub const BUSYBOX_IMAGE: &str = "podder-test/busybox";

/// Runs `docker ARGS`; returns stdout (asserting success).
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Ids of the containers labelled with this job.
pub fn containers_of(job: &str) -> Vec<String> {
    let f = format!("label=podder.job={job}");
    docker(&["ps", "-aq", "--filter", &f]).lines().map(str::to_string).collect()
}

pub struct Cluster {
    pub tmp: tempfile::TempDir,
    pub url: String,
    pub token: String,
    pub server: Child,
    pub agents: Vec<(String, Child)>,
}

impl Cluster {
    /// A server with a short lease timeout (seconds), and no agent yet.
    pub fn server_only(lease_secs: u64) -> Cluster {
        Cluster::server_only_with(lease_secs, &[])
    }

    /// [`Cluster::server_only`] with more `podder server` flags.
    pub fn server_only_with(lease_secs: u64, extra: &[&str]) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("home")).unwrap();
        let mut server = Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--lease-timeout", &lease_secs.to_string(), "--admin", "alice"])
            .args(extra)
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .env("HOME", tmp.path().join("home"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
        let (mut url, mut token) = (String::new(), String::new());
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(u) = line.strip_prefix("podder server listening on ") {
                url = u.trim().to_string();
            }
            if let Some(t) = line.strip_prefix("admin token: ") {
                token = t.trim().to_string();
                break;
            }
        }
        assert!(!url.is_empty() && !token.is_empty(), "server did not start");
        std::thread::spawn(move || for _ in lines {});
        Cluster { tmp, url, token, server, agents: Vec::new() }
    }

    /// SIGKILLs the server and starts it again on the same address and
    /// data directory (agents reconnect by themselves).
    pub fn restart_server_after_sigkill(&mut self, lease_secs: u64) {
        self.server.kill().unwrap();
        self.server.wait().unwrap();
        let listen = self.url.trim_start_matches("http://").to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut server = Command::new(BIN)
                .args(["server", "--listen", &listen, "--lease-timeout", &lease_secs.to_string(), "--admin", "alice"])
                .arg("--data-dir")
                .arg(self.tmp.path().join("data"))
                .env("HOME", self.tmp.path().join("home"))
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
            let up = lines.by_ref().map_while(Result::ok).any(|l| l.starts_with("podder server listening on "));
            if up {
                std::thread::spawn(move || for _ in lines {});
                self.server = server;
                return;
            }
            let _ = server.wait();
            assert!(Instant::now() < deadline, "the server did not start again on {listen}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn start(lease_secs: u64) -> Cluster {
        let mut c = Cluster::server_only(lease_secs);
        c.add_agent("a1");
        c
    }

    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    pub fn add_agent(&mut self, name: &str) {
        self.add_agent_with(name, &["--slots", "2"]);
    }

    /// An agent with more `podder agent` flags (e.g. `--executor docker`,
    /// `--gpus 0,1`, `--queue q`); returns once the server lists it.
    pub fn add_agent_with(&mut self, name: &str, extra: &[&str]) {
        self.spawn_agent(name, extra);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.podder(self.tmp.path(), &["agents", "--json"]);
            if out.status.success() {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                if v.as_array().unwrap().iter().any(|a| a["name"] == name) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "agent {name} never registered");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts an agent process without waiting for it to register.
    pub fn spawn_agent(&mut self, name: &str, extra: &[&str]) {
        let child = Command::new(BIN)
            .args(["agent", "--server", &self.url, "--token", &self.token, "--name", name, "--stop-grace", "2"])
            .args(extra)
            .arg("--work-dir")
            .arg(self.tmp.path().join(format!("agent-{name}")))
            .env("HOME", self.tmp.path().join("home"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.agents.push((name.to_string(), child));
    }

    pub fn kill_agent(&mut self, name: &str) {
        let i = self.agents.iter().position(|(n, _)| n == name).unwrap();
        let (_, mut child) = self.agents.remove(i);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    /// A `podder` command as the admin user, run in `dir`.
    pub fn cmd(&self, dir: &Path) -> Command {
        let mut c = Command::new(BIN);
        c.current_dir(dir)
            .env("HOME", self.tmp.path().join("home"))
            .env("PODDER_SERVER", &self.url)
            .env("PODDER_TOKEN", &self.token)
            .env_remove("PODDER_LOG");
        c
    }

    pub fn podder(&self, dir: &Path, args: &[&str]) -> Output {
        self.cmd(dir).args(args).output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.podder(dir, args);
        assert!(
            out.status.success(),
            "podder {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A code directory linked to project `name`.
    pub fn project_dir(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join(format!("code-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        self.ok(&dir, &["init", name]);
        dir
    }

    pub fn job_json(&self, dir: &Path, job: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(dir, &["status", job, "--json"])).unwrap()
    }

    /// Polls the job until `pred` holds (or panics after `secs`).
    pub fn wait_job(
        &self,
        dir: &Path,
        job: &str,
        secs: u64,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let j = self.job_json(dir, job);
            if pred(&j) {
                return j;
            }
            assert!(Instant::now() < deadline, "job {job} never reached the expected state: {j}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Points the stock `python-3.11` environment at the local test image
    /// (no registry is reachable), with a plain venv for process agents.
    pub fn local_python_env(&self) {
        let reqs = self.tmp.path().join("empty-requirements.txt");
        std::fs::write(&reqs, "").unwrap();
        let r = reqs.to_str().unwrap();
        let args =
            ["env", "create", "python-3.11", "--image", PYTHON_IMAGE, "--requirements", r, "--stock", "--replace"];
        self.ok(self.tmp.path(), &args);
    }

    pub fn stats(&self) -> serde_json::Value {
        let out = Command::new("curl")
            .args([
                "-sf",
                "-H",
                &format!("Authorization: Bearer {}", self.token),
                &format!("{}/api/v1/admin/stats", self.url),
            ])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, a) in &mut self.agents {
            let _ = a.kill();
            let _ = a.wait();
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Pids of processes whose command line contains `marker`.
pub fn pids_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd).replace('\0', " ").contains(marker)
        {
            out.push(pid);
        }
    }
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
