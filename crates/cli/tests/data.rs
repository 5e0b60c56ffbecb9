//! Datasets end to end: the real server and agent processes, the real CLI.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const MIB: usize = 1024 * 1024;

fn random(len: usize, seed: u64) -> Vec<u8> {
    // xorshift: incompressible enough, and reproducible.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn put(root: &Path, rel: &str, data: &[u8], mode: u32) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every entry under `root`: path → (kind and mode, contents or link target).
fn tree(root: &Path) -> BTreeMap<String, (String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let mode = meta.permissions().mode() & 0o777;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&p).unwrap();
                out.insert(rel, ("link".into(), target.to_str().unwrap().as_bytes().to_vec()));
            } else if meta.is_dir() {
                out.insert(rel, (format!("dir {mode:o}"), vec![]));
                walk(root, &p, out);
            } else {
                out.insert(rel, (format!("file {mode:o}"), std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn received(c: &Cluster) -> u64 {
    c.stats()["chunk_bytes_received"].as_u64().unwrap()
}

/// Runs and asserts failure; returns stderr.
fn fails(c: &Cluster, dir: &Path, args: &[&str]) -> String {
    let out = c.podder(dir, args);
    assert!(!out.status.success(), "podder {args:?} succeeded: {}", stdout(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{args:?}: {err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn upload_list_versions_ls_and_download_round_trip() {
    let c = Cluster::start(30);
    let home = c.tmp.path().to_path_buf();
    let src = home.join("cifar-src");
    put(&src, "train/a.bin", &random(3 * MIB + 17, 1), 0o644);
    put(&src, "train/b.txt", b"hello\n", 0o600);
    put(&src, "run.sh", b"#!/bin/sh\necho hi\n", 0o755);
    put(&src, "empty.txt", b"", 0o644);
    put(&src, "données/é.txt", "bonjour à tous".as_bytes(), 0o644);
    put(&src, ".hidden", b"dotfile", 0o644);
    put(&src, ".gitignore", b"*.txt\n", 0o644); // datasets take everything
    std::fs::create_dir_all(src.join("empty-dir/nested-empty")).unwrap();
    symlink("train/b.txt", src.join("latest")).unwrap();

    let out = c.podder(&home, &["data", "upload", "cifar", s(&src), "-m", "first cut"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let so = stdout(&out);
    assert!(so.starts_with("uploaded cifar@1: 7 files, 3.0 MiB (sent "), "{so}");
    // Not a terminal: no progress bar.
    let se = stderr(&out);
    assert!(!se.contains('\r') && !se.contains("eta"), "a progress bar on a pipe: {se}");

    let list = json(&c.ok(&home, &["data", "list", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["name"], "cifar");
    assert_eq!(list[0]["latest"], 1);
    let table = c.ok(&home, &["data", "list"]);
    assert!(table.contains("alice/cifar") && table.contains("@1"), "{table}");

    let versions = json(&c.ok(&home, &["data", "versions", "cifar", "--json"]));
    assert_eq!(versions[0]["version"], 1);
    assert_eq!(versions[0]["files"], 7);
    assert_eq!(versions[0]["message"], "first cut");
    assert!(c.ok(&home, &["data", "versions", "alice/cifar"]).contains("first cut"));

    let all = json(&c.ok(&home, &["data", "ls", "cifar", "--json"]));
    let paths: Vec<&str> = all.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    for want in ["train/a.bin", "empty-dir/nested-empty", "données/é.txt", "latest", ".hidden", ".gitignore"] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
    let under = json(&c.ok(&home, &["data", "ls", "cifar@1", "train", "--json"]));
    let under: Vec<&str> = under.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(under, ["train/a.bin", "train/b.txt"]);
    let one = c.ok(&home, &["data", "ls", "alice/cifar@v1", "run.sh"]);
    assert!(one.contains("755") && one.contains("run.sh"), "{one}");

    // Byte-identical, with modes, empty files and directories, links, names.
    let dl = home.join("dl");
    let got = c.ok(&home, &["data", "download", "cifar@1", s(&dl)]);
    assert!(got.contains("downloaded cifar@1: 7 files"), "{got}");
    assert_eq!(tree(&dl), tree(&src));
    // Again through the local chunk cache: nothing fetched.
    let again = c.ok(&home, &["data", "download", "cifar", s(&home.join("dl2"))]);
    assert!(again.contains("fetched 0 B"), "{again}");
    assert_eq!(tree(&home.join("dl2")), tree(&src));
    let part = home.join("part");
    c.ok(&home, &["data", "download", "cifar", s(&part), "--path", "données"]);
    assert_eq!(std::fs::read_to_string(part.join("é.txt")).unwrap(), "bonjour à tous");
    assert!(fails(&c, &home, &["data", "download", "cifar", s(&dl)]).contains("not an empty directory"));

    // Uploading the same tree again makes no new version.
    let same = c.ok(&home, &["data", "upload", "cifar", s(&src)]);
    assert!(same.contains("cifar@1 is unchanged"), "{same}");
    assert_eq!(json(&c.ok(&home, &["data", "versions", "cifar", "--json"])).as_array().unwrap().len(), 1);
}

#[test]
fn a_new_version_sends_only_the_changed_chunks() {
    let c = Cluster::start(30);
    let home = c.tmp.path().to_path_buf();
    let src = home.join("big");
    for i in 0..4u64 {
        put(&src, &format!("part-{i}.bin"), &random(4 * MIB + i as usize, 10 + i), 0o644);
    }
    // Over HTTP, as from another machine: the bytes the server receives are
    // counted (local ingest has its own test).
    let first = json(&c.ok(&home, &["data", "upload", "big", s(&src), "--over-http", "--json"]));
    let total = first["upload"]["bytes_total"].as_u64().unwrap();
    assert_eq!(first["upload"]["bytes_sent"].as_u64().unwrap(), total);
    let before = received(&c);
    assert_eq!(before, total);

    // Overwrite 100 bytes in the middle of one file: same size.
    let mut data = std::fs::read(src.join("part-2.bin")).unwrap();
    data[2 * MIB..2 * MIB + 100].copy_from_slice(&[7u8; 100]);
    std::fs::write(src.join("part-2.bin"), &data).unwrap();
    let out = c.podder(&home, &["data", "upload", "big", s(&src), "-m", "patched", "--over-http"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    assert!(line.starts_with("uploaded big@2: 4 files, 16.0 MiB (sent "), "{line}");
    let sent = received(&c) - before;
    assert!(sent > 0 && sent <= 2 * MIB as u64, "sent {sent} bytes for a 100-byte change: {line}");
    let versions = json(&c.ok(&home, &["data", "versions", "big", "--json"]));
    assert_eq!(versions.as_array().unwrap().len(), 2);

    // Both versions read back as they were.
    let dl = home.join("v2");
    c.ok(&home, &["data", "download", "big@2", s(&dl)]);
    assert_eq!(std::fs::read(dl.join("part-2.bin")).unwrap(), data);
    let dl1 = home.join("v1");
    c.ok(&home, &["data", "download", "big@1", s(&dl1)]);
    assert_eq!(std::fs::read(dl1.join("part-2.bin")).unwrap(), random(4 * MIB + 2, 12));
}

#[test]
fn large_files_go_to_a_server_on_this_machine_by_descriptor() {
    let c = Cluster::start(30);
    let home = c.tmp.path().to_path_buf();
    let src = home.join("mixed");
    put(&src, "shards/a.bin", &random(5 * MIB + 3, 41), 0o644);
    put(&src, "shards/b.bin", &random(6 * MIB, 42), 0o755);
    put(&src, "small/c.txt", &random(70_000, 43), 0o600);
    put(&src, "small/empty", b"", 0o644);
    std::fs::create_dir_all(src.join("empty-dir")).unwrap();
    let small = 70_000u64;
    // Old enough for the stat cache to trust it at the second upload.
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options().write(true).open(src.join("shards/a.bin")).unwrap().set_modified(an_hour_ago).unwrap();

    let out = json(&c.ok(&home, &["data", "upload", "mixed", s(&src), "--json"]));
    let up = &out["upload"];
    assert_eq!((up["local_files"].as_u64(), up["local_bytes"].as_u64()), (Some(2), Some(11 * MIB as u64 + 3)));
    assert_eq!(up["bytes_sent"].as_u64().unwrap(), 11 * MIB as u64 + 3 + small, "{out}");
    // Only the small file's bytes crossed HTTP; the server read the rest.
    assert_eq!(received(&c), small);
    let dl = home.join("dl");
    c.ok(&home, &["data", "download", "mixed@1", s(&dl)]);
    assert_eq!(tree(&dl), tree(&src), "byte-identical, with modes and empty entries");

    // 100 bytes changed in one large file: the server reads that file
    // again (not the other), and stores only the chunks around the change.
    let mut data = std::fs::read(src.join("shards/b.bin")).unwrap();
    data[3 * MIB..3 * MIB + 100].copy_from_slice(&[9u8; 100]);
    std::fs::write(src.join("shards/b.bin"), &data).unwrap();
    let line = c.ok(&home, &["data", "upload", "mixed", s(&src)]);
    assert!(line.contains("the server read 1 large file (6.0 MiB) from this machine itself"), "{line}");
    let second = json(&c.ok(&home, &["data", "versions", "mixed", "--json"]));
    assert_eq!(second.as_array().unwrap().len(), 2);
    let dl2 = home.join("dl2");
    c.ok(&home, &["data", "download", "mixed@2", s(&dl2)]);
    assert_eq!(std::fs::read(dl2.join("shards/b.bin")).unwrap(), data);
    assert_eq!(received(&c), small, "nothing more over HTTP");

    // --over-http sends every byte, as from another machine.
    let out = json(&c.ok(&home, &["data", "upload", "other", s(&src), "--over-http", "--rehash", "--json"]));
    assert_eq!(out["upload"]["local_files"], 0);
    assert_eq!(out["upload"]["bytes_sent"], 0, "the server holds every chunk already: {out}");

    // A server started with --no-local-ingest takes every byte over HTTP.
    let c2 = Cluster::server_only_with(30, &["--no-local-ingest"]);
    let out = json(&c2.ok(&home, &["data", "upload", "mixed", s(&src), "--rehash", "--json"]));
    assert_eq!(out["upload"]["local_files"], 0);
    assert_eq!(received(&c2), 11 * MIB as u64 + 3 + small);
}

#[test]
fn a_killed_upload_resumes_and_sends_only_the_rest() {
    killed_upload_resumes(true);
}

#[test]
fn a_killed_local_ingest_resumes_and_stores_only_the_rest() {
    killed_upload_resumes(false);
}

fn chunks_stored(c: &Cluster) -> u64 {
    c.stats()["chunks_stored"].as_u64().unwrap()
}

/// Kills an upload of 300 MiB part-way and runs it again: over HTTP (the
/// server's received bytes are counted) or handed to the server on this
/// machine by descriptor (its stored chunks are counted).
fn killed_upload_resumes(over_http: bool) {
    let c = Cluster::start(30);
    let home = c.tmp.path().to_path_buf();
    let src = home.join("huge");
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for i in 0..30u64 {
        let rel = format!("d{}/f{i}.bin", i % 3);
        put(&src, &rel, &random(10 * MIB, 100 + i), 0o644);
        // Old enough for the stat cache to trust: the second run reads
        // nothing to hash, and must still find what the server lacks.
        std::fs::File::options().write(true).open(src.join(&rel)).unwrap().set_modified(an_hour_ago).unwrap();
    }
    let total = 300 * MIB as u64;
    let mut args = vec!["data", "upload", "huge", s(&src)];
    if over_http {
        args.push("--over-http");
    }
    // Bytes received over HTTP, or chunks stored from files read locally.
    let progress = |c: &Cluster| if over_http { received(c) } else { chunks_stored(c) };
    let started = if over_http { 20 * MIB as u64 } else { 60 };

    let mut child = c.cmd(&home).args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while progress(&c) < started {
        assert!(child.try_wait().unwrap().is_none(), "the upload ended before it could be killed");
        assert!(Instant::now() < deadline, "the upload never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Let the server finish what had reached it.
    let mut first = progress(&c);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = progress(&c);
        if now == first {
            break;
        }
        first = now;
    }
    // No version (nor dataset) exists yet.
    let listed = json(&c.ok(&home, &["data", "list", "--json"]));
    assert!(listed.as_array().unwrap().iter().all(|d| d["latest"].is_null()), "{listed}");

    args.push("--json");
    let again = json(&c.ok(&home, &args));
    let up = &again["upload"];
    let second = up["bytes_sent"].as_u64().unwrap();
    assert!(second < total, "the second run sent everything again");
    if over_http {
        assert!(first < total, "the first run sent everything ({first} bytes) before it was killed");
        assert_eq!(received(&c), first + second);
        assert!(first + second >= total, "{first} + {second} < {total}");
        assert!(first + second <= total + 2 * MIB as u64, "{first} + {second} sent for {total}");
    } else {
        // Every chunk is stored exactly once over both runs.
        let (distinct, sent) = (up["chunks_total"].as_u64().unwrap(), up["chunks_sent"].as_u64().unwrap());
        assert!(first < distinct, "the first run stored everything ({first} chunks) before it was killed");
        assert_eq!(first + sent, distinct, "{first} stored, then {sent} of {distinct}: {again}");
        assert_eq!(chunks_stored(&c), distinct);
    }
    // Whether the killed run got to save its stat cache depends on how far
    // its scan went; either way every file is accounted for once.
    let scanned = again["scan"]["cached_files"].as_u64().unwrap() + again["scan"]["hashed_files"].as_u64().unwrap();
    assert_eq!(scanned, 30, "{again}");
    assert_eq!(again["version"]["version"], 1);
    assert_eq!(again["version"]["bytes"], total);

    let dl = home.join("dl");
    c.ok(&home, &["data", "download", "huge", s(&dl)]);
    assert_eq!(std::fs::read(dl.join("d1/f7.bin")).unwrap(), random(10 * MIB, 107));
}

#[test]
fn jobs_mount_datasets_read_only_at_chosen_paths() {
    let c = Cluster::start(30);
    let home = c.tmp.path().to_path_buf();
    let a = home.join("a");
    put(&a, "x.txt", b"from-a", 0o644);
    c.ok(&home, &["data", "upload", "a", s(&a)]);
    let b = home.join("b");
    put(&b, "sub/y.txt", b"from-b-1", 0o644);
    c.ok(&home, &["data", "upload", "b", s(&b)]);
    put(&b, "sub/y.txt", b"from-b-2", 0o644);
    c.ok(&home, &["data", "upload", "b", s(&b)]);

    let dir = c.project_dir("mnt");
    let script = "cat /x/x.txt /y/sub/y.txt /data/b/sub/y.txt; echo; \
        if touch /x/new 2>/dev/null; then echo WROTE-X; fi; \
        if touch /y/sub/new 2>/dev/null; then echo WROTE-Y; fi; \
        if rm /y/sub/y.txt 2>/dev/null; then echo REMOVED; fi; echo done";
    let out = c.ok(
        &dir,
        &["run", "--follow", "--data", "a:/x", "--data", "b@1:/y", "--data", "b", "--", &format!("sh -c '{script}'")],
    );
    assert!(out.contains("from-afrom-b-1from-b-2"), "{out}");
    assert!(out.contains("done"), "{out}");
    assert!(!out.contains("WROTE") && !out.contains("REMOVED"), "a job wrote into a dataset: {out}");
    let j = c.job_json(&dir, "mnt#1");
    let inputs = j["spec"]["inputs"].as_array().unwrap();
    assert_eq!(inputs[0]["source"], "alice/a@1");
    assert_eq!(inputs[1]["source"], "alice/b@1");
    assert_eq!(inputs[2]["source"], "alice/b@2");
    assert_eq!(inputs[2]["mount"], "/data/b");
    // The dataset's own bytes are untouched.
    let dl = home.join("dl");
    c.ok(&home, &["data", "download", "b@1", s(&dl)]);
    assert_eq!(std::fs::read(dl.join("sub/y.txt")).unwrap(), b"from-b-1");
}

#[test]
fn a_job_output_becomes_a_version() {
    let c = Cluster::start(30);
    let home = c.tmp.path().to_path_buf();
    let dir = c.project_dir("make");
    c.ok(&dir, &["run", "--follow", "--", "sh -c 'mkdir -p /output/m && echo weights > /output/m/w.txt'"]);
    let out = c.ok(&dir, &["data", "from-output", "make#1", "models", "-m", "trained"]);
    assert!(out.contains("created models@1 from alice/make#1: 1 file,"), "{out}");
    let v = json(&c.ok(&home, &["data", "versions", "models", "--json"]));
    assert_eq!(v[0]["source"], "alice/make#1");
    assert_eq!(v[0]["message"], "trained");
    let dl = home.join("dl");
    c.ok(&home, &["data", "download", "models", s(&dl)]);
    assert_eq!(std::fs::read_to_string(dl.join("m/w.txt")).unwrap(), "weights\n");
    // Into an existing dataset, as its next version.
    let out = c.ok(&dir, &["data", "from-output", "alice/make#1", "models"]);
    assert!(out.contains("created models@2"), "{out}");
    let err = fails(&c, &dir, &["data", "from-output", "make#9", "models"]);
    assert!(err.contains("make#9") || err.contains("not found"), "{err}");
    assert_eq!(json(&c.ok(&home, &["data", "versions", "models", "--json"])).as_array().unwrap().len(), 2);
}

#[test]
fn deleting_what_a_queued_job_mounts_is_refused() {
    // No agent: the job stays queued.
    let c = Cluster::server_only(30);
    let home = c.tmp.path().to_path_buf();
    let src = home.join("src");
    put(&src, "f.txt", b"one", 0o644);
    c.ok(&home, &["data", "upload", "pinned", s(&src)]);
    put(&src, "f.txt", b"two", 0o644);
    c.ok(&home, &["data", "upload", "pinned", s(&src)]);
    let dir = c.project_dir("q");
    let job = c.ok(&dir, &["run", "--data", "pinned@1", "--", "true"]).trim().to_string();
    assert_eq!(job, "alice/q#1");

    let err = fails(&c, &home, &["data", "delete", "pinned@1"]);
    assert!(err.contains("q#1"), "the refusal does not name the job: {err}");
    let err = fails(&c, &home, &["data", "delete", "pinned", "--yes"]);
    assert!(err.contains("q#1"), "{err}");
    // The version it does not mount can go.
    let out = c.ok(&home, &["data", "delete", "pinned@2"]);
    assert!(out.contains("deleted pinned@2"), "{out}");

    c.ok(&dir, &["stop", "q#1"]);
    c.wait_job(&dir, "q#1", 30, |j| j["state"] == "stopped");
    let out = c.ok(&home, &["data", "delete", "pinned", "--yes"]);
    assert!(out.contains("deleted dataset pinned and its 1 version (@1"), "{out}");
    assert!(fails(&c, &home, &["data", "versions", "pinned"]).contains("no dataset pinned"));
}

#[test]
fn gc_frees_exactly_the_chunks_only_a_deleted_version_held() {
    let c = Cluster::server_only_with(30, &["--gc-grace", "1"]);
    let home = c.tmp.path().to_path_buf();
    let src = home.join("src");
    put(&src, "shared.bin", &random(2 * MIB, 1), 0o644);
    put(&src, "only-v1.bin", &random(3 * MIB, 2), 0o644);
    c.ok(&home, &["data", "upload", "g", s(&src)]);
    std::fs::remove_file(src.join("only-v1.bin")).unwrap();
    put(&src, "only-v2.bin", &random(MIB, 3), 0o644);
    c.ok(&home, &["data", "upload", "g", s(&src)]);

    let v1 = json(&c.ok(&home, &["data", "ls", "g@1", "only-v1.bin", "--json"]));
    let mut unique: Vec<String> =
        v1[0]["chunks"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    unique.sort();
    assert!(unique.len() >= 3, "{unique:?}");

    std::thread::sleep(Duration::from_millis(1500)); // past the grace window
    let nothing = json(&c.ok(&home, &["admin", "gc", "--dry-run", "--json"]));
    assert_eq!(nothing["chunks_freed"], 0, "{nothing}");

    c.ok(&home, &["data", "delete", "g@1"]);
    let dry = json(&c.ok(&home, &["admin", "gc", "--dry-run", "--json"]));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["chunks_freed"].as_u64().unwrap(), unique.len() as u64, "{dry}");
    assert_eq!(dry["manifests_freed"], 1, "{dry}");
    let real = json(&c.ok(&home, &["admin", "gc", "--json"]));
    assert_eq!(real["chunks_freed"], dry["chunks_freed"]);
    let mut freed: Vec<String> =
        real["freed"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    freed.sort();
    assert_eq!(freed, unique);
    let text = c.ok(&home, &["admin", "gc"]);
    assert!(text.starts_with("freed 0 chunks (0 B) and 0 manifests"), "{text}");

    // What is left is whole.
    let dl = home.join("dl");
    c.ok(&home, &["data", "download", "g@2", s(&dl)]);
    assert_eq!(tree(&dl), tree(&src));
}

#[test]
fn bad_input_is_refused_and_creates_nothing() {
    let c = Cluster::start(30);
    let home = c.tmp.path().to_path_buf();
    let good = home.join("good");
    put(&good, "f.txt", b"x", 0o644);
    let looped = home.join("looped");
    put(&looped, "ok.txt", b"fine", 0o644);
    symlink("loop2", looped.join("loop1")).unwrap();
    symlink("loop1", looped.join("loop2")).unwrap();
    symlink("/etc/passwd", looped.join("abs")).unwrap();

    let err = fails(&c, &home, &["data", "upload", "looped", s(&looped)]);
    for want in ["3 paths", "loop1", "loop2", "abs", "fix or remove them"] {
        assert!(err.contains(want), "'{want}' missing from: {err}");
    }
    assert!(!err.contains("ok.txt") && !err.contains(".podderignore"), "{err}");

    let (missing, d) = (home.join("missing"), home.join("d"));
    let cases: &[(&[&str], &str)] = &[
        (&["data", "create", "Bad_Name"], "bad_name"),
        (&["data", "upload", "no/such/thing", s(&good)], "owner/"),
        (&["data", "upload", "ok@2", s(&good)], "names a version"),
        (&["data", "upload", "ok", s(&missing)], "not a directory"),
        (&["data", "versions", "nope"], "no dataset nope"),
        (&["data", "ls", "nope@3"], "no dataset nope"),
        (&["data", "ls", "nope@x"], "bad version"),
        (&["data", "ls", "mnist#1"], "job output, not a dataset"),
        (&["data", "download", "nope", s(&d)], "no dataset nope"),
        (&["data", "delete", "nope@0"], "bad version"),
        (&["data", "delete", "bob/nope"], "no dataset bob/nope"),
        (&["data", "from-output", "x#1", "Bad!"], "bad!"),
    ];
    for (args, needle) in cases {
        let err = fails(&c, &home, args);
        assert!(err.to_lowercase().contains(needle), "{args:?}: '{err}' lacks '{needle}'");
    }
    let listed = json(&c.ok(&home, &["data", "list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 0, "a refused command created a dataset: {listed}");

    // A real dataset, and what does not exist in it.
    c.ok(&home, &["data", "upload", "ok", s(&good)]);
    assert!(fails(&c, &home, &["data", "ls", "ok@7"]).contains("no version 7"));
    assert!(fails(&c, &home, &["data", "delete", "ok@7"]).contains("no version 7"));
    assert!(fails(&c, &home, &["data", "ls", "ok", "nowhere"]).contains("no 'nowhere'"));
    assert!(fails(&c, &home, &["data", "create", "ok"]).contains("already exists"));
    let dir = c.project_dir("refs");
    let err = fails(&c, &dir, &["run", "--data", "ok@9", "--", "true"]);
    assert!(err.contains("ok") && err.contains('9'), "{err}");
}
