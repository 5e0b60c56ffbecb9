//! Bad input gets a clear error, a non-zero exit code, and changes nothing.

mod common;

use std::process::Command;

use common::*;

#[test]
fn bad_run_input_is_refused_and_creates_nothing() {
    let c = Cluster::start(30);
    let dir = c.project_dir("strict");
    std::fs::write(dir.join("a.py"), "print(1)\n").unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--"], "command is empty"),
        (&["run", "--data", "mnist#x", "--", "true"], "job number"),
        (&["run", "--data", "../x", "--", "true"], "not a valid dataset"),
        (&["run", "--data", "strict#1:data", "--", "true"], "relative"),
        (&["run", "--data", "strict#1:/code", "--", "true"], "/code"),
        (&["run", "--data", "strict#1:/output/x", "--", "true"], "/output"),
        (&["run", "--data", "a#1:/d", "--data", "b#1:/d", "--", "true"], "overlap"),
        (&["run", "--param", "novalue", "--", "true"], "K=V"),
        (&["run", "--timeout", "soon", "--", "true"], "duration"),
        (&["run", "--max-code-bytes", "4", "--", "true"], "limit"),
        (&["run", "--data", "strict#7", "--", "true"], "strict#7"),
        (&["run", "--project", "nope", "--", "true"], "does not exist"),
    ];
    for (args, needle) in cases {
        let out = c.podder(&dir, args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        assert!(err.to_lowercase().contains(&needle.to_lowercase()), "{args:?}: '{err}' lacks '{needle}'");
        assert!(err.lines().last().unwrap_or("").starts_with("error:"), "{args:?}: {err}");
    }
    let list: serde_json::Value = serde_json::from_str(&c.ok(&dir, &["status", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 0, "a refused run created a job");
    for bad in ["strict#x", "strict#0", "../x#1"] {
        let out = c.podder(&dir, &["status", bad]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("job"), "{}", stderr(&out));
    }
    let out = c.podder(&dir, &["status", "strict#99"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found") || stderr(&out).contains("no job"), "{}", stderr(&out));
}

#[test]
fn wrong_tokens_are_refused() {
    let c = Cluster::start(30);
    let dir = c.tmp.path().to_path_buf();
    let out = c.cmd(&dir).env("PODDER_TOKEN", "pdr_wrong").args(["project", "list"]).output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("token"), "{}", stderr(&out));
    let code = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("{}/api/v1/projects", c.url)])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&code.stdout), "401");
}

