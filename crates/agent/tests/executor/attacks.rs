//! Jobs tried as an attacker would, on the native sandbox: what a job must
//! not get. CI runs this binary twice: as root, and as `nobody`, where a
//! user namespace is the only way in.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use podder_agent::executor::{JobServer, Limits};

use super::*;

fn stdout_of(lines: &[LogLine]) -> Vec<String> {
    texts(lines, Stream::Stdout).into_iter().map(str::to_string).collect()
}

#[tokio::test]
async fn no_host_secrets_no_root_and_a_read_only_system() {
    let t = tempfile::tempdir().unwrap();
    let script = "id -u\n\
         if cat /etc/shadow 2>/dev/null | grep -q root; then echo shadow-read; else echo shadow-denied; fi\n\
         for d in /root /home /var /srv /mnt /media /boot; do if [ -e $d ]; then echo visible:$d; fi; done\n\
         for f in /usr/x /etc/x /x /bin/x /opt/x /proc/sys/kernel/x; do if touch $f 2>/dev/null; then echo wrote:$f; fi; done\n\
         if echo '|/tmp/x' > /proc/sys/kernel/core_pattern 2>/dev/null; then echo sysctl-written; fi\n\
         grep CapEff /proc/self/status\n\
         grep NoNewPrivs /proc/self/status\n\
         echo done";
    let (info, lines) = run(plan(t.path(), script, native().await)).await;
    assert_eq!(info.code, 0, "{lines:#?}");
    let out = stdout_of(&lines);
    assert_ne!(out[0], "0", "the job runs as root: {lines:#?}");
    assert_eq!(out[1..], ["shadow-denied", "CapEff:\t0000000000000000", "NoNewPrivs:\t1", "done"], "{lines:#?}");
}

/// The server's data directory, the client config that holds the token,
/// another job's workspace, and the agent's input cache: placed both where
/// the sandbox shows the host (under `/opt`, hidden by the plan) and where
/// it shows nothing (the host's `/tmp`).
#[tokio::test]
async fn a_job_reaches_no_token_no_other_job_and_cannot_change_its_inputs() {
    let visible = tempfile::tempdir_in(visible_dir()).unwrap();
    let invisible = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    let mut hide = Vec::new();
    let mut inputs = Vec::new();
    for (i, base) in [visible.path(), invisible.path()].into_iter().enumerate() {
        let (data, home, work) = (base.join("data"), base.join("home"), base.join("work"));
        let files = [
            data.join("meta.db"),
            home.join(".config/podder/config.toml"),
            work.join("jobs/lease-2/code/secret.py"),
            work.join("cache/trees/abc/model.txt"),
        ];
        for f in &files {
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, "token = \"pdr_0123\"\n").unwrap();
        }
        paths.extend(files[..3].iter().cloned());
        hide.extend([data, home, work.clone()]);
        inputs.push((work.join("cache/trees/abc"), format!("/data/in{i}").parse().unwrap()));
    }
    let t = tempfile::tempdir().unwrap();
    let mut p = plan(t.path(), "", native().await);
    p.hide = hide;
    p.inputs = inputs;
    let mut script = String::new();
    for f in &paths {
        script.push_str(&format!(
            "if cat {f} 2>/dev/null; then echo read:{f}; fi\n",
            f = std::fs::canonicalize(f).unwrap().display()
        ));
        script.push_str(&format!("if cat {} 2>/dev/null; then echo read:{0}; fi\n", f.display()));
    }
    for i in 0..2 {
        script.push_str(&format!(
            "cat /data/in{i}/model.txt\n\
             if echo changed > /data/in{i}/model.txt 2>/dev/null; then echo wrote-input; fi\n\
             if touch /data/in{i}/new 2>/dev/null; then echo added-to-input; fi\n\
             if chmod 777 /data/in{i}/model.txt 2>/dev/null; then echo chmod-input; fi\n\
             if rm /data/in{i}/model.txt 2>/dev/null; then echo removed-input; fi\n"
        ));
    }
    script.push_str("env | grep -c pdr_ || true\n");
    p.script = script;
    let (info, lines) = run(p).await;
    assert_eq!(info.code, 0, "{lines:#?}");
    assert_eq!(stdout_of(&lines), ["token = \"pdr_0123\"", "token = \"pdr_0123\"", "0"], "{lines:#?}");
    for base in [visible.path(), invisible.path()] {
        let tree = base.join("work/cache/trees/abc");
        assert_eq!(std::fs::read_to_string(tree.join("model.txt")).unwrap(), "token = \"pdr_0123\"\n");
        assert!(!tree.join("new").exists());
    }
}

/// A stand-in for the job's server on the host's loopback: answers every
/// request with its request line, and whether it carried a token.
fn fake_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut first = String::new();
            r.read_line(&mut first).unwrap();
            let mut auth = "none";
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
                if h.to_ascii_lowercase().starts_with("authorization") {
                    auth = "some";
                }
            }
            let body = format!("{} auth:{auth}", first.trim());
            let mut c = conn;
            let _ = write!(c, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
    port
}

