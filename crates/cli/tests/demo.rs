//! `podder demo` on a fresh home directory: trains, evaluates, summarizes.

mod common;

#[test]
fn demo_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("demo")
        .env("HOME", tmp.path())
        .env("TMPDIR", tmp.path())
        .env_remove("PODDER_SERVER")
        .env_remove("PODDER_TOKEN")
        .output()
        .unwrap();
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{so}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(so.contains("\"epoch\": 20"), "{so}");
    assert!(so.contains("test_acc"), "{so}");
    assert!(so.contains("demo/demo#1  succeeded"), "{so}");
    assert!(so.contains("demo/demo#2  succeeded"), "{so}");
    // the temporary data directory is cleaned up
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("podder-demo"))
        .collect();
    assert!(left.is_empty());
}
