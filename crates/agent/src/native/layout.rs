//! The job's filesystem, as a list of steps for the sandbox's init: which
//! host directories are bound where, read-only or not, what is hidden, and
//! the fresh `/proc`, `/dev` and `/tmp`. Computed by the agent before the
//! clone (it reads the host: symlinks, canonical paths), so the init only
//! carries it out.
//!
//! The job sees the system directories read-only, `/code` and `/output`
//! writable, each input read-only at its mount path, and nothing else of
//! the host: no `/home`, `/root`, `/var`, `/srv`, `/mnt`, `/media` or host
//! `/tmp`, and paths to hide (the server's data directory, the agent's work
//! directory, the user's home) covered wherever they lie inside what is
//! shown.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use crate::executor::JobPlan;

/// System directories shown read-only (a host symlink such as
/// `/bin -> usr/bin` is recreated as a symlink).
const SYSTEM_DIRS: [&str; 8] = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc", "/opt"];
/// Extra read-only paths: the resolver's files, which `/etc/resolv.conf`
/// points into on systemd hosts (without them DNS fails in the job).
const EXTRA_RO: [&str; 1] = ["/run/systemd/resolve"];
/// Device nodes bound from the host's `/dev`.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Files under `/etc` that hold secrets, covered even though the job's
/// user could not read them anyway (defence in depth).
pub(crate) const SECRETS: [&str; 5] =
    ["/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/security/opasswd"];

/// One step, with paths inside the sandbox (relative to its root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Mkdir(PathBuf),
    Touch(PathBuf),
    Bind { src: PathBuf, dst: PathBuf, ro: bool, dev: bool },
    Tmpfs { dst: PathBuf, mode: u32 },
    Proc(PathBuf),
    Symlink { target: PathBuf, link: PathBuf },
}

#[derive(Default)]
struct Builder {
    steps: Vec<Step>,
    made: BTreeSet<PathBuf>,
    /// (host directory, canonical) → where it appears, to place hides.
    binds: Vec<(PathBuf, PathBuf)>,
}

impl Builder {
    /// Every directory from the root down to `dst`.
    fn mkdirs(&mut self, dst: &Path) {
        let mut at = PathBuf::from("/");
        for c in dst.components() {
            if let Component::Normal(n) = c {
                at.push(n);
                if self.made.insert(at.clone()) {
                    self.steps.push(Step::Mkdir(at.clone()));
                }
            }
        }
    }

    fn bind_dir(&mut self, src: &Path, dst: &Path, ro: bool) {
        self.mkdirs(dst);
        self.steps.push(Step::Bind { src: src.into(), dst: dst.into(), ro, dev: false });
        if let Ok(c) = std::fs::canonicalize(src) {
            self.binds.push((c, dst.into()));
        }
    }

    /// Covers host path `h` wherever it shows: a directory with an empty
    /// tmpfs, a file with `/dev/null`.
    fn hide(&mut self, h: &Path, hidden: &mut BTreeSet<PathBuf>) {
        let Ok(host) = std::fs::canonicalize(h) else { return };
        let is_dir = host.is_dir();
        let places: Vec<PathBuf> =
            self.binds.iter().filter_map(|(src, dst)| host.strip_prefix(src).ok().map(|rest| dst.join(rest))).collect();
        for inside in places {
            if !hidden.insert(inside.clone()) {
                continue;
            }
            if is_dir {
                self.steps.push(Step::Tmpfs { dst: inside, mode: 0o755 });
            } else {
                self.steps.push(Step::Bind { src: "/dev/null".into(), dst: inside, ro: true, dev: true });
            }
        }
    }
}