/// Outside a project, advice that names `--project` works; a command typed
/// without `--` says where it goes; nothing is created by either.
#[test]
fn outside_a_project_the_advice_works_and_a_command_needs_dashes() {
    let c = Cluster::start(30);
    let dir = c.project_dir("tour");
    std::fs::write(dir.join("train.py"), "print('trained')\n").unwrap();
    let outside = c.tmp.path().join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();

    for args in [&["status"][..], &["logs", "2"], &["stop", "1"], &["restart", "1"], &["output", "1"]] {
        let out = c.podder(&outside, args);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains("podder init NAME") && err.contains("--project"), "{args:?}: {err}");
    }
    // The flag the advice names exists, on every command whose advice names it.
    let listed: serde_json::Value =
        serde_json::from_str(&c.ok(&outside, &["status", "--project", "tour", "--json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 0);

    // `run` without `--`: the message says where the command goes; no job.
    for args in [&["run", "python3", "train.py"][..], &["run", "--follow", "python3", "-c", "print(1)"]] {
        let out = c.podder(&dir, args);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains("after `--`") && err.contains("podder run -- python3"), "{args:?}: {err}");
        assert!(err.lines().last().unwrap_or("").starts_with("error:"), "{err}");
    }
    let out = c.podder(&dir, &["run", "--folow", "--", "true"]);
    assert!(!out.status.success() && stderr(&out).contains("--folow"), "{}", stderr(&out));
    assert_eq!(c.ok(&outside, &["status", "--project", "tour"]).lines().count(), 1, "a refused run made a job");

    let job = c.ok(&dir, &["run", "--follow", "--", "python3 train.py"]);
    assert_eq!(job.lines().next().unwrap(), "alice/tour#1");
    let logs = c.ok(&outside, &["logs", "1", "--project", "tour"]);
    assert!(logs.contains("trained"), "{logs}");
    let one: serde_json::Value =
        serde_json::from_str(&c.ok(&outside, &["status", "1", "--project", "alice/tour", "--json"])).unwrap();
    assert_eq!(one["state"], "succeeded");
    // A short job's runtime is in milliseconds, not `0.0s`.
    let table = c.ok(&dir, &["status"]);
    let row = table.lines().nth(1).unwrap();
    assert!(!row.contains("0.0s") && row.contains("ms"), "{table}");
    assert!(c.ok(&outside, &["output", "1", "--project", "tour"]).contains("PATH"));
    let r = c.ok(&outside, &["restart", "1", "--project", "tour", "-f"]);
    assert!(r.contains("alice/tour#2"), "{r}");
}

/// An unreachable server is named once, with how to start one.
#[test]
fn an_unreachable_server_is_named_once_with_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .current_dir(tmp.path())
        .env("HOME", tmp.path())
        .env("PODDER_SERVER", "http://127.0.0.1:9")
        .env("PODDER_TOKEN", "pdr_x")
        .args(["status", "x#1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.matches("127.0.0.1:9").count(), 1, "{err}");
    assert!(!err.contains("error sending request"), "{err}");
    assert!(err.contains("podder up") && err.contains("PODDER_SERVER"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// `clone` and `output --download` into the project directory, as the tour
/// does, stay out of the next job's code.
#[test]
fn downloads_into_the_project_stay_out_of_its_code() {
    let c = Cluster::start(30);
    let dir = c.project_dir("dl");
    std::fs::write(dir.join("train.py"), "print(1)\n").unwrap();
    c.ok(&dir, &["run", "--follow", "--", "mkdir -p /output/ck && echo w > /output/ck/model.bin"]);
    let out = c.podder(&dir, &["clone", "1", "./snapshot"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("(2 files)"), "{}", stdout(&out));
    assert!(stderr(&out).contains("leaves it out of code uploads"), "{}", stderr(&out));
    let out = c.podder(&dir, &["output", "1", "--download", "out/"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("downloaded 1 file ("), "{}", stdout(&out));
    assert!(stderr(&out).contains("leaves it out of code uploads"), "{}", stderr(&out));
    assert!(dir.join("out/ck/model.bin").is_file() && dir.join("snapshot/train.py").is_file());

    let run = c.podder(&dir, &["run", "--follow", "--", "ls -a"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("code: 2 files"), "{}", stderr(&run));
    let listing = stdout(&run);
    assert!(!listing.contains("snapshot") && !listing.contains("out\n"), "{listing}");
    // Outside a project nothing is written: the copy is exact.
    let away = c.tmp.path().join("away");
    c.ok(&dir, &["clone", "dl#1", away.to_str().unwrap()]);
    assert!(!away.join(".podder-download").exists());
}

/// `data delete NAME` (every version) asks first; without a terminal it
/// needs --yes and deletes nothing.
#[test]
fn deleting_a_whole_dataset_needs_yes() {
    let c = Cluster::server_only(30);
    let src = c.tmp.path().join("ds");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), "1").unwrap();
    let up = c.ok(&src, &["data", "upload", "cifar", "."]);
    assert!(up.contains(": 1 file,") && up.contains("of 1 chunk,"), "{up}");
    std::fs::write(src.join("a.txt"), "2").unwrap();
    c.ok(&src, &["data", "upload", "cifar", "."]);
    let out = c.cmd(&src).args(["data", "delete", "cifar"]).stdin(std::process::Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--yes") && err.contains("2 versions"), "{err}");
    let versions: serde_json::Value =
        serde_json::from_str(&c.ok(&src, &["data", "versions", "cifar", "--json"])).unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 2, "a refused delete deleted something");
    // One version needs no confirmation; the whole dataset takes --yes.
    assert!(c.ok(&src, &["data", "delete", "cifar@1"]).contains("deleted cifar@1 (1 file,"));
    assert!(c.ok(&src, &["data", "delete", "cifar", "--yes"]).contains("deleted dataset cifar"));
    // A download with nothing in the local cache does not claim the cache.
    std::fs::write(src.join("b.txt"), "fresh bytes").unwrap();
    c.ok(&src, &["data", "upload", "fresh", "."]);
    let home = c.tmp.path().join("home-dl");
    let got = c.cmd(&src).env("HOME", &home).args(["data", "download", "fresh", "../fresh-copy"]).output().unwrap();
    let got = stdout(&got);
    assert!(got.contains("2 files") && !got.contains("cache"), "{got}");
}

/// The README's `--setup "pip install -r requirements.txt"` works as
/// written, installing into the job's own venv, not into the system.
#[test]
fn readme_setup_pip_install_works_in_the_jobs_venv() {
    let c = Cluster::start(30);
    let dir = c.project_dir("mnist");
    c.ok(&dir, &["run", "--follow", "--", "mkdir -p /output/checkpoints && echo 0.5 > /output/checkpoints/w"]);
    write_wheel(&dir);
    std::fs::write(dir.join("requirements.txt"), "./hello_podder-0.1-py3-none-any.whl\n").unwrap();
    std::fs::write(
        dir.join("finetune.py"),
        "import hello_podder, os\nprint(hello_podder.hi(), open('/ckpt/w').read().strip())\n",
    )
    .unwrap();
    let out = c.podder(
        &dir,
        &[
            "run",
            "--follow",
            "--data",
            "mnist#1/checkpoints:/ckpt",
            "--setup",
            "pip install -r requirements.txt",
            "--",
            "python3",
            "finetune.py",
        ],
    );
    let (so, se) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{so}\n{se}");
    assert!(so.contains("hi from a wheel 0.5"), "{so}\n{se}");
    assert!(!se.contains("externally-managed-environment"), "{se}");
    // Nothing was installed outside the job.
    let host = Command::new("python3").args(["-c", "import hello_podder"]).output().unwrap();
    assert!(!host.status.success(), "the setup installed into the host's Python");
}

/// A tiny pure-Python wheel, so `pip install` needs no network.
fn write_wheel(dir: &std::path::Path) {
    let script = r#"
import zipfile, hashlib, base64, sys
files = {"hello_podder.py": "def hi():\n    return 'hi from a wheel'\n",
  "hello_podder-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: hello-podder\nVersion: 0.1\n",
  "hello_podder-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: podder-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
rec = []
with zipfile.ZipFile(sys.argv[1] + "/hello_podder-0.1-py3-none-any.whl", "w") as z:
    for p, c in files.items():
        z.writestr(p, c)
        d = base64.urlsafe_b64encode(hashlib.sha256(c.encode()).digest()).rstrip(b"=").decode()
        rec.append(f"{p},sha256={d},{len(c)}")
    rec.append("hello_podder-0.1.dist-info/RECORD,,")
    z.writestr("hello_podder-0.1.dist-info/RECORD", "\n".join(rec) + "\n")
"#;
    let out = Command::new("python3").args(["-c", script, dir.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
