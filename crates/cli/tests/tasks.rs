//! Tasks end to end on the real Docker engine: `task new` → `task build` →
//! `task deploy` → `task run`, from a directory and from a Git repository,
//! plain and obfuscated.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Agent names are unique per test (an agent removes its name's containers).
fn docker_cluster(agent: &str) -> Cluster {
    let mut c = Cluster::server_only(10);
    c.local_python_env();
    c.add_agent_with(agent, &["--executor", "docker", "--slots", "2", "--default-image", PYTHON_IMAGE]);
    c
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn dataset(c: &Cluster) {
    let data = c.tmp.path().join("in");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.bin"), vec![7u8; 1000]).unwrap();
    std::fs::write(data.join("b.bin"), vec![8u8; 24]).unwrap();
    c.ok(&data, &["data", "upload", "inputs", "."]);
}

/// Runs the deployed task `train` and returns its result.json.
fn run_train(c: &Cluster, dir: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["task", "run", "train", "--follow"];
    args.extend(extra);
    let out = c.ok(dir, &args);
    let job = out.lines().next().unwrap().trim().to_string();
    let dl = c.tmp.path().join(format!("out-{}", job.replace(['/', '#'], "-")));
    c.ok(dir, &["output", &job, "--download", dl.to_str().unwrap()]);
    serde_json::from_str(&std::fs::read_to_string(dl.join("result.json")).unwrap()).unwrap()
}

fn image_has_py(image: &str) -> String {
    docker(&["run", "--rm", "--entrypoint", "", image, "find", "/task", "-name", "*.py"])
}

#[test]
fn task_from_a_directory_new_build_deploy_run() {
    let c = docker_cluster("t-dir");
    dataset(&c);
    let proj = c.project_dir("tasks");
    c.ok(&proj, &["task", "new", "train"]);
    let task_dir: PathBuf = proj.join("train");
    for f in ["task.yaml", "main.py", "requirements.txt", "Dockerfile", "sample/input.txt"] {
        assert!(task_dir.join(f).is_file(), "task new made no {f}");
    }
    let out = c.podder(&proj, &["task", "build", "train", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let build: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(build["state"], "succeeded", "{build}");
    let image = build["build_result"]["image"].as_str().unwrap().to_string();
    assert!(image_has_py(&image).contains("/task/main.py"));

    c.ok(&proj, &["task", "deploy"]);
    let shown: serde_json::Value = serde_json::from_str(&c.ok(&proj, &["task", "show", "train", "--json"])).unwrap();
    assert_eq!(shown["version"], 1);
    assert!(shown["commit"].is_null());
    let listed = c.ok(&proj, &["task", "list"]);
    assert!(listed.contains("train") && listed.contains("v1"), "{listed}");

    let r = run_train(&c, &proj, &["--param", "epochs=2", "--param", "label=dir", "--data", "input=inputs"]);
    assert_eq!((r["epochs"].as_i64(), r["label"].as_str()), (Some(2), Some("dir")), "{r}");
    assert_eq!((r["input_files"].as_i64(), r["input_bytes"].as_i64()), (Some(2), Some(1024)), "{r}");
    assert_eq!(r["has_docstrings"], true);

    // Wrong parameters are refused with every problem named; no job is made.
    let out = c.podder(&proj, &["task", "run", "train", "--param", "epochs=many", "--param", "nope=1"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("'many' is not an int") && err.contains("nope"), "{err}");
}

#[test]
fn task_from_git_records_the_commit_and_obfuscated_build_ships_no_source() {
    let c = docker_cluster("t-git");
    let proj = c.project_dir("gittasks");
    let repo = c.tmp.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    c.ok(&proj, &["task", "new", "train", "--dir", repo_s]);
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "task"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    let url = format!("file://{repo_s}#main");

    let out = c.podder(&proj, &["task", "build", "--git", &url, "--obfuscate", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let build: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let image = build["build_result"]["image"].as_str().unwrap().to_string();
    assert_eq!(build["build_result"]["build"]["git"]["commit"], commit.as_str());
    assert_eq!(image_has_py(&image), "", "the obfuscated image holds .py sources");

    c.ok(&proj, &["task", "deploy"]);
    let shown: serde_json::Value = serde_json::from_str(&c.ok(&proj, &["task", "show", "train", "--json"])).unwrap();
    assert_eq!(shown["commit"], commit.as_str());
    assert_eq!(shown["obfuscated"], true);
    let r = run_train(&c, &proj, &["--param", "epochs=1"]);
    assert_eq!(r["epochs"], 1);
    assert_eq!(r["has_docstrings"], false, "docstrings were not stripped: {r}");
}

#[test]
fn bad_task_yaml_is_refused_with_file_and_line_and_nothing_is_built() {
    let c = docker_cluster("t-bad");
    let proj = c.project_dir("badtask");
    c.ok(&proj, &["task", "new", "train"]);
    let yaml = proj.join("train/task.yaml");
    let text = std::fs::read_to_string(&yaml).unwrap().replace("type: int", "type: integer");
    std::fs::write(&yaml, text).unwrap();
    let out = c.podder(&proj, &["task", "build", "train"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("task.yaml:") && err.contains("integer"), "{err}");
    let jobs: serde_json::Value = serde_json::from_str(&c.ok(&proj, &["status", "--json"])).unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 0);
    // Deploying with no successful build says what to do.
    let out = c.podder(&proj, &["task", "deploy"]);
    assert!(!out.status.success() && stderr(&out).contains("build"), "{}", stderr(&out));
}