/// The steps that build `plan`'s filesystem.
pub(crate) fn steps(plan: &JobPlan) -> Vec<Step> {
    let mut b = Builder::default();
    for d in SYSTEM_DIRS.iter().chain(EXTRA_RO.iter()) {
        let p = Path::new(d);
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(p) {
                    if let Some(parent) = p.parent() {
                        b.mkdirs(parent);
                    }
                    b.steps.push(Step::Symlink { target, link: p.into() });
                }
            }
            Ok(m) if m.is_dir() => b.bind_dir(p, p, true),
            _ => {}
        }
    }
    b.mkdirs(Path::new("/proc"));
    b.steps.push(Step::Proc("/proc".into()));
    b.mkdirs(Path::new("/dev"));
    b.steps.push(Step::Tmpfs { dst: "/dev".into(), mode: 0o755 });
    for d in DEVICES {
        let host = Path::new("/dev").join(d);
        if host.exists() {
            b.steps.push(Step::Touch(host.clone()));
            b.steps.push(Step::Bind { src: host.clone(), dst: host, ro: false, dev: true });
        }
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        b.steps.push(Step::Symlink { target: target.into(), link: link.into() });
    }
    b.mkdirs(Path::new("/dev/shm"));
    b.steps.push(Step::Tmpfs { dst: "/dev/shm".into(), mode: 0o1777 });
    b.mkdirs(Path::new("/tmp"));
    b.steps.push(Step::Tmpfs { dst: "/tmp".into(), mode: 0o1777 });
    b.bind_dir(&absolute(&plan.code_dir), Path::new("/code"), false);
    b.bind_dir(&absolute(&plan.output_dir), Path::new("/output"), false);
    // Shallower mounts first, so that a nested input lands on its parent.
    let mut inputs: Vec<_> = plan.inputs.iter().collect();
    inputs.sort_by_key(|(_, m)| m.as_str().matches('/').count());
    for (tree, mount) in inputs {
        b.bind_dir(&absolute(tree), Path::new(mount.as_str()), true);
    }
    let mut hidden = BTreeSet::new();
    for h in plan.hide.iter().map(PathBuf::as_path).chain(SECRETS.iter().map(Path::new)) {
        b.hide(h, &mut hidden);
    }
    // After the hiding, so that these show even inside a hidden directory.
    for d in &plan.extra_ro {
        let d = absolute(d);
        b.bind_dir(&d, &d, true);
    }
    b.steps
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Sandbox;

    fn plan(dir: &Path) -> JobPlan {
        JobPlan::new("true".into(), dir.join("code"), dir.join("output"), Sandbox::None)
    }

    #[test]
    fn code_output_and_inputs_are_bound_where_the_contract_says() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        let mut p = plan(t.path());
        p.inputs = vec![(tree.clone(), "/data/x/y".parse().unwrap()), (tree.clone(), "/data/x".parse().unwrap())];
        let s = steps(&p);
        let bind =
            |dst: &str| s.iter().position(|st| matches!(st, Step::Bind { dst: d, .. } if d == Path::new(dst))).unwrap();
        assert!(s.contains(&Step::Bind { src: t.path().join("code"), dst: "/code".into(), ro: false, dev: false }));
        assert!(s.contains(&Step::Bind { src: tree.clone(), dst: "/data/x".into(), ro: true, dev: false }));
        assert!(bind("/data/x") < bind("/data/x/y"), "the parent first");
        let mkdir = s.iter().position(|st| *st == Step::Mkdir("/data/x/y".into())).unwrap();
        assert!(mkdir < bind("/data/x/y"));
        for gone in ["/home", "/root", "/var", "/srv", "/mnt"] {
            assert!(!s.iter().any(|st| matches!(st, Step::Bind { dst, .. } if dst == Path::new(gone))), "{gone}");
        }
        assert!(s.contains(&Step::Tmpfs { dst: "/tmp".into(), mode: 0o1777 }));
    }

    #[test]
    fn hidden_paths_are_covered_where_a_bind_shows_them() {
        let opt = Path::new("/opt");
        std::fs::create_dir_all(opt).unwrap();
        let secret = tempfile::tempdir_in(opt).unwrap();
        std::fs::write(secret.path().join("key"), "k").unwrap();
        let t = tempfile::tempdir().unwrap();
        let mut p = plan(t.path());
        p.hide = vec![secret.path().to_path_buf(), secret.path().join("key"), t.path().join("missing")];
        let s = steps(&p);
        let canon = std::fs::canonicalize(secret.path()).unwrap();
        let inside = Path::new("/opt").join(canon.strip_prefix(std::fs::canonicalize(opt).unwrap()).unwrap());
        assert!(s.contains(&Step::Tmpfs { dst: inside.clone(), mode: 0o755 }), "{s:#?}");
        assert!(s.contains(&Step::Bind { src: "/dev/null".into(), dst: inside.join("key"), ro: true, dev: true }));
    }
}
