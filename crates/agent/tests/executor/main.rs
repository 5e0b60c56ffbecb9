//! The executor alone, without a server: sandbox layout, logs, stop,
//! timeout, exit codes, and the unsandboxed mode.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use podder_agent::executor::{self, Ending, JobPlan};
use podder_agent::sandbox::{Sandbox, UNSANDBOXED_WARNING};
use podder_agent::signals::group_members;
use podder_agent::{LogSink, SandboxMode};
use podder_core::api::{LogLine, Stream};
use tokio::sync::mpsc::Receiver;

/// bubblewrap, when this machine has a working one.
async fn bwrap() -> Option<Sandbox> {
    match Sandbox::resolve(SandboxMode::Bubblewrap).await {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("skipping the bubblewrap part: {e}");
            None
        }
    }
}

fn plan(dir: &Path, script: &str, sandbox: Sandbox) -> JobPlan {
    let (code, output) = (dir.join("code"), dir.join("output"));
    std::fs::create_dir_all(&code).unwrap();
    std::fs::create_dir_all(&output).unwrap();
    let mut p = JobPlan::new(script.into(), code, output, sandbox);
    p.env = vec![("PODDER_JOB".into(), "alice/mnist#1".into())];
    p.stop_grace = Duration::from_secs(5);
    p
}

/// A directory the sandbox shows (under `/opt`), where the test can write:
/// `PODDER_TEST_VISIBLE_DIR` when set (the unprivileged run of CI makes
/// one), else `/opt` itself.
fn visible_dir() -> PathBuf {
    let d = std::env::var_os("PODDER_TEST_VISIBLE_DIR").map(PathBuf::from).unwrap_or_else(|| "/opt".into());
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The native sandbox (it must work on every machine the tests run on).
async fn native() -> Sandbox {
    Sandbox::resolve(SandboxMode::Native).await.expect("the native sandbox works here")
}

/// The native sandbox, and bubblewrap when this machine has it.
async fn sandboxes() -> Vec<Sandbox> {
    let mut v = vec![native().await];
    v.extend(bwrap().await);
    v
}

/// Runs a plan to its end; returns how it ended and every log line.
async fn run(plan: JobPlan) -> (executor::ExitStatusInfo, Vec<LogLine>) {
    let (sink, mut rx) = LogSink::new(0);
    let running = executor::spawn(plan, sink.clone()).await.unwrap();
    let info = running.wait().await;
    sink.close().await;
    (info, drain(&mut rx).await)
}

async fn drain(rx: &mut Receiver<LogLine>) -> Vec<LogLine> {
    let mut out = Vec::new();
    while let Some(l) = rx.recv().await {
        out.push(l);
    }
    out
}

fn texts(lines: &[LogLine], stream: Stream) -> Vec<&str> {
    lines.iter().filter(|l| l.stream == stream).map(|l| l.text.as_str()).collect()
}

/// Reads lines until one with this text comes.
async fn wait_line(rx: &mut Receiver<LogLine>, text: &str) {
    let until = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(l) = rx.recv().await {
            if l.text == text {
                return;
            }
        }
        panic!("the log ended before '{text}'");
    });
    until.await.expect("the line came in time");
}

#[tokio::test]
async fn layout_and_isolation() {
    for sandbox in sandboxes().await {
        layout_and_isolation_in(sandbox).await;
    }
}