#[tokio::test]
async fn no_network_is_loopback_and_the_jobs_own_server() {
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let other_port = other.local_addr().unwrap().port();
    let server_port = fake_server();
    let t = tempfile::tempdir().unwrap();
    let py = format!(
        r#"
import os, socket, urllib.request, urllib.error
try:
    socket.create_connection(('127.0.0.1', {other_port}), 2)
    print('other-reached')
except OSError:
    print('other-unreachable')
s = os.environ['PODDER_SERVER']
print(s)
print(urllib.request.urlopen(s + '/api/v1/jobs/alice/mnist/1/logs?after=3').read().decode())
for path in ['/api/v1/projects', '/api/v1/jobs/alice/mnist/2', '/api/v1/agent/lease']:
    try:
        urllib.request.urlopen(s + path)
        print('passed', path)
    except urllib.error.HTTPError as e:
        print(e.code)
"#
    );
    let script =
        format!("grep -c : /proc/net/dev\ngrep -o '^ *lo:' /proc/net/dev | tr -d ' '\npython3 - <<'EOF'{py}EOF\n");
    let mut p = plan(t.path(), &script, native().await);
    p.no_network = true;
    p.server = Some(JobServer {
        url: format!("http://127.0.0.1:{server_port}"),
        routes: vec!["/api/v1/jobs/alice/mnist/1".into()],
    });
    let (info, lines) = run(p).await;
    assert_eq!(info.code, 0, "{lines:#?}");
    assert_eq!(
        stdout_of(&lines),
        [
            "1", // one interface
            "lo:",
            "other-unreachable",
            &format!("http://127.0.0.1:{server_port}"),
            "GET /api/v1/jobs/alice/mnist/1/logs?after=3 HTTP/1.1 auth:none",
            "403",
            "403",
            "403",
        ],
        "{lines:#?}"
    );
    drop(other);
}

#[tokio::test]
async fn memory_and_cpus_are_limits_not_hints() {
    let script = "python3 -c 'b = bytearray(16 << 20); print(\"small ok\")'\n\
                  python3 -c 'b = bytearray(512 << 20); print(\"allocated 512 MiB\")' 2>&1 | grep -o -m1 MemoryError\n\
                  nproc";
    for sandbox in [native().await, Sandbox::None] {
        let t = tempfile::tempdir().unwrap();
        let mut p = plan(t.path(), script, sandbox.clone());
        p.limits = Limits { cpus: Some(1.0), memory_bytes: Some(64 << 20) };
        let (info, lines) = run(p).await;
        assert_eq!(info.code, 0, "{sandbox:?}: {lines:#?}");
        assert_eq!(stdout_of(&lines), ["small ok", "MemoryError", "1"], "{sandbox:?}: {lines:#?}");
        let system = texts(&lines, Stream::System);
        assert!(system.iter().any(|l| l.contains("memory 64 MiB per process")), "{lines:#?}");
        assert!(system.iter().any(|l| l.starts_with("limits:") && l.contains("CPU")), "{lines:#?}");
    }
}

/// The sandbox's init dies with the thread that started it (the agent's,
/// killed), and takes every process of the job with it, grandchildren
/// that left the job's process group included.
#[test]
fn a_native_job_and_its_children_die_with_the_agent() {
    let t = tempfile::tempdir().unwrap();
    let script = "setsid sleep 1000 & sleep 1000 & echo $$; exec sleep 1000";
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let sandbox = rt.block_on(native());
    let p = plan(t.path(), script, sandbox);
    let (pid, members, ns) = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (sink, mut rx) = LogSink::new(0);
            let running = executor::spawn(p, sink).await.unwrap();
            let pid = running.pid();
            let _ = rx.recv().await; // the job has started
            let until = Instant::now() + Duration::from_secs(5);
            while group_members(pid).len() < 3 && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            std::mem::forget(running);
            std::mem::forget(rx);
            let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
            (pid, group_members(pid), ns)
        })
    })
    .join()
    .unwrap();
    assert!(members.len() >= 3, "{members:?}");
    assert!(ns.is_some() && ns != std::fs::read_link("/proc/self/ns/pid").ok(), "{ns:?}");
    // Every process in the job's PID namespace, the setsid one included.
    let in_ns = || -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|p| ns.is_some() && std::fs::read_link(format!("/proc/{p}/ns/pid")).ok() == ns)
            .collect()
    };
    let until = Instant::now() + Duration::from_secs(5);
    while !(group_members(pid).is_empty() && in_ns().is_empty()) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(group_members(pid).is_empty(), "the job outlived its agent");
    assert!(in_ns().is_empty(), "a process of the job outlived its agent: {:?}", in_ns());
}
