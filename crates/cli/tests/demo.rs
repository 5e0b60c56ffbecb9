//! A newcomer's first commands on a fresh home directory: `podder demo`
//! (trains, evaluates, summarizes, says what to look at next), `podder demo
//! --keep` (whose printed commands work), and `podder up` in the foreground.
//! None of them may show the log: no tracing line, no warning.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary on a fresh home, with no client settings or log filter from
/// the environment that runs the tests.
fn podder(home: &Path) -> Command {
    let mut c = Command::new(common::BIN);
    c.env("HOME", home)
        .env("TMPDIR", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("PODDER_SERVER")
        .env_remove("PODDER_TOKEN")
        .env_remove("PODDER_CONFIG")
        .env_remove("PODDER_DATA_DIR")
        .env_remove("PODDER_LISTEN")
        .env_remove("PODDER_LOG")
        .env_remove("RUST_LOG");
    c
}

/// Fails on any line that looks like the log rather than the command's own
/// output: a tracing level, an ANSI escape, or a warning.
fn assert_no_log_lines(what: &str, text: &str) {
    for line in text.lines() {
        let looks_like_tracing = line.contains("\x1b[")
            || ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                .iter()
                .any(|level| line.split_whitespace().take(3).any(|word| word == *level));
        assert!(!looks_like_tracing, "{what} shows a log line: {line:?}\n{text}");
        assert!(!line.to_lowercase().contains("warning"), "{what} shows a warning: {line:?}\n{text}");
    }
}

/// Collects a child's stream on a thread.
fn collect(stream: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stream).read_to_string(&mut s);
        s
    })
}

/// Sends `signal` and waits (at most 30 s) for the process to exit.
fn stop(child: &mut Child, signal: &str) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pid {pid} did not stop within 30 s of {signal}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn demo_dirs_left(home: &Path) -> Vec<String> {
    std::fs::read_dir(home)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("podder-demo"))
        .collect()
}

#[test]
fn demo_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let out = podder(tmp.path()).arg("demo").output().unwrap();
    let so = String::from_utf8_lossy(&out.stdout);
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{so}\n{se}");
    assert!(so.contains("\"epoch\": 20"), "{so}");
    assert!(so.contains("test_acc"), "{so}");
    assert!(so.contains("demo/demo#1  succeeded"), "{so}");
    assert!(so.contains("demo/demo#2  succeeded"), "{so}");
    assert_no_log_lines("the demo's stdout", &so);
    assert_no_log_lines("the demo's stderr", &se);
    // What to do next: nothing that needs the server that has just gone;
    // the way to look at the jobs is `demo --keep` (its test is below).
    let next = so.split("== next").nth(1).unwrap_or_else(|| panic!("no next steps: {so}"));
    assert!(next.contains(" demo --keep "), "{next}");
    assert!(!next.contains("demo#"), "a hint at a job of a server that is gone: {next}");
    // the temporary data directory is cleaned up
    assert!(demo_dirs_left(tmp.path()).is_empty());

    // Nor does the log hold a warning, up to the end (where closing the
    // store once sealed packs in a directory already removed): asked for on
    // stderr, warnings and errors only.
    let out = podder(tmp.path()).arg("demo").env("PODDER_LOG", "warn").output().unwrap();
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{se}");
    assert_no_log_lines("the demo's log (PODDER_LOG=warn)", &se);
    assert!(demo_dirs_left(tmp.path()).is_empty());
}

#[test]
fn demo_keep_serves_until_interrupted_and_its_hints_work() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child =
        podder(tmp.path()).args(["demo", "--keep"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = collect(child.stderr.take().unwrap());
    let mut stdout = String::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        stdout.push_str(&line);
        stdout.push('\n');
        if line.starts_with("(the server's log: ") {
            break;
        }
    }
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>().join("\n"));
    assert!(stdout.contains("demo/demo#2  succeeded"), "{stdout}\n{}", stderr.join().unwrap());
    // The printed commands, run as printed (a shell reads the `export`
    // line and each command line; `#` starts a comment there too).
    let next = stdout.split("== next").nth(1).unwrap_or_else(|| panic!("no next steps: {stdout}"));
    let export = next.lines().find(|l| l.trim_start().starts_with("export PODDER_SERVER=")).expect("an export line");
    let commands: Vec<&str> = next.lines().filter(|l| l.starts_with("  ") && !l.contains("export ")).collect();
    assert!(commands.len() >= 2, "{next}");
    let mut outputs = String::new();
    for command in &commands {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{export}\n{command}"))
            .env("HOME", tmp.path())
            .env_remove("PODDER_LOG")
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{command}: {so}\n{se}");
        assert_no_log_lines(command, &format!("{so}{se}"));
        outputs.push_str(&so);
    }
    assert!(outputs.contains("model.json"), "{outputs}");
    assert!(outputs.contains("test_acc"), "{outputs}");
    // The log went to the file it names, without escapes.
    let log_path = stdout.lines().find_map(|l| l.strip_prefix("(the server's log: ")).unwrap().trim_end_matches(')');
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(log.contains("INFO") && log.contains("job leased"), "{log}");
    assert!(!log.contains("\x1b["), "{log}");

    let status = stop(&mut child, "-INT");
    let (rest, se) = (rest.join().unwrap(), stderr.join().unwrap());
    assert!(status.success(), "{status}: {stdout}{rest}\n{se}");
    assert_no_log_lines("the demo's stdout", &format!("{stdout}{rest}"));
    assert_no_log_lines("the demo's stderr", &se);
    assert!(demo_dirs_left(tmp.path()).is_empty(), "the temporary data directory is left");
}

#[test]
fn up_in_the_foreground_prints_only_its_own_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut child = podder(tmp.path())
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = collect(child.stderr.take().unwrap());
    let stdout = collect(child.stdout.take().unwrap());
    // Up once the in-process agent has started (it logs that).
    let log_path = data.join("logs/podder.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log_path).unwrap_or_default().contains("agent started") {
        assert!(Instant::now() < deadline, "no agent started in {}", log_path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = stop(&mut child, "-TERM");
    let (so, se) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert!(status.success(), "{status}: {so}\n{se}");
    let prefixes = ["podder is up at http://127.0.0.1:", "data directory: ", "log: ", "client config"];
    let lines: Vec<&str> = so.lines().collect();
    assert_eq!(lines.len(), prefixes.len(), "{so}");
    for (line, prefix) in lines.iter().zip(prefixes) {
        assert!(line.starts_with(prefix), "{line:?} is not {prefix:?}…\n{so}");
    }
    assert_eq!(lines[2], format!("log: {}", log_path.display()));
    assert_no_log_lines("up's stdout", &so);
    assert!(se.trim().is_empty(), "up wrote on stderr: {se}");
    assert!(!std::fs::read_to_string(&log_path).unwrap().contains("\x1b["));
}