async fn layout_and_isolation_in(sandbox: Sandbox) {
    let t = tempfile::tempdir().unwrap();
    // Places inside a directory the sandbox shows (/opt), to be hidden.
    let opt = visible_dir();
    let opt = opt.as_path();
    let secret = tempfile::tempdir_in(opt).unwrap();
    std::fs::write(secret.path().join("key"), "s3cret").unwrap();
    let work = tempfile::tempdir_in(opt).unwrap();
    std::fs::write(work.path().join("other-job"), "x").unwrap();
    let tree = t.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("data.txt"), "input data").unwrap();

    let mut p = plan(t.path(), "", sandbox);
    std::fs::write(p.code_dir.join("hello.txt"), "hello from code").unwrap();
    p.inputs = vec![(tree.clone(), "/data/in".parse().unwrap())];
    p.hide = vec![secret.path().to_path_buf(), work.path().to_path_buf()];
    let (secret_s, work_s) = (secret.path().display(), work.path().display());
    p.script = format!(
        "set -e\n\
         echo cwd=$(pwd)\n\
         cat /code/hello.txt; echo\n\
         echo written > /output/result.txt\n\
         cat $PODDER_MOUNT_DATA_IN/data.txt; echo\n\
         if touch /data/in/new 2>/dev/null; then echo input-writable; else echo input-read-only; fi\n\
         if echo x >> /data/in/data.txt 2>/dev/null; then echo input-writable; else echo input-read-only; fi\n\
         if [ -e {secret_s}/key ]; then echo secret-visible; else echo secret-hidden; fi\n\
         if [ -e {work_s}/other-job ]; then echo work-visible; else echo work-hidden; fi\n\
         for d in /root /home /work /var {tree}; do if [ -e $d ]; then echo visible:$d; fi; done\n\
         echo env:$PODDER_CODE:$PODDER_OUTPUT:$PODDER_MOUNT_DATA_IN:$HOME:$PODDER_JOB\n\
         env | grep -c CARGO || true\n\
         grep CapEff /proc/self/status\n\
         if mount -o remount,rw /data/in 2>/dev/null; then echo remounted; else echo no-remount; fi\n",
        tree = tree.display()
    );
    let (info, lines) = run(p.clone()).await;
    let out = texts(&lines, Stream::Stdout);
    assert_eq!(info.code, 0, "{:?}: {lines:#?}", p.sandbox);
    assert_eq!(
        out,
        [
            "cwd=/code",
            "hello from code",
            "input data",
            "input-read-only",
            "input-read-only",
            "secret-hidden",
            "work-hidden",
            "env:/code:/output:/data/in:/tmp:alice/mnist#1",
            "0",
            "CapEff:\t0000000000000000",
            "no-remount",
        ],
        "{lines:#?}"
    );
    assert_eq!(std::fs::read_to_string(p.output_dir.join("result.txt")).unwrap(), "written\n");
    assert_eq!(std::fs::read_to_string(tree.join("data.txt")).unwrap(), "input data");
    assert!(!tree.join("new").exists());
    assert!(texts(&lines, Stream::System).is_empty(), "no unsandboxed warning: {lines:#?}");
}

#[tokio::test]
async fn lines_are_numbered_in_order() {
    let t = tempfile::tempdir().unwrap();
    let script = "for i in 1 2 3; do echo out$i; done; echo err1 >&2; echo err2 >&2; printf 'last'";
    let (info, lines) = run(plan(t.path(), script, Sandbox::None)).await;
    assert_eq!(info.code, 0);
    assert_eq!(lines.iter().map(|l| l.seq).collect::<Vec<_>>(), (0..lines.len() as u64).collect::<Vec<_>>());
    assert_eq!(texts(&lines, Stream::Stdout), ["out1", "out2", "out3", "last"]);
    assert_eq!(texts(&lines, Stream::Stderr), ["err1", "err2"]);
    assert!(lines.iter().all(|l| l.ts > 1_600_000_000_000));
}

#[tokio::test]
async fn exit_codes() {
    let t = tempfile::tempdir().unwrap();
    let (info, _) = run(plan(t.path(), "exit 3", Sandbox::None)).await;
    assert_eq!((info.code, info.ending), (3, Ending::Exited));
    let (info, _) = run(plan(t.path(), "set -e\nfalse\necho not reached", Sandbox::None)).await;
    assert_eq!(info.code, 1);
    let (info, _) = run(plan(t.path(), "kill -9 $$", Sandbox::None)).await;
    assert_eq!((info.code, info.signal), (137, Some(9)));
    for sb in sandboxes().await {
        let (info, lines) = run(plan(t.path(), "exit 3", sb.clone())).await;
        assert_eq!((info.code, info.ending), (3, Ending::Exited), "{lines:#?}");
        let (info, _) = run(plan(t.path(), "kill -9 $$", sb)).await;
        assert_eq!(info.code, 137);
    }
}

/// Starts `script`, waits for its "started" line and for `min` processes in
/// its group, stops it, and checks that nothing of it survives.
async fn stop_tree(
    sandbox: Sandbox,
    script: &str,
    grace: Duration,
    min: usize,
) -> (executor::ExitStatusInfo, Vec<LogLine>) {
    let t = tempfile::tempdir().unwrap();
    let mut p = plan(t.path(), script, sandbox);
    p.stop_grace = grace;
    let (sink, mut rx) = LogSink::new(0);
    let running = executor::spawn(p, sink.clone()).await.unwrap();
    wait_line(&mut rx, "started").await;
    let pgid = running.pid();
    let mut members = group_members(pgid);
    let until = Instant::now() + Duration::from_secs(10);
    while members.len() < min && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
        members = group_members(pgid);
    }
    assert!(members.len() >= min, "{members:?}");
    let t0 = Instant::now();
    running.stop();
    let info = running.wait().await;
    assert!(t0.elapsed() < grace + Duration::from_secs(3), "took {:?}", t0.elapsed());
    assert_eq!(info.ending, Ending::Stopped);
    assert!(group_members(pgid).is_empty(), "survivors: {:?}", group_members(pgid));
    for pid in members {
        assert!(!Path::new(&format!("/proc/{pid}")).exists() || !group_members(pgid).contains(&pid));
    }
    sink.close().await;
    let lines = drain(&mut rx).await;
    (info, lines)
}

