//! Requirements environments on the process executor, chosen with `--env`
//! or by podder.yaml's `env:`, and the environment commands.

mod common;

use common::*;

#[test]
fn requirements_env_is_a_cached_venv_and_podder_yaml_picks_the_default() {
    let mut c = Cluster::server_only(10);
    c.add_agent("a1");
    let dir = c.project_dir("venvs");
    std::fs::write(dir.join("reqs.txt"), "# nothing to install: a plain venv\n").unwrap();
    let made = c.ok(&dir, &["env", "create", "plain", "--requirements", "reqs.txt", "--description", "no packages"]);
    assert_eq!(made.trim(), "plain");
    let show = c.ok(&dir, &["env", "show", "plain"]);
    assert!(show.contains("venv") && show.contains("no packages"), "{show}");

    let probe = ["--", "python3", "-c", "import sys; print('prefix=' + sys.prefix)"];
    let prefix = |out: &str| out.lines().find_map(|l| l.strip_prefix("prefix=")).map(str::to_string);
    let mut args = vec!["run", "--env", "plain", "--follow"];
    args.extend(probe);
    let first = prefix(&c.ok(&dir, &args)).unwrap();
    assert!(first.contains("envs"), "the job did not run in the venv: {first}");
    // podder.yaml's env is the default for `run`.
    let yaml = std::fs::read_to_string(dir.join("podder.yaml")).unwrap();
    std::fs::write(dir.join("podder.yaml"), format!("{yaml}env: plain\n")).unwrap();
    let mut args = vec!["run", "--follow"];
    args.extend(probe);
    let out = c.ok(&dir, &args);
    assert_eq!(prefix(&out).unwrap(), first, "the second job did not reuse the cached venv");
    let job = out.lines().next().unwrap();
    assert_eq!(c.job_json(&dir, job)["spec"]["env"], "plain");
    // Another requirement set is another venv.
    let mut args = vec!["run", "--env", "python-3.11", "--follow"];
    args.extend(probe);
    assert_ne!(prefix(&c.ok(&dir, &args)).unwrap(), first);

    // Listing, JSON, deleting.
    let list: serde_json::Value = serde_json::from_str(&c.ok(&dir, &["env", "list", "--json"])).unwrap();
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    for n in ["plain", "python-3.11", "pytorch", "tensorflow", "sklearn"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    c.ok(&dir, &["env", "delete", "plain"]);
    let out = c.podder(&dir, &["run", "--env", "plain", "--", "true"]);
    assert!(!out.status.success() && stderr(&out).contains("plain"), "{}", stderr(&out));
    // Bad input: nothing to build from, an unreadable file.
    let out = c.podder(&dir, &["env", "create", "empty"]);
    assert!(!out.status.success() && stderr(&out).contains("--requirements"), "{}", stderr(&out));
    let out = c.podder(&dir, &["env", "create", "gone", "--requirements", "missing.txt"]);
    assert!(!out.status.success() && stderr(&out).contains("missing.txt"), "{}", stderr(&out));
}
