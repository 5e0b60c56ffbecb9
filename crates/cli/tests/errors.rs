//! Bad input gets a clear error, a non-zero exit code, and changes nothing.

mod common;

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