#[tokio::test]
async fn stop_kills_the_whole_tree() {
    let script = "echo started; sleep 1000 & sleep 1000; wait";
    // sh and two sleeps.
    let (info, lines) = stop_tree(Sandbox::None, script, Duration::from_secs(5), 3).await;
    assert_eq!(info.signal, Some(15), "{lines:#?}");
    assert!(texts(&lines, Stream::System).iter().any(|l| l.contains("SIGTERM")));
    // The native init, sh and two sleeps.
    let (info, lines) = stop_tree(native().await, script, Duration::from_secs(5), 4).await;
    assert_eq!(info.code, 128 + 15, "{lines:#?}");
    if let Some(sb) = bwrap().await {
        // Two bwrap processes, sh and two sleeps.
        let (info, lines) = stop_tree(sb, script, Duration::from_secs(5), 5).await;
        assert_eq!(info.code, 128 + 15, "{lines:#?}");
    }
}

#[tokio::test]
async fn stop_escalates_to_sigkill() {
    let script = "trap '' TERM; echo started; sleep 1000 & sleep 1000; wait";
    let (info, lines) = stop_tree(Sandbox::None, script, Duration::from_millis(500), 3).await;
    assert_eq!(info.code, 137, "{lines:#?}");
    assert!(texts(&lines, Stream::System).iter().any(|l| l.contains("SIGKILL")));
    let (info, lines) = stop_tree(native().await, script, Duration::from_millis(500), 4).await;
    assert_eq!(info.code, 137, "{lines:#?}");
    if let Some(sb) = bwrap().await {
        let (info, lines) = stop_tree(sb, script, Duration::from_millis(500), 5).await;
        assert_eq!(info.code, 137, "{lines:#?}");
    }
}

#[tokio::test]
async fn sigterm_reaches_the_job_inside_the_sandbox() {
    let script = "trap 'echo got term; exit 5' TERM; echo started; sleep 1000 & wait";
    for (sb, min) in [(Some(native().await), 3), (bwrap().await, 4)] {
        let Some(sb) = sb else { continue };
        let (info, lines) = stop_tree(sb, script, Duration::from_secs(5), min).await;
        assert_eq!(info.code, 5, "{lines:#?}");
        assert!(texts(&lines, Stream::Stdout).contains(&"got term"));
    }
}

#[tokio::test]
async fn timeout_fails_the_job() {
    let t = tempfile::tempdir().unwrap();
    let mut p = plan(t.path(), "echo started; sleep 1000", Sandbox::None);
    p.timeout = Some(Duration::from_secs(1));
    let t0 = Instant::now();
    let (info, lines) = run(p).await;
    assert_eq!(info.ending, Ending::TimedOut);
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(texts(&lines, Stream::System).iter().any(|l| l.contains("timed out after 1 s")), "{lines:#?}");
}

#[tokio::test]
async fn unsandboxed_sets_variables_and_warns() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let mut p = plan(t.path(), "", Sandbox::None);
    p.inputs = vec![(tree.clone(), "/data/mnist".parse().unwrap())];
    p.env.push(("PODDER_PARAM_LR".into(), "0.1".into()));
    p.script = "echo cwd=$(pwd)\necho $PODDER_CODE\necho $PODDER_OUTPUT\necho $PODDER_MOUNT_DATA_MNIST\n\
                echo $PODDER_PARAM_LR:$HOME:$LANG:$PYTHONUNBUFFERED:$PATH\n"
        .into();
    let (info, lines) = run(p.clone()).await;
    assert_eq!(info.code, 0);
    assert_eq!(lines[0].stream, Stream::System);
    assert_eq!(lines[0].text, UNSANDBOXED_WARNING);
    assert_eq!(lines[0].seq, 0);
    let code: PathBuf = std::path::absolute(&p.code_dir).unwrap();
    let out = texts(&lines, Stream::Stdout);
    assert_eq!(
        out,
        [
            format!("cwd={}", code.display()).as_str(),
            &code.display().to_string(),
            &p.output_dir.display().to_string(),
            &tree.display().to_string(),
            "0.1:/tmp:C.UTF-8:1:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ]
    );
}

/// The parent-death signal: when the thread that spawned the job ends (as
/// when the agent is killed), the job is killed.
#[test]
fn job_dies_with_its_parent() {
    let t = tempfile::tempdir().unwrap();
    let p = plan(t.path(), "exec sleep 1000", Sandbox::None);
    let pid = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (sink, _rx) = LogSink::new(0);
            let running = executor::spawn(p, sink).await.unwrap();
            let pid = running.pid();
            std::mem::forget(running);
            pid
        })
    })
    .join()
    .unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while !group_members(pid).is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(group_members(pid).is_empty(), "the job outlived its parent thread");
}
mod attacks;
